"""Stage `train`: one model on one dataset, one checkpoint per seed, resumable.

    python -m benchmark.train <dataset> <model>
    torchrun --nproc_per_node=K -m benchmark.train <dataset> <model>     (DDP; gloo on CPU, nccl on CUDA)

With ``train.processes: K`` (K > 1) the first command launches the second itself, so `dvc repro`
trains on K GPUs without editing the stage's command.

Reads params ``train`` (the active profile) and ``models.<model>``; per-dataset values such as
``w_p: {deepfashion: 100, ...}`` are resolved to the dataset's number. Writes

    models/<dataset>/<model>/seed<k>/checkpoint.pt   (every epoch, atomically; ``complete`` at the end)
    models/<dataset>/<model>/done.json               (when every seed is complete)
    reports/<dataset>/<model>/train_log.csv          (one row per step: step, epoch, lr, loss, loss_<term>...)

A run whose params, data and code are unchanged and whose checkpoints are complete is a no-op; a
killed run resumes from its last epoch and, on the CPU, ends with bitwise the weights of an
uninterrupted one (triplets are a function of (seed, epoch); RNG states are restored). A non-finite
loss stops the run with an error naming the step and the terms; the last good checkpoint stays.

For the evaluate stage: :func:`checkpoint_paths` and :func:`load_trained_model`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.params import load_params, training_profile
from datasets import paths
from datasets.schemas import write_json

CHECKPOINT_FORMAT = 1
_CODE_FILES = ("benchmark/train.py", "benchmark/loaders.py", "benchmark/sampling.py")
_LOG_HEAD = ["step", "epoch", "lr", "loss"]
_LOG_TAIL = ["seed", "phase", "images_per_s"]
_CACHE_BYTES = 1 << 30


# ------------------------------------------------------------------------------ where and what


def checkpoint_path(dataset: str, model: str, seed: int) -> Path:
    return paths.model_dir(dataset, model) / f"seed{int(seed)}" / "checkpoint.pt"


def checkpoint_paths(dataset: str, model: str, params: dict | None = None) -> list[Path]:
    """One checkpoint per seed of ``train.seeds``, in that order (the evaluate stage's input)."""
    params = load_params() if params is None else params
    return [checkpoint_path(dataset, model, s) for s in params["train"]["seeds"]]


def done_path(dataset: str, model: str) -> Path:
    return paths.model_dir(dataset, model) / "done.json"


def log_path(dataset: str, model: str) -> Path:
    return paths.model_reports_dir(dataset, model) / "train_log.csv"


def resolve_model_params(params: dict, model: str, dataset: str) -> dict[str, Any]:
    """models.<model> with every per-dataset mapping (e.g. w_p) resolved to the dataset's value."""
    if model not in params.get("models", {}):
        raise KeyError(f"params.yaml has no models.{model} section")
    out = {}
    for k, v in params["models"][model].items():
        if isinstance(v, dict) and dataset in v:
            v = v[dataset]
        out[k] = v
    # A profile may shrink the models for its hardware (the twin profile's CPU budget); only keys
    # the model already has are overridden, so a profile cannot add hyperparameters by accident.
    train = params.get("train", {})
    prof = train.get("profiles", {}).get(train.get("profile"), {})
    for k, v in (prof.get("model_overrides") or {}).items():
        if k in out:
            out[k] = v
    return out


def load_trained_model(path: str | Path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a checkpoint written by this stage.

    The model is rebuilt from the checkpoint's own record (name, classes per attribute, backbone,
    model params), so it does not depend on the current params.yaml.
    """
    from model import build_model

    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    b = ckpt["build"]
    model = build_model(b["model_name"], classes_per_attribute=b["classes_per_attribute"],
                        backbone=b["backbone"], pretrained=False, **b["model_params"])
    model.load_state_dict(ckpt["model"])
    if ckpt.get("phase") in model.phases:
        model.set_phase(ckpt["phase"])
    model.eval()
    return model, ckpt


def phase_epochs(phases: tuple[str, ...], epochs: int, model_params: dict, profile: str | None = None) -> list[int]:
    """Epochs of each phase. models.<model>.phase_epochs, when present, replaces the profile's
    epochs: a list in phase order, a {phase: n} mapping, or either of those keyed by the train
    profile name ({twin: [1, 1], paper: [50, 20]}). Otherwise the profile's epochs are split evenly
    (the remainder to the later phases). Every phase gets at least one epoch."""
    spec = model_params.get("phase_epochs")
    if isinstance(spec, dict) and profile is not None and profile in spec:
        spec = spec[profile]
    if spec is None:
        base, rem = divmod(int(epochs), len(phases))
        out = [base + (1 if i >= len(phases) - rem else 0) for i in range(len(phases))]
    elif isinstance(spec, dict):
        missing = [p for p in phases if p not in spec]
        if missing:
            raise ValueError(f"phase_epochs {spec} names neither the profile {profile!r} nor the phases {phases}")
        out = [int(spec[p]) for p in phases]
    else:
        out = [int(x) for x in spec]
        if len(out) != len(phases):
            raise ValueError(f"phase_epochs {spec} does not match the phases {phases}")
    return [max(1, e) for e in out]


def _sha256_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def run_fingerprint(dataset: str, model: str, params: dict, seed: int) -> str:
    """What the weights depend on: params used, the data tables, the training and model code."""
    h = hashlib.sha256()
    used = {
        "dataset": dataset, "model": model, "seed": int(seed),
        # train.processes is how the stage is launched; the world size it gives is recorded below
        "train": {k: v for k, v in training_profile(params).items() if k != "processes"},
        "model_params": params["models"][model],
        "maybe_policy": params.get("validate", {}).get("maybe_policy", "negative"),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    h.update(json.dumps(used, sort_keys=True, default=str).encode())
    vdir = paths.validated_dir(dataset)
    for p in [vdir / "images.parquet", vdir / "labels.parquet", vdir / "taxonomy.parquet", paths.splits_path(dataset)]:
        _sha256_file(p, h)
    pkg = Path(__file__).resolve().parent.parent
    code = [pkg / f for f in _CODE_FILES] + sorted((pkg / "model").rglob("*.py"))
    for p in code:
        if p.exists():
            h.update(p.name.encode())
            _sha256_file(p, h)
    return h.hexdigest()[:24]


# ------------------------------------------------------------------------------------ data


class TrainData:
    """The training split's images, label matrix and triplet index."""

    def __init__(self, dataset: str, image_size: int, maybe_policy: str, *, cache: bool):
        from benchmark.loaders import ImageFolderTable, classes_per_attribute, dense_annotation, label_matrix
        from benchmark.sampling import build_triplet_index
        from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table

        vdir = paths.validated_dir(dataset)
        images = read_table(vdir / "images.parquet", ImagesSchema)
        labels = read_table(vdir / "labels.parquet", LabelsSchema)
        self.taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema)
        splits = read_table(paths.splits_path(dataset), SplitsSchema)
        train_ids = np.intersect1d(
            splits.filter(splits["split"] == "train")["image_id"].to_numpy(), images["image_id"].to_numpy()
        )
        if len(train_ids) == 0:
            raise ValueError(f"{paths.splits_path(dataset)}: no training images")
        self.classes_per_attribute = classes_per_attribute(self.taxonomy)
        self.targets, self.annotated = label_matrix(labels, self.taxonomy, train_ids, maybe_policy,
                                                    dense=dense_annotation(dataset))
        # decoded images are kept in memory only when they fit easily (the twins: a few MB)
        cache = cache and len(train_ids) * image_size * image_size * 3 <= _CACHE_BYTES
        self.table = ImageFolderTable(images, paths.raw_dir(dataset), image_size, image_ids=train_ids, cache=cache)
        self.index = build_triplet_index(self.targets.numpy(), self.annotated.numpy(), self.classes_per_attribute)


