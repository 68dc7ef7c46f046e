"""Stage `pretrain`: the shared trunks of a profile with ``trunk: shared``, one per training seed.

    python -m benchmark.pretrain <dataset>

The twins cannot have ImageNet weights, and a random trunk trained end to end for a few CPU
minutes per model learns too little to tell methods apart. So the twin profile trains the
backbone per dataset and per seed of ``train.seeds``, as a multi-label classifier of the training
split's classes (a linear layer on the pooled map; binary cross-entropy over each image's
annotated attributes, the unannotated ones masked out), and every model's run of seed k then
trains its own head on trunk k's frozen, cached maps (stage ``features``). A trunk per seed puts
the variance of pretraining (its initialisation and data order) into every seed-to-seed spread
and every test between models. Only training images are seen, so nothing leaks from val or test.

Schedule: AdamW with weight decay ``pretrain.weight_decay``, a one-cycle learning rate peaking at
``pretrain.lr`` (a quarter of the steps warming up, cosine down to lr/1e4), ``pretrain.epochs``
epochs of ``pretrain.batch_size`` images, each mirrored with probability 1/2. After every epoch
the classifier is scored on the val split (class mean AP over the annotated attributes), so the
record shows where the curve levels off.

Reads ``data/<key>/validated``, ``data/<key>/splits.parquet``, ``train.seeds`` and the active
profile's ``backbone``, ``pretrained``, ``image_size``, ``preprocess``, ``threads`` and ``pretrain``
(``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``pos_weight``, ``seed``); writes ``data/<key>/trunk/seed<k>.pt``
(format: ``benchmark.shared_trunk``), ``reports/<key>/pretrain.json`` (per seed: loss, training-set
and val class mAP per epoch; no timings, so the same weights give the same bytes) and the
``reports/<key>/pretrain_curve.csv`` plot; the time goes to the untracked
``reports/<key>/pretrain_timing.json``. Under ``trunk: end_to_end`` it writes only
``data/<key>/trunk/unused.json``, a ``pretrain.json`` without seeds and a curve of no rows (DVC's
outputs under any profile).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from benchmark.params import load_params, resolve, training_profile
from benchmark.shared_trunk import TRUNK_FORMAT, trunk_path, uses_shared_trunk, write_unused
from datasets import DATASETS, paths
from datasets.atomic import atomic_path, write_text
from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table, write_json


def class_mask(annotated: torch.Tensor, classes_per_attribute: list[int]) -> torch.Tensor:
    """(n, N) annotated attributes -> (n, C) classes whose BCE counts."""
    return annotated.repeat_interleave(torch.tensor(classes_per_attribute), dim=1)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Mean binary cross-entropy over the (image, class) cells of annotated attributes, a positive
    cell weighted ``pos_weight`` times a negative one."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weight = mask * (1.0 + (float(pos_weight) - 1.0) * targets)
    return (bce * weight).sum() / mask.sum().clamp(min=1)


def mean_ap(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
    """Mean over classes (with a positive) of the average precision of ranking the annotated images by score."""
    aps = []
    for c in range(scores.shape[1]):
        m = mask[:, c]
        y, s = targets[m, c], scores[m, c]
        if y.sum() == 0:
            continue
        order = np.argsort(-s, kind="stable")
        hits = y[order].astype(np.float64)
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((prec * hits).sum() / hits.sum()))
    return float(100.0 * np.mean(aps)) if aps else float("nan")


class _Split:
    """One split's decoded images (uint8, in memory), class targets and annotated-class mask."""

    def __init__(self, key: str, params: dict, prof: dict, split: str, images, labels, taxonomy, splits):
        from benchmark.loaders import ImageFolderTable, classes_per_attribute, dense_annotation, label_matrix

        self.ids = np.intersect1d(splits.filter(splits["split"] == split)["image_id"].to_numpy(),
                                  images["image_id"].to_numpy())
        cpa = classes_per_attribute(taxonomy)
        targets, annotated = label_matrix(labels, taxonomy, self.ids, params["validate"]["maybe_policy"],
                                          dense=dense_annotation(key))
        self.targets, self.mask = targets.float(), class_mask(annotated, cpa).float()
        table = ImageFolderTable(images, paths.raw_dir(key), int(prof["image_size"]), image_ids=self.ids,
                                 preprocess=prof.get("preprocess", "squash"))
        self.pixels = torch.stack([table.load(i) for i in range(len(self.ids))]) if len(self.ids) else None


