"""Learning, end to end on a small twin: for every model, the real stages (twins -> acquire ->
parse -> validate -> splits -> train) run on a small FashionAI twin; the training loss falls by a
clear margin and the attribute-level MAP@all on the training images rises well above chance."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
KEY = "fashionai"
MODELS = list(yaml.safe_load((ROOT / "params.yaml").read_text())["models"])  # the one list of models


@pytest.fixture(scope="module")
def twin_workdir(tmp_path_factory):
    """A working copy with params for a 240-image FashionAI twin and a short, small training run."""
    from benchmark import features, pretrain
    from datasets import acquire, parse, splits, validate
    from datasets.twins import __main__ as twins

    work = tmp_path_factory.mktemp("learning")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["twins"]["fashionai"]["images"] = 240
    prof = params["train"]["profiles"]["twin"]
    prof.update(image_size=48, epochs=4, triplets_per_epoch=240, batch_size=12, threads=0)
    prof["pretrain"].update(batch_size=16)  # 192 training images: a trunk of 12 steps per epoch, not 3
    params["train"]["seeds"] = [0]
    params["models"]["asenpp"]["phase_epochs"]["twin"] = [2, 2]  # ASEN++'s global, then joint phase
    # every class of the small twin is in the train split: the test measures fitting, not transfer
    params["splits"]["ratios"][KEY] = [8, 1, 1]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    old = Path.cwd()
    import os

    os.chdir(work)
    try:
        assert twins.main([KEY]) == 0
        for stage in (acquire, parse, validate, splits, pretrain, features):  # the twin profile's shared trunk
            assert stage.main([KEY]) == 0
    finally:
        os.chdir(old)
    return work


def _map_on_train_images(model, work: Path) -> tuple[float, float]:
    """(MAP@all of the model's attribute-level ranking, MAP@all of random embeddings), in percent,
    train images split 1:4 into queries and candidates."""
    from benchmark import evaluate as E
    from benchmark.evalsets import attribute_layout, positive_matrix
    from benchmark.inference import ImageSource, extract_embeddings
    from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table
    from model.base import Embeddings

    v = work / "data" / KEY / "validated"
    images = read_table(v / "images.parquet", ImagesSchema)
    labels = read_table(v / "labels.parquet", LabelsSchema)
    tax = read_table(v / "taxonomy.parquet", TaxonomySchema)
    sp = read_table(work / "data" / KEY / "splits.parquet", SplitsSchema)
    ids = sp.filter(pl.col("split") == "train")["image_id"].to_numpy()
    _, cpa = attribute_layout(tax)
    lab = positive_matrix(labels, tax, ids)
    perm = np.random.default_rng(0).permutation(len(ids))
    rq, rc = np.sort(perm[: len(ids) // 5]), np.sort(perm[len(ids) // 5:])
    from benchmark.shared_trunk import load_features

    src = ImageSource(work / "data" / KEY / "raw", images, 48, features=load_features(KEY, 0))

    def score(emb):
        r = E.evaluate_split(emb, rq, rc, lab, cpa, relevance="all", ks=[100], ranking="attribute")
        return float(np.nanmean(r["ap_all"])) * 100

    emb = extract_embeddings(model, src, ids, gamma=0.8, max_classes=16, batch_size=64, device="cpu")
    g = torch.Generator().manual_seed(0)
    chance = np.mean([score(Embeddings(attribute=torch.nn.functional.normalize(
        torch.randn(len(ids), len(cpa), 16, generator=g), dim=-1))) for _ in range(5)])
    return score(emb), float(chance)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_loss_falls_and_map_rises_above_chance(name, twin_workdir, monkeypatch):
    from benchmark import train
    from benchmark.train import checkpoint_path, load_trained_model

    monkeypatch.chdir(twin_workdir)
    torch.manual_seed(0)
    assert train.main([KEY, name]) == 0
    with open(twin_workdir / "reports" / KEY / name / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    # ASEN++'s joint phase adds local and alignment terms to the total: follow its global triplet
    term = "loss_global" if name == "asenpp" else "loss"
    losses = [float(r[term]) for r in rows]
    assert len(losses) == 4 * 240 // 12
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.8 * first, f"{name}: loss {first:.3f} -> {last:.3f}"
    model, _ = load_trained_model(checkpoint_path(KEY, name, 0))
    got, chance = _map_on_train_images(model, twin_workdir)
    print(f"\n{name}: loss {first:.3f} -> {last:.3f}; train-image MAP@all {got:.2f} vs chance {chance:.2f}")
    assert got > chance + 10, f"{name}: MAP@all {got:.2f} is not well above chance {chance:.2f}"
    shutil.rmtree(twin_workdir / "models" / KEY / name)