# ------------------------------------------------------------------------------------ training


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(setting: str, dist: _Dist) -> torch.device:
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be auto|cpu|cuda, got {setting!r}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank)


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(obj, path: Path) -> None:
    write_json(path, obj, sort_keys=True)


def write_log(rows: list[dict], path: Path) -> None:
    """The step log as CSV (atomically): step, epoch, lr, loss, loss_<term>..., seed, phase, images_per_s."""
    terms = sorted({k for r in rows for k in r if k.startswith("loss_")})
    cols = _LOG_HEAD + terms + _LOG_TAIL
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    os.replace(tmp, path)


class NonFiniteLoss(FloatingPointError):
    pass


def train_seed(dataset: str, model_name: str, params: dict, seed: int, data: TrainData, dist: _Dist,
               log_rows_before: list[dict]) -> list[dict]:
    """Train (or resume, or skip) one seed; returns its log rows."""
    from torch.optim import Adam
    from torch.optim.lr_scheduler import ExponentialLR

    from benchmark.loaders import TripletDataset, batch_to_device, triplet_loader
    from benchmark.sampling import sample_triplets
    from model import build_model
    from model.base import compiled

    prof = training_profile(params)
    mp = resolve_model_params(params, model_name, dataset)
    lr, lr_decay = float(mp.get("lr", 1e-4)), float(mp.get("lr_decay", 1.0))
    device = _device(str(prof.get("device", "auto")), dist)
    cuda = device.type == "cuda"
    ckpt_file = checkpoint_path(dataset, model_name, seed)
    fingerprint = run_fingerprint(dataset, model_name, params, seed)

    batch_size = int(prof["batch_size"])
    if batch_size % dist.world:
        raise ValueError(f"train batch_size {batch_size} is not divisible by {dist.world} processes")
    steps_per_epoch = int(prof["triplets_per_epoch"]) // batch_size
    if steps_per_epoch < 1:
        raise ValueError("train.triplets_per_epoch is smaller than batch_size")

    # --- resume or start
    ckpt = None
    if ckpt_file.exists():
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        if ckpt.get("fingerprint") != fingerprint or ckpt.get("format") != CHECKPOINT_FORMAT:
            if dist.main:
                print(f"[train] {ckpt_file}: params, data or code changed; training from scratch", file=sys.stderr)
            ckpt = None
        elif ckpt.get("complete"):
            if dist.main:
                print(f"[train] {ckpt_file}: complete and up to date", file=sys.stderr)
            return ckpt["log"]

    torch.manual_seed(seed)
    build = {"model_name": model_name, "classes_per_attribute": data.classes_per_attribute,
             "backbone": prof["backbone"], "pretrained": bool(prof["pretrained"]), "model_params": mp}
    model = build_model(model_name, classes_per_attribute=data.classes_per_attribute,
                        backbone=prof["backbone"], pretrained=bool(prof["pretrained"]), **mp)
    phases = tuple(model.phases)
    per_phase = phase_epochs(phases, int(prof["epochs"]), mp, params["train"]["profile"])
    phase_of_epoch = [p for p, e in zip(phases, per_phase) for _ in range(e)]
    total_epochs = len(phase_of_epoch)
    start_epoch, rows = 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        start_epoch, rows = int(ckpt["epoch"]), list(ckpt["log"])
        if dist.main:
            print(f"[train] resuming {ckpt_file} after epoch {start_epoch}/{total_epochs}", file=sys.stderr)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)

    tds = TripletDataset(data.table, data.targets, data.annotated)
    step = len(rows)
    ckpt_meta = {
        "format": CHECKPOINT_FORMAT, "dataset": dataset, "model_name": model_name, "seed": int(seed),
        "fingerprint": fingerprint, "build": build, "epochs_total": total_epochs,
        "params": {"train": prof, "model": mp,
                   "maybe_policy": params.get("validate", {}).get("maybe_policy", "negative")},
        "taxonomy": {"classes_per_attribute": data.classes_per_attribute,
                     "num_attributes": len(data.classes_per_attribute),
                     "num_classes": int(sum(data.classes_per_attribute))},
        "image_size": int(prof["image_size"]), "world_size": dist.world,
    }
    check_every = 1 if not cuda else 25  # a host sync per step would stall a launch-bound GPU step
    show = dist.main and sys.stderr.isatty()

    for pi, phase in enumerate(phases):
        epochs = [e for e in range(total_epochs) if phase_of_epoch[e] == phase]
        if epochs[-1] < start_epoch:
            continue
        model.set_phase(phase)
        optimizer = Adam(model.param_groups(lr), lr=lr)
        scheduler = ExponentialLR(optimizer, gamma=lr_decay)
        if ckpt is not None and start_epoch > epochs[0]:  # resuming inside this phase
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt is not None and start_epoch > 0:
            _set_rng_state(ckpt["rng"])
            ckpt = None  # restored once
        net = model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[device.index] if cuda else None, find_unused_parameters=True)
        fwd = compiled(net, prof.get("compile"))

        for epoch in epochs:
            if epoch < start_epoch:
                continue
            model.train()
            tds.set_triplets(sample_triplets(data.index, steps_per_epoch * batch_size, seed=seed, epoch=epoch))
            loader = triplet_loader(tds, batch_size=batch_size // dist.world, workers=int(prof.get("workers", 0)),
                                    rank=dist.rank, world_size=dist.world, pin_memory=cuda)
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"{dataset}/{model_name} s{seed} e{epoch + 1}/{total_epochs}",
                       disable=not show, file=sys.stderr, leave=False)
            pending: list[tuple[int, torch.Tensor, list[str], float, float]] = []
            t_last = time.perf_counter()
            for batch in loader:
                batch = batch_to_device(batch, device, channels_last=cuda)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    out = fwd(batch)
                loss = out["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                names = ["loss"] + sorted(k for k in out if k.startswith("loss_"))
                vals = torch.stack([out[k].detach().float().reshape(()) for k in names])
                now = time.perf_counter()
                ips = 3 * batch_size / max(now - t_last, 1e-9)
                t_last = now
                pending.append((step, vals, names, optimizer.param_groups[0]["lr"], ips))
                if len(pending) >= check_every:
                    _flush(pending, rows, epoch, seed, phase, dataset, model_name, ckpt_file, dist, log_rows_before)
                    pending = []
                    if show:
                        r = rows[-1]
                        bar.set_postfix({k: f"{r[k]:.4g}" for k in names} | {"img/s": f"{ips:.0f}"})
                bar.update(1)
            _flush(pending, rows, epoch, seed, phase, dataset, model_name, ckpt_file, dist, log_rows_before)
            bar.close()
            scheduler.step()
            if dist.world > 1:  # BN statistics and EMA buffers: every rank ends the epoch with rank 0's
                import torch.distributed as tdist

                for b in model.buffers():
                    tdist.broadcast(b, 0)
            complete = epoch == total_epochs - 1
            if dist.main:
                _atomic_save({**ckpt_meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "phase": phase,
                              "rng": _rng_state(), "log": rows, "complete": complete}, ckpt_file)
                write_log(log_rows_before + rows, log_path(dataset, model_name))
    return rows


def _flush(pending, rows, epoch, seed, phase, dataset, model_name, ckpt_file, dist, log_rows_before) -> None:
    if not pending:
        return
    vals = torch.stack([p[1] for p in pending]).cpu()  # one host sync for the whole buffer
    for (step, _, names, lr, ips), v in zip(pending, vals.tolist()):
        row = {"step": step, "epoch": epoch + 1, "lr": lr, "seed": seed, "phase": phase, "images_per_s": round(ips, 1)}
        row.update(dict(zip(names, v)))
        rows.append(row)
        if not all(math.isfinite(x) for x in v):
            if dist.main:
                write_log(log_rows_before + rows, log_path(dataset, model_name))
            terms = ", ".join(f"{n}={x}" for n, x in zip(names, v))
            kept = f"the last good checkpoint is kept: {ckpt_file}" if ckpt_file.exists() else "no checkpoint was written"
            raise NonFiniteLoss(
                f"{dataset}/{model_name} seed {seed}: non-finite loss at step {step} (epoch {epoch + 1}, "
                f"phase {phase!r}): {terms}; {kept}"
            )


def run(dataset: str, model_name: str, params: dict) -> int:
    dist = _Dist()
    prof = training_profile(params)
    seeds = [int(s) for s in prof["seeds"]]
    done = done_path(dataset, model_name)
    prints = [run_fingerprint(dataset, model_name, params, s) for s in seeds]
    if prof.get("threads"):  # intra-op threads (CPU); 0/absent: torch's default
        torch.set_num_threads(int(prof["threads"]))
    if done.exists():
        d = json.loads(done.read_text())
        if d.get("fingerprints") == prints and all(checkpoint_path(dataset, model_name, s).exists() for s in seeds):
            if dist.main:
                # DVC deletes the (unpersisted) log before running the stage: write it back from the checkpoints
                rows = [r for s in seeds for r in torch.load(checkpoint_path(dataset, model_name, s),
                                                             map_location="cpu", weights_only=False)["log"]]
                write_log(rows, log_path(dataset, model_name))
                print(f"[train] {dataset}/{model_name}: up to date ({done})", file=sys.stderr)
            return 0
    if dist.world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            backend = "nccl" if _device(str(prof.get("device", "auto")), dist).type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(dist.local_rank)
            tdist.init_process_group(backend=backend)
    if dist.main and done.exists():
        done.unlink()
    t0 = time.perf_counter()
    image_size = int(prof["image_size"])
    workers = int(prof.get("workers", 0))
    data = TrainData(dataset, image_size, params.get("validate", {}).get("maybe_policy", "negative"),
                     cache=workers == 0)
    all_rows: list[dict] = []
    for s in seeds:
        all_rows += train_seed(dataset, model_name, params, s, data, dist, list(all_rows))
    if dist.main:
        write_log(all_rows, log_path(dataset, model_name))
        _write_json({"dataset": dataset, "model": model_name, "seeds": seeds, "fingerprints": prints,
                     "checkpoints": [str(checkpoint_path(dataset, model_name, s)) for s in seeds],
                     "steps": len(all_rows), "seconds": round(time.perf_counter() - t0, 2)}, done)
        print(f"[train] {dataset}/{model_name}: {len(all_rows)} steps in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return 0


def torchrun_command(dataset: str, model: str, params_path: str, processes: int) -> list[str]:
    """The torchrun line that runs this stage in ``processes`` processes on this machine (a free
    rendezvous port, so two stages can run side by side)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return launcher + [f"--nproc_per_node={int(processes)}", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                       "-m", "benchmark.train", dataset, model, "--params", str(params_path)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.train", description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("model")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    processes = int(params["train"].get("processes", 1))
    if processes < 1:
        raise ValueError(f"{args.params}: train.processes must be >= 1, got {processes}")
    if processes > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun: launch it
        import subprocess

        return subprocess.call(torchrun_command(args.dataset, args.model, args.params, processes))
    return run(args.dataset, args.model, params)


if __name__ == "__main__":
    sys.exit(main())
