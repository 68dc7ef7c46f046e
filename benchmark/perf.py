"""GPU performance, measured side by side in one run on whatever device is there (issue 9).

Every figure is a ratio against a baseline measured in the same process on the same device:
- training step: M3-Net's step vs the trunk-only step (images/s, same batch, same precision),
  at the paper's batch (16 triplets = 48 images) and at 192 images;
- embedding extraction (every attribute, up to 16 classes per (image, attribute)) vs the
  trunk-only forward pass;
- the training data loader's images/s (JPEG decode + resize + mirror + collate + copy to the
  device, configured workers) vs the training step's;
- the metrics at DeepFashion's evaluation size (5,525 x 22,100, 1024-d);
- optionally `torch.compile` on the step.

Timing rules (PERFORMANCE.md): warm up, synchronize before reading clocks, median of repeats,
never time on zeros. Only torch, torchvision, numpy and OpenCV are imported: the GPU machine has
no polars or pandera.

    python -m benchmark.perf --size full --out reports/perf.json      # GPU
    python -m benchmark.perf --size tiny --out /tmp/perf.json         # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from datasets.atomic import write_text
from datasets.taxonomy import class_offsets

# Sizes: `full` is the paper's setting (ResNet-50 to layer3, 224 px, DeepFashion's 5 attributes
# with 156-230 classes); `tiny` only proves that the code path runs (CPU tests).
SIZES = {
    "full": dict(backbone="resnet50_layer3", image_size=224, classes=[156, 218, 180, 216, 230],
                 batches=(48, 192), extract_batch=256, loader_images=12288, loader_side=300,
                 metrics=(5525, 22100, 1024), repeats=10, warmup=5),
    "tiny": dict(backbone="resnet18_layer3", image_size=64, classes=[5, 4, 6],
                 batches=(6,), extract_batch=8, loader_images=32, loader_side=96,
                 metrics=(64, 256, 32), repeats=2, warmup=1),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device, repeats, warmup) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _images(n, size, device, channels_last):
    g = torch.Generator(device="cpu").manual_seed(n)
    x = torch.randn(n, 3, size, size, generator=g).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def synthetic_batch(n_images: int, classes: list[int], size: int, device, channels_last: bool) -> dict:
    """A training batch in model/base.py's layout: n_images // 3 triplets, random but valid labels."""
    b = n_images // 3
    g = torch.Generator(device="cpu").manual_seed(b)
    n_attr = len(classes)
    attribute = torch.randint(0, n_attr, (b,), generator=g)
    cls = torch.tensor(classes)
    class_id = (torch.rand(b, generator=g) * cls[attribute]).long()
    offsets = torch.from_numpy(class_offsets(classes)[:-1])
    targets = torch.zeros(3 * b, sum(classes))
    rows = torch.arange(b)
    targets[rows, offsets[attribute] + class_id] = 1
    targets[rows + b, offsets[attribute] + class_id] = 1
    neg_class = (class_id + 1) % cls[attribute]
    targets[rows + 2 * b, offsets[attribute] + neg_class] = 1
    return {
        "images": _images(3 * b, size, device, channels_last),
        "attribute": attribute.to(device),
        "class_id": class_id.to(device),
        "targets": targets.to(device),
        "target_mask": torch.ones(3 * b, n_attr, dtype=torch.bool, device=device),
        "index": torch.arange(3 * b, device=device),
    }


def build_m3net(cfg: dict, device, variant: str = "m3net"):
    from model import build_model

    # pyyaml may be missing on a bare GPU machine, or perf run outside a checkout: then the model's
    # defaults, said on stderr. A params.yaml that is there but invalid stops perf (ParamsError), as it
    # stops every stage: a measurement must not silently use other values than the file says.
    try:
        from benchmark.params import load_params
    except ImportError as e:
        print(f"perf: {e}; measuring {variant} with the model's default values", file=sys.stderr)
        hp = {}
    else:
        if Path("params.yaml").is_file():
            hp = dict(load_params()["models"][variant])
        else:
            print(f"perf: no params.yaml in {Path.cwd()}; measuring {variant} with the model's default values",
                  file=sys.stderr)
            hp = {}
    # the paper profile's values where params.yaml gives one per profile: perf measures the paper's heads
    from datasets.params_schema import resolve, split_model_params

    hp = {k: resolve(v, profile="paper", profiles=("paper", "twin"), where=f"models.{variant}.{k}") for k, v in hp.items()}
    hp["w_p"] = 1.0
    model_kw, _ = split_model_params(hp)  # lr and its schedule are perf's own
    model = build_model(variant, classes_per_attribute=cfg["classes"], backbone=cfg["backbone"],
                        pretrained=False, **model_kw)
    return model.to(device)


