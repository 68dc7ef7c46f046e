"""The default benchmark can catch a broken model: on a small FashionAI twin run through the real
stages (twins -> acquire -> parse -> validate -> splits -> pretrain -> features -> train), with
the training labels shuffled before the trunk is pretrained, the whole chain (the trunk's pooled
map, the attribute-blind control, and ASEN's head on it) scores within noise of chance on the
test split, and ASEN trained as the pipeline does beats the attribute-blind readout of its own
trunk on the test queries, by a paired interval above zero (training that is broken leaves the
head a random projection of the pooled map, which scores as the control does)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
KEY = "fashionai"


def _stages(work: Path, names) -> None:
    old = Path.cwd()
    os.chdir(work)
    try:
        for main, argv in names:
            assert main(argv) == 0
    finally:
        os.chdir(old)


def _shuffle_train_labels(work: Path, seed: int) -> int:
    """Permute the positive class of every training image among the training images of its
    attribute (val and test labels untouched); returns how many labels moved."""
    from datasets.schemas import LabelsSchema, SplitsSchema, read_table, write_table

    vdir = work / "data" / KEY / "validated"
    labels = read_table(vdir / "labels.parquet", LabelsSchema)
    splits = read_table(work / "data" / KEY / "splits.parquet", SplitsSchema)
    train = set(splits.filter(pl.col("split") == "train")["image_id"].to_list())
    rng = np.random.default_rng(seed)
    is_train = labels["image_id"].is_in(list(train)).to_numpy()
    cls = labels["class_id"].to_numpy().copy()
    att = labels["attribute_id"].to_numpy()
    for a in np.unique(att):
        rows = np.flatnonzero(is_train & (att == a))
        cls[rows] = cls[rng.permutation(rows)]
    moved = int((cls != labels["class_id"].to_numpy()).sum())
    write_table(labels.with_columns(pl.Series("class_id", cls, dtype=labels["class_id"].dtype)),
                vdir / "labels.parquet", LabelsSchema)
    return moved


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two working copies of one small twin: labels as they are, and training labels shuffled."""
    from benchmark import features, pretrain, train
    from datasets import acquire, parse, splits, validate
    from datasets.twins import __main__ as twins

    work = tmp_path_factory.mktemp("power")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["twins"]["fashionai"]["images"] = 3000
    prof = params["train"]["profiles"]["twin"]
    prof.update(epochs=6, triplets_per_epoch=960, batch_size=32, threads=0, checkpoint="last")
    params["train"]["seeds"] = [0]
    params["splits"]["ratios"][KEY] = [4, 1, 5]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    _stages(work, [(twins.main, [KEY])] + [(m.main, [KEY]) for m in (acquire, parse, validate, splits)])
    shuffled = tmp_path_factory.mktemp("power_shuffled")
    for item in ("params.yaml", "data"):
        src = work / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, shuffled / item)
    assert _shuffle_train_labels(shuffled, seed=1) > 100
    for w in (work, shuffled):
        torch.manual_seed(0)
        _stages(w, [(pretrain.main, [KEY]), (features.main, [KEY]), (train.main, [KEY, "asen"])])
    return {"trained": work, "shuffled": shuffled}


