"""Stage `pretrain`: the shared trunk of a profile with ``trunk: shared``, trained once per dataset.

    python -m benchmark.pretrain <dataset>

The twins cannot have ImageNet weights, and a random trunk trained end to end for a few CPU
minutes per model learns too little to tell methods apart. So the twin profile trains the
backbone once per dataset, as a multi-label classifier of the training split's classes (a linear
layer on the pooled map; binary cross-entropy over each image's annotated attributes, the
unannotated ones masked out), and every model then trains its own head on this trunk's frozen,
cached maps (stage ``features``). Only training images are seen, so nothing leaks from val or test.

Reads ``data/<key>/validated``, ``data/<key>/splits.parquet`` and the active profile's
``backbone``, ``pretrained``, ``image_size``, ``preprocess``, ``threads`` and ``pretrain``
(``epochs``, ``batch_size``, ``lr``, ``seed``); writes ``data/<key>/trunk/trunk.pt`` (format:
``benchmark.shared_trunk``) and ``reports/<key>/pretrain.json`` (loss and training-set
mean AP of the classifier per epoch; no timings, so the same weights give the same bytes; the
time goes to the untracked ``reports/<key>/pretrain_timing.json``). Under ``trunk: end_to_end``
it writes only ``data/<key>/trunk/unused.json``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from benchmark.params import load_params, training_profile
from benchmark.shared_trunk import TRUNK_FORMAT, trunk_path, uses_shared_trunk, write_unused
from datasets import DATASETS, paths
from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table, write_json


def class_mask(annotated: torch.Tensor, classes_per_attribute: list[int]) -> torch.Tensor:
    """(n, N) annotated attributes -> (n, C) classes whose BCE counts."""
    return annotated.repeat_interleave(torch.tensor(classes_per_attribute), dim=1)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the (image, class) cells of annotated attributes."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp(min=1)


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


def run(key: str, params: dict) -> dict:
    from benchmark.loaders import (ImageFolderTable, classes_per_attribute, dense_annotation, label_matrix,
                                   network_input)
    from model.backbone import build_trunk, trunk_channels

    prof = training_profile(params)
    out_dir = paths.trunk_dir(key)
    if not uses_shared_trunk(prof):
        write_unused(out_dir, params["train"]["profile"])
        return {"trunk": "end_to_end"}
    pt = prof["pretrain"]
    epochs, batch_size, lr, seed = int(pt["epochs"]), int(pt["batch_size"]), float(pt["lr"]), int(pt["seed"])
    if prof.get("threads"):
        torch.set_num_threads(int(prof["threads"]))
    vdir = paths.validated_dir(key)
    images = read_table(vdir / "images.parquet", ImagesSchema)
    labels = read_table(vdir / "labels.parquet", LabelsSchema)
    taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema)
    splits = read_table(paths.splits_path(key), SplitsSchema)
    train_ids = np.intersect1d(splits.filter(splits["split"] == "train")["image_id"].to_numpy(),
                               images["image_id"].to_numpy())
    if len(train_ids) == 0:
        raise ValueError(f"{paths.splits_path(key)}: no training images to pretrain the shared trunk on")
    cpa = classes_per_attribute(taxonomy)
    targets, annotated = label_matrix(labels, taxonomy, train_ids, params["validate"]["maybe_policy"],
                                      dense=dense_annotation(key))
    targets, mask = targets.float(), class_mask(annotated, cpa).float()
    table = ImageFolderTable(images, paths.raw_dir(key), int(prof["image_size"]), image_ids=train_ids, cache=True,
                             preprocess=prof.get("preprocess", "squash"))

    torch.manual_seed(seed)
    trunk = build_trunk(prof["backbone"], pretrained=bool(prof["pretrained"]))
    classifier = torch.nn.Linear(trunk_channels(prof["backbone"]), targets.shape[1])
    net = torch.nn.Sequential(trunk, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), classifier)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    show = sys.stderr.isatty()
    history, t0 = [], time.perf_counter()
    n = len(train_ids)
    from tqdm import tqdm

    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        order, flips = rng.permutation(n), rng.random(n) < 0.5
        net.train()
        total, scores = 0.0, np.zeros(tuple(targets.shape), np.float32)
        for start in tqdm(range(0, n, batch_size), desc=f"{key} pretrain e{epoch + 1}/{epochs}", disable=not show,
                          file=sys.stderr, leave=False):
            rows = order[start:start + batch_size]
            x = network_input(torch.stack([table.load(int(r), flip=bool(flips[r])) for r in rows]))
            logits = net(x)
            loss = masked_bce(logits, targets[rows], mask[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            scores[rows] = logits.detach().numpy()
        history.append({"epoch": epoch + 1, "loss": round(total / n, 6),
                        "train_map": round(mean_ap(scores, targets.numpy() > 0, mask.numpy() > 0), 4)})
        print(f"[pretrain] {key} epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}, "
              f"training-set class mAP {history[-1]['train_map']:.2f}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    path = trunk_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    for f in path.parent.iterdir():
        if f.is_file() and f != path:
            f.unlink()  # an unused.json of an earlier end-to-end profile
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": TRUNK_FORMAT, "backbone": prof["backbone"], "image_size": int(prof["image_size"]),
                "state_dict": trunk.state_dict()}, tmp)
    tmp.replace(path)
    report = {"images": int(n), "classes": int(targets.shape[1]), "epochs": history,
              "backbone": prof["backbone"], "image_size": int(prof["image_size"])}
    write_json(paths.reports_dir(key) / "pretrain.json", report)
    write_json(paths.reports_dir(key) / "pretrain_timing.json",
               {"seconds": round(seconds, 2), "images_per_s": round(n * epochs / max(seconds, 1e-9), 1)})
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