def measure_training(cfg, device, channels_last=True, compile_=False) -> dict:
    """Trunk-only vs M3-Net training steps; ``compile_``: train.compile's setting for both."""
    from model.backbone import build_trunk
    from model.base import compiled

    out = {}
    model = build_m3net(cfg, device)
    trunk = build_trunk(cfg["backbone"], pretrained=False).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        trunk = trunk.to(memory_format=torch.channels_last)
    fused = device.type == "cuda"
    opt_m = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    opt_t = torch.optim.Adam(trunk.parameters(), lr=1e-4, fused=fused)
    step_model = compiled(model, compile_)
    step_trunk = compiled(trunk, compile_)
    for n in cfg["batches"]:
        batch = synthetic_batch(n, cfg["classes"], cfg["image_size"], device, channels_last)
        images = batch["images"]

        def trunk_step():
            opt_t.zero_grad(set_to_none=True)
            with _autocast(device):
                loss = step_trunk(images).float().pow(2).mean()
            loss.backward()
            opt_t.step()

        def model_step():
            opt_m.zero_grad(set_to_none=True)
            with _autocast(device):
                loss = step_model(batch)["loss"]
            loss.backward()
            opt_m.step()

        with _autocast(device):
            first = model(batch)["loss"]
        if not torch.isfinite(first):
            raise RuntimeError(f"M3-Net's loss is not finite on the synthetic batch: {first}")
        t_trunk = _median_time(trunk_step, device, cfg["repeats"], cfg["warmup"])
        t_model = _median_time(model_step, device, cfg["repeats"], cfg["warmup"])
        n_img = images.shape[0]
        out[f"batch{n_img}"] = {
            "trunk_images_per_s": n_img / t_trunk,
            "m3net_images_per_s": n_img / t_model,
            "ratio": t_trunk / t_model,
        }
    return out


def _extraction_setup(cfg, device, channels_last=True):
    """(trunk forward, M3-Net extraction, M3-Net, images): the two timed functions on one batch."""
    from model.backbone import build_trunk

    model = build_m3net(cfg, device).eval()
    trunk = build_trunk(cfg["backbone"], pretrained=False).to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        trunk = trunk.to(memory_format=torch.channels_last)
    images = _images(cfg["extract_batch"], cfg["image_size"], device, channels_last)

    @torch.no_grad()
    def trunk_fwd():
        with _autocast(device):
            trunk(images)

    @torch.no_grad()
    def extract():
        with _autocast(device):
            # gamma 0: every class passes, so max_classes=16 per (image, attribute) are embedded
            model.embed(images, gamma=0.0, max_classes=16)

    return trunk_fwd, extract, model, images


def profile_extraction(cfg, device, path: Path, channels_last=True) -> None:
    """torch.profiler's table of one extraction batch's operators (three batches, after warm-up),
    heaviest first: where the time beyond the trunk goes."""
    from torch.profiler import ProfilerActivity, profile

    _, extract, _, _ = _extraction_setup(cfg, device, channels_last)
    for _ in range(2):
        extract()
    _sync(device)
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(3):
            extract()
        _sync(device)
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    path.write_text(prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=60) + "\n")


def measure_extraction(cfg, device, channels_last=True) -> dict:
    trunk_fwd, extract, model, images = _extraction_setup(cfg, device, channels_last)
    n = images.shape[0]

    with torch.no_grad(), _autocast(device):
        emb = model.embed(images, gamma=0.0, max_classes=16)
    per_pair = emb.class_index.shape[0] / (n * len(cfg["classes"])) if emb.class_index is not None else 0
    t_trunk = _median_time(trunk_fwd, device, cfg["repeats"], cfg["warmup"])
    t_ext = _median_time(extract, device, cfg["repeats"], cfg["warmup"])
    return {
        "batch": n,
        "classes_per_image_attribute": per_pair,
        "trunk_forward_images_per_s": n / t_trunk,
        "extraction_images_per_s": n / t_ext,
        "ratio": t_trunk / t_ext,
    }


