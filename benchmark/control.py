"""Control stage: the attribute-blind control's embeddings, made exactly as a model's, then scored as one.

    python -m benchmark.control <dataset>

For every seed of ``train.seeds``, the control ``attribute_blind`` (``model/control.py``: the
trunk's average-pooled map, one vector for every attribute, no head) embeds the val and test
images through that seed's trunk (the twin profile's cached maps of trunk k, the very input every
model's head of seed k reads) and writes ``data/<key>/embeddings/attribute_blind/seed<k>.npz``,
as a model's evaluate stage does. It then scores them through the evaluate stage's own function
(``benchmark.evaluate.run``), so the control is scored by the same code as every model (``data/<key>/eval/attribute_blind/``,
``reports/<key>/attribute_blind/metrics.json``); the leaderboard puts it beside chance and tests
every model against it.
"""

from __future__ import annotations

import sys

from benchmark import evaluate
from benchmark.evalsets import evaluation_image_ids
from benchmark.inference import ImageSource, embeddings_path, extract_embeddings, resolve_device, save_embeddings
from benchmark.params import load_params, training_profile
from benchmark.shared_trunk import model_backbone
from datasets import paths
from datasets.schemas import ImagesSchema, SplitsSchema, TaxonomySchema, read_table

NAME = "attribute_blind"


def run(key: str, params: dict, device=None) -> list:
    import torch

    from benchmark.loaders import classes_per_attribute
    from model import build_model

    ev = params["evaluate"]
    prof = training_profile(params)
    for f in paths.embeddings_dir(key, NAME).glob("seed*.npz"):
        f.unlink()  # a seed no longer run
    device = resolve_device(device)
    vdir = paths.validated_dir(key)
    images = read_table(vdir / "images.parquet", ImagesSchema)
    cpa = classes_per_attribute(read_table(vdir / "taxonomy.parquet", TaxonomySchema))
    ids = evaluation_image_ids(read_table(paths.splits_path(key), SplitsSchema))
    out = paths.embeddings_dir(key, NAME)
    written = []
    for seed in params["train"].get("seeds") or [0]:
        torch.manual_seed(int(seed))  # an end-to-end profile's trunk without ImageNet weights is drawn from it
        model = build_model(NAME, classes_per_attribute=cpa, backbone=model_backbone(prof),
                            pretrained=bool(prof["pretrained"])).to(device).eval()
        source = ImageSource.for_profile(key, images, prof, seed=int(seed))
        emb = extract_embeddings(model, source, ids, gamma=float(ev["gamma"]), max_classes=int(ev["max_classes"]),
                                 batch_size=int(ev.get("batch_size", 64)), device=device)
        save_embeddings(embeddings_path(out, int(seed)), emb, ids, False, {"policy": "untrained", "epoch": 0})
        written.append(embeddings_path(out, int(seed)))
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    from datasets import DATASETS

    ap = argparse.ArgumentParser(prog="python -m benchmark.control", description=__doc__.split("\n")[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    for p in run(args.dataset, params, device=args.device):
        print(f"wrote {p}", file=sys.stderr)
    evaluate.report(args.dataset, NAME, evaluate.run(args.dataset, NAME, params, device=args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