def _test_map(model, work: Path, split: str = "test") -> dict:
    """MAP@all of the attribute-level ranking on ``split`` (test: its query and candidate roles;
    train: a seeded 1:4 draw of its images), with its bootstrap interval and the exact expectation
    of a random ranking over the same queries (percent)."""
    from benchmark.evalsets import attribute_layout, positive_matrix
    from benchmark.evaluate import evaluate_split
    from benchmark.inference import ImageSource, extract_embeddings
    from benchmark.metrics import bootstrap_ci
    from benchmark.params import training_profile
    from benchmark.stats import expected_random_metrics
    from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table

    old = Path.cwd()
    os.chdir(work)
    try:
        params = yaml.safe_load(Path("params.yaml").read_text())
        v = Path("data") / KEY / "validated"
        images = read_table(v / "images.parquet", ImagesSchema)
        tax = read_table(v / "taxonomy.parquet", TaxonomySchema)
        sp = read_table(Path("data") / KEY / "splits.parquet", SplitsSchema).filter(pl.col("split") == split)
        # evaluate against the true labels: the shuffled copy's test labels are untouched
        labels = read_table(v / "labels.parquet", LabelsSchema)
        ids = sp["image_id"].to_numpy()
        _, cpa = attribute_layout(tax)
        lab = positive_matrix(labels, tax, ids)
        if split == "test":
            is_q = (sp["role"] == "query").to_numpy()
        else:
            is_q = np.zeros(len(ids), dtype=bool)
            is_q[np.random.default_rng(0).permutation(len(ids))[: len(ids) // 5]] = True
        src = ImageSource.for_profile(KEY, images, training_profile(params), seed=0)
        emb = extract_embeddings(model.eval(), src, ids, gamma=0.8, max_classes=16, batch_size=64, device="cpu")
    finally:
        os.chdir(old)
    r = evaluate_split(emb, np.flatnonzero(is_q), np.flatnonzero(~is_q), lab, cpa, relevance="all", ks=[100],
                       ranking="attribute")
    keep = r["n_relevant"] > 0
    ap = torch.from_numpy(r["ap_all"][keep])
    low, high = bootstrap_ci(ap, n=1000, seed=0, level=0.95)
    chance = expected_random_metrics(r["n_relevant"][keep], r["n_candidates"][keep])["ap_all"]
    return {"map": 100 * float(ap.mean()), "low": 100 * low, "high": 100 * high,
            "chance": 100 * float(np.mean(chance)), "queries": int(keep.sum()), "ap": ap}


def _load(work: Path):
    from benchmark.checkpoint import load_trained_model

    model, _ = load_trained_model(work / "models" / KEY / "asen" / "seed0" / "checkpoint.pt")
    return model


def _control(build: dict):
    """The attribute-blind control on the run's trunk (its cached maps), as the control stage builds it."""
    from model import build_model

    return build_model("attribute_blind", classes_per_attribute=build["classes_per_attribute"],
                       backbone=build["backbone"], pretrained=False)


@pytest.mark.slow
def test_shuffled_labels_score_within_noise_of_chance_and_training_beats_the_control(runs):
    from benchmark.checkpoint import read_checkpoint

    trained = _test_map(_load(runs["trained"]), runs["trained"])
    shuffled = _test_map(_load(runs["shuffled"]), runs["shuffled"])
    build = read_checkpoint(runs["trained"] / "models" / KEY / "asen" / "seed0" / "checkpoint.pt")["build"]
    control = _test_map(_control(build), runs["trained"])
    control_shuffled = _test_map(_control(build), runs["shuffled"])
    for name, r in (("trained", trained), ("shuffled", shuffled), ("control", control),
                    ("control on the shuffled trunk", control_shuffled)):
        print(name, {k: v for k, v in r.items() if k != "ap"})
    assert trained["queries"] >= 80
    # a chain that learned nothing, its trunk included: chance lies inside its intervals
    assert shuffled["low"] <= shuffled["chance"] <= shuffled["high"], shuffled
    assert control_shuffled["low"] <= control_shuffled["chance"] <= control_shuffled["high"], control_shuffled
    # a model that learned the attribute: above the attribute-blind readout of its own trunk on the same test
    # queries, by the interval of the paired per-query difference (the leaderboard's control comparison is
    # paired too). On a trunk this strong an untrained head is a random projection of the pooled map, i.e.
    # close to the control: ASEN trained against untrained on its training images gave +0.4 [-0.5, 1.2]
    above = _paired(trained, control)
    print(f"trained - control (test): {above}")
    assert above[1] > 0, above
    assert trained["low"] > trained["chance"], trained


def _paired(a: dict, b: dict) -> tuple[float, float, float]:
    """(mean, low, high) in points of a's per-query AP minus b's on the same queries (95% bootstrap)."""
    from benchmark.metrics import bootstrap_ci

    diff = a["ap"] - b["ap"]
    low, high = bootstrap_ci(diff, n=1000, seed=0, level=0.95)
    return 100 * float(diff.mean()), 100 * low, 100 * high