def measure_loader(cfg, workers: int, device=None) -> dict:
    """The training loader itself on real JPEGs written to a temporary folder: TripletDataset +
    triplet_loader (decode, resize, mirror, collate, pinned memory on CUDA) with ``workers``
    processes, and batch_to_device (the copy and normalisation the step waits for). Steady state:
    the clock starts when the first batch (the workers' start-up) has arrived."""
    import cv2
    import numpy as np

    from benchmark.loaders import ImageFolderTable, TripletDataset, batch_to_device, triplet_loader
    from benchmark.sampling import Triplets

    device = torch.device("cpu") if device is None else device
    cuda = device.type == "cuda"
    side, n_img = cfg["loader_side"], cfg["loader_images"]
    batch = max(cfg["batches"]) // 3  # triplets per step at the largest measured batch
    n_files = min(n_img, 512)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for i in range(n_files):
            img = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            img = cv2.GaussianBlur(img, (9, 9), 3)  # photo-like, compressible content
            names.append(f"{i}.jpg")
            cv2.imwrite(os.path.join(tmp, names[-1]), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        table = ImageFolderTable({"image_id": list(range(n_files)), "path": names}, tmp, cfg["image_size"])
        n_cls, n_attr = sum(cfg["classes"]), len(cfg["classes"])
        t = n_img // 3 + batch  # one batch more than counted: the first one pays for start-up
        rows = rng.integers(0, n_files, (3, t))
        trip = Triplets(anchor=rows[0], positive=rows[1], negative=rows[2],
                        attribute=rng.integers(0, n_attr, t), class_id=np.zeros(t, np.int64),
                        flip=rng.random((t, 3)) < 0.5)
        ds = TripletDataset(table, torch.from_numpy(rng.random((n_files, n_cls)) < 0.05),
                            torch.ones(n_files, n_attr, dtype=torch.bool), trip)
        loader = triplet_loader(ds, batch_size=batch, workers=workers, pin_memory=cuda)
        it = iter(loader)
        first = batch_to_device(next(it), device, channels_last=cuda)
        assert first["images"].dtype == torch.float32 and first["images"].std() > 0.1  # never time on zeros
        _sync(device)
        n, t0 = 0, time.perf_counter()
        for b in it:
            n += batch_to_device(b, device, channels_last=cuda)["images"].shape[0]
        _sync(device)
        dt = time.perf_counter() - t0
    return {"workers": workers, "batch_triplets": batch, "images": n, "image_side": side,
            "pin_memory": cuda, "images_per_s": n / dt}


def measure_metrics(cfg, device) -> dict:
    from benchmark.metrics import retrieval_metrics

    q, c, d = cfg["metrics"]
    g = torch.Generator(device="cpu").manual_seed(0)
    qe = torch.nn.functional.normalize(torch.randn(q, d, generator=g), dim=1).to(device)
    ce = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=1).to(device)
    relevant = (torch.rand(q, c, generator=g) < 0.05).to(device)

    def run():
        retrieval_metrics(qe @ ce.T, relevant, ks=(100,))

    t = _median_time(run, device, max(3, cfg["repeats"] // 2), 1)
    return {"queries": q, "candidates": c, "dim": d, "seconds": t}


def run_all(size: str, device: torch.device, workers: int, compile_modes=(), save=None, profile_to=None) -> dict:
    """Every measurement, in order of importance; ``save(result)`` after each, so a run cut short
    by a time limit still leaves what it measured."""
    cfg = SIZES[size]
    torch.manual_seed(0)
    save = save or (lambda r: None)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "size": size,
        "precision": "bf16 autocast, channels_last" if device.type == "cuda" else "float32",
        "goals": {"train_step_batch192": 0.85, "extraction": 0.75, "loader_vs_train_step": 1.2},
        "ratios": {},
    }
    result["training"] = measure_training(cfg, device)
    result["ratios"].update({f"train_step_{k}": v["ratio"] for k, v in result["training"].items()})
    save(result)
    result["extraction"] = measure_extraction(cfg, device)
    result["ratios"]["extraction"] = result["extraction"]["ratio"]
    save(result)
    if profile_to is not None:
        profile_extraction(cfg, device, Path(profile_to))
    result["metrics"] = measure_metrics(cfg, device)
    save(result)
    result["loader"] = measure_loader(cfg, workers, device)
    big = f"batch{max(cfg['batches'])}"
    step_ips = result["training"][big]["m3net_images_per_s"]
    result["loader"]["ratio_to_training_step"] = result["loader"]["images_per_s"] / step_ips
    result["ratios"]["loader_vs_train_step"] = result["loader"]["ratio_to_training_step"]
    save(result)
    for mode in compile_modes:  # each mode compiles fresh modules: a separate measurement
        comp = measure_training(cfg, device, compile_=mode)
        result.setdefault("compile", {})[mode] = {
            k: {**v, "speedup_vs_eager": v["m3net_images_per_s"] / result["training"][k]["m3net_images_per_s"]}
            for k, v in comp.items()}
        result["ratios"].update({f"compiled_{mode}_train_step_{k}": v["ratio"] for k, v in comp.items()})
        save(result)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: train.profiles.paper.workers or CPU count)")
    p.add_argument("--compile", default="", metavar="MODES",
                   help="also measure torch.compile on the training step, in these comma-separated modes "
                        "(default, reduce-overhead, max-autotune)")
    p.add_argument("--out", default="reports/perf.json")
    p.add_argument("--only-loader", action="store_true", help="measure the data loader alone")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="also write torch.profiler's operator table of embedding extraction to FILE")


def run(args) -> int:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(result):
        write_text(out, json.dumps(result, indent=2) + "\n")

    if args.only_loader:
        result = {"device": str(device), "loader": measure_loader(SIZES[args.size], workers, device)}
        save(result)
        print(json.dumps(result, indent=2))
        return 0
    modes = [m for m in args.compile.split(",") if m]
    from model.base import compile_mode

    try:  # before minutes of measurement, not after
        for m in modes:
            compile_mode(m)
    except ValueError as e:
        raise SystemExit(f"--compile: unknown mode: {e}") from None
    result = run_all(args.size, device, workers, modes, save=save, profile_to=args.profile)
    print(json.dumps(result["ratios"], indent=2))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