def one_cycle(optimizer, total_steps: int, lr: float):
    """The one-cycle schedule: a quarter of the steps warming up to ``lr``, cosine down to lr/1e4."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, total_steps),
                                               pct_start=0.25, div_factor=25.0, final_div_factor=1e4)


@torch.no_grad()
def _scores(net, split: _Split, batch_size: int) -> np.ndarray:
    from benchmark.loaders import network_input

    net.eval()
    out = [net(network_input(split.pixels[i:i + 4 * batch_size])) for i in range(0, len(split.ids), 4 * batch_size)]
    net.train()
    return torch.cat(out).numpy()


def train_trunk(key: str, prof: dict, seed: int, train: _Split, val: _Split | None) -> tuple[torch.nn.Module, list]:
    """One trunk (seed ``seed`` of ``train.seeds``) and its per-epoch record."""
    from benchmark.loaders import network_input
    from benchmark.shared_trunk import trunk_seed
    from model.backbone import build_trunk, trunk_channels

    pt = prof["pretrain"]
    epochs, batch_size, lr = int(pt["epochs"]), int(pt["batch_size"]), float(pt["lr"])
    base = int(pt["seed"])
    pos_weight = float(resolve(pt.get("pos_weight", 1.0), dataset=key, where="pretrain.pos_weight"))
    torch.manual_seed(trunk_seed(base, seed))
    trunk = build_trunk(prof["backbone"], pretrained=bool(prof["pretrained"]))
    classifier = torch.nn.Linear(trunk_channels(prof["backbone"]), train.targets.shape[1])
    net = torch.nn.Sequential(trunk, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), classifier)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=float(pt.get("weight_decay", 0.0)))
    n = len(train.ids)
    sched = one_cycle(opt, epochs * ((n + batch_size - 1) // batch_size), lr)
    show = sys.stderr.isatty()
    history = []
    from tqdm import tqdm

    for epoch in range(epochs):
        rng = np.random.default_rng([base, seed, epoch])
        order, flips = rng.permutation(n), torch.from_numpy(rng.random(n) < 0.5)
        net.train()
        total, scores = 0.0, np.zeros(tuple(train.targets.shape), np.float32)
        for start in tqdm(range(0, n, batch_size), desc=f"{key} trunk seed {seed} e{epoch + 1}/{epochs}",
                          disable=not show, file=sys.stderr, leave=False):
            rows = torch.from_numpy(order[start:start + batch_size])
            x = train.pixels[rows]
            x = torch.where(flips[rows][:, None, None, None], x.flip(-1), x)
            logits = net(network_input(x))
            loss = masked_bce(logits, train.targets[rows], train.mask[rows], pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
            scores[rows.numpy()] = logits.detach().numpy()
        row = {"epoch": epoch + 1, "loss": round(total / n, 6),
               "train_map": round(mean_ap(scores, train.targets.numpy() > 0, train.mask.numpy() > 0), 4)}
        if val is not None and val.pixels is not None:
            row["val_map"] = round(mean_ap(_scores(net, val, batch_size), val.targets.numpy() > 0,
                                           val.mask.numpy() > 0), 4)
        history.append(row)
        print(f"[pretrain] {key} seed {seed} epoch {epoch + 1}/{epochs}: loss {row['loss']:.4f}, class mAP "
              f"train {row['train_map']:.2f}, val {row.get('val_map', float('nan')):.2f}", file=sys.stderr)
    return trunk.eval(), history


def run(key: str, params: dict) -> dict:
    from benchmark.shared_trunk import features_paths  # noqa: F401  (the format's other half)

    prof = training_profile(params)
    out_dir = paths.trunk_dir(key)
    if not uses_shared_trunk(prof):
        write_unused(out_dir, params["train"]["profile"])
        # the stage's metrics and plot are DVC outputs under any profile: an empty record of no trunk
        report = {"trunk": "end_to_end", "profile": params["train"]["profile"], "seeds": {}}
        write_json(paths.reports_dir(key) / "pretrain.json", report)
        write_text(paths.reports_dir(key) / "pretrain_curve.csv", "seed,epoch,loss,train_map,val_map\n")
        return report
    seeds = [int(s) for s in params["train"]["seeds"]]
    if prof.get("threads"):
        torch.set_num_threads(int(prof["threads"]))
    vdir = paths.validated_dir(key)
    images = read_table(vdir / "images.parquet", ImagesSchema)
    labels = read_table(vdir / "labels.parquet", LabelsSchema)
    taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema)
    splits = read_table(paths.splits_path(key), SplitsSchema)
    t0 = time.perf_counter()
    train = _Split(key, params, prof, "train", images, labels, taxonomy, splits)
    if len(train.ids) == 0:
        raise ValueError(f"{paths.splits_path(key)}: no training images to pretrain the shared trunk on")
    val = _Split(key, params, prof, "val", images, labels, taxonomy, splits)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {trunk_path(key, s) for s in seeds}
    for f in out_dir.iterdir():
        if f.is_file() and f not in keep:
            f.unlink()  # an unused.json of an earlier end-to-end profile, a trunk of a seed no longer run
    report = {"images": int(len(train.ids)), "val_images": int(len(val.ids)), "classes": int(train.targets.shape[1]),
              "backbone": prof["backbone"], "image_size": int(prof["image_size"]), "seeds": {}}
    curve = []
    for seed in seeds:
        trunk, history = train_trunk(key, prof, seed, train, val)
        path = trunk_path(key, seed)
        with atomic_path(path) as tmp:
            torch.save({"format": TRUNK_FORMAT, "backbone": prof["backbone"], "image_size": int(prof["image_size"]),
                        "seed": seed, "state_dict": trunk.state_dict()}, tmp)
        report["seeds"][str(seed)] = {"epochs": history}
        curve += [{"seed": seed, **row} for row in history]
    seconds = time.perf_counter() - t0
    write_json(paths.reports_dir(key) / "pretrain.json", report)
    import polars as pl

    with atomic_path(paths.reports_dir(key) / "pretrain_curve.csv") as tmp:
        pl.DataFrame(curve).write_csv(tmp, float_precision=4)
    write_json(paths.reports_dir(key) / "pretrain_timing.json",
               {"seconds": round(seconds, 2), "trunks": len(seeds),
                "images_per_s": round(len(train.ids) * int(prof["pretrain"]["epochs"]) * len(seeds)
                                      / max(seconds, 1e-9), 1)})
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.pretrain", description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run(args.dataset, load_params(args.params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
