"""The evaluate stage on a stand-in model and a tiny dataset written in the stages' real formats.

The metrics are checked against a brute-force computation of the protocol (docs/PROTOCOL.md#evaluation-protocol) written here, not
against the evaluator's own helpers.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.schemas import (
    CooccurrencePairsSchema, ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, write_table,
)
from benchmark.inference import ImageSource
from model.base import Embeddings, RetrievalModel
from model.registry import build_model, register_model

torch.set_num_threads(1)
KEY = "tiny"
CLASSES = [3, 4]  # two attributes
SIZE = 16


# ------------------------------------------------------------------ brute-force reference (docs/PROTOCOL.md#metrics)

def brute_ap(scores: np.ndarray, rel: np.ndarray, k: int | None = None) -> float:
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    r = rel.sum()
    if r == 0:
        return float("nan")
    hits, total = 0, 0.0
    for i, j in enumerate(order[: (k or len(order))], start=1):
        if rel[j]:
            hits += 1
            total += hits / i
    return total / min(r, k or len(order))


# ------------------------------------------------------------------ stand-in models

class StandIn(RetrievalModel):
    """Attribute embeddings = a fixed projection of the mean colour; attention = the red channel."""

    def __init__(self, *, classes_per_attribute, dim=8, seed=0, **kwargs):
        super().__init__(classes_per_attribute=classes_per_attribute)
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Parameter(torch.randn(self.num_attributes, 3, dim, generator=g))
        self.cls = torch.nn.Parameter(torch.randn(self.num_classes, dim, generator=g))
        self.head = torch.nn.Parameter(torch.randn(3, self.num_classes, generator=g))

    def embed(self, images, *, gamma=0.8, max_classes=16, ranked=None):
        pooled = images.mean((2, 3))  # (B, 3)
        att = torch.nn.functional.normalize(torch.einsum("bc,ncd->bnd", pooled, self.proj), dim=-1)  # (B, N, D)
        return Embeddings(att)

    def attention_map(self, images, attribute, class_id=None):
        return torch.nn.functional.avg_pool2d(images[:, :1], 4)[:, 0]  # (B, S/4, S/4)


class StandInClass(StandIn):
    has_class_level = True

    def embed(self, images, *, gamma=0.8, max_classes=16, ranked=None):
        e = super().embed(images)
        probs = torch.sigmoid(images.mean((2, 3)) @ self.head * 3)  # (B, C)
        rows = []
        for b in range(len(images)):
            for n, m in enumerate(self.classes_per_attribute):
                p = probs[b, self.class_offsets[n]:self.class_offsets[n] + m]
                sel = [int(c) for c in torch.argsort(p, descending=True) if p[c] > gamma][:max_classes] or [int(p.argmax())]
                rows += [(b, n, c) for c in sel]
        idx = torch.tensor(rows, dtype=torch.long)  # (P, 3)
        g = self.class_offsets[idx[:, 1]] + idx[:, 2]
        cemb = torch.nn.functional.normalize(e.attribute[idx[:, 0], idx[:, 1]] + 0.5 * self.cls[g], dim=-1)
        return Embeddings(e.attribute, probs, idx, cemb)


register_model("standin_eval")(StandIn)
register_model("standin_eval_class")(StandInClass)


# ------------------------------------------------------------------ tiny dataset

@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import cv2

    rng = np.random.default_rng(0)
    n_img = 40
    raw = tmp_path / "data" / KEY / "raw"
    (raw / "img").mkdir(parents=True)
    regions = {}
    for i in range(n_img):
        img = (rng.random((SIZE, SIZE, 3)) * 60 + rng.random(3) * 150).astype(np.uint8)
        y, x = divmod(i % 16, 4)
        img[y * 4:(y + 1) * 4, x * 4:(x + 1) * 4, 2] = 255  # red square (BGR): the attention peak
        cv2.imwrite(str(raw / "img" / f"{i}.png"), img)
        # even ids: the box holds the peak; odd ids: it lies elsewhere
        box = [x * 4, y * 4, x * 4 + 4, y * 4 + 4] if i % 2 == 0 else [(x * 4 + 8) % 16, (y * 4 + 8) % 16, (x * 4 + 8) % 16 + 4, (y * 4 + 8) % 16 + 4]
        regions[f"img/{i}.png"] = [{"attribute": "colour", "class": "c1", "box": box}]
    (raw / "regions.json").write_text(json.dumps(regions))
    vdir = tmp_path / "data" / KEY / "validated"
    write_table(pl.DataFrame({"image_id": range(n_img), "path": [f"img/{i}.png" for i in range(n_img)],
                              "width": [SIZE] * n_img, "height": [SIZE] * n_img, "bytes": [1] * n_img,
                              "sha256": [str(i) for i in range(n_img)]}), vdir / "images.parquet", ImagesSchema)
    tax = [(0, "colour", c, f"c{c}") for c in range(3)] + [(1, "shape", c, f"s{c}") for c in range(4)]
    write_table(pl.DataFrame({"attribute_id": [t[0] for t in tax], "attribute": [t[1] for t in tax],
                              "class_id": [t[2] for t in tax], "class_name": [t[3] for t in tax],
                              "global_class_id": range(len(tax))}), vdir / "taxonomy.parquet", TaxonomySchema)
    lab = []
    for i in range(n_img):
        for c in rng.choice(3, rng.integers(1, 3), replace=False):  # multi-label in attribute 0
            lab.append((i, 0, int(c), "positive"))
        if i % 3:
            lab.append((i, 1, int(rng.integers(4)), "positive"))
    lab.append((5, 1, 0, "unknown"))
    write_table(pl.DataFrame({"image_id": [r[0] for r in lab], "attribute_id": [r[1] for r in lab],
                              "class_id": [r[2] for r in lab], "state": [r[3] for r in lab]}),
                vdir / "labels.parquet", LabelsSchema)
    split = ["train"] * 8 + ["val"] * 12 + ["test"] * 20
    role = ["train"] * 8 + (["query"] * 3 + ["candidate"] * 9) + (["query"] * 5 + ["candidate"] * 15)
    write_table(pl.DataFrame({"image_id": range(n_img), "split": split, "role": role}),
                tmp_path / "data" / KEY / "splits.parquet", SplitsSchema)
    write_table(pl.DataFrame({"class_a": [0, 1], "class_b": [1, 2], "images": [5, 1], "rate": [0.1, 0.001],
                              "selected": [True, False]}),
                tmp_path / "data" / KEY / "cooccurrence" / "pairs.parquet", CooccurrencePairsSchema)
    params = {
        "train": {"profile": "twin", "seeds": [0], "profiles": {"twin": {"image_size": SIZE, "workers": 0}}},
        "validate": {"maybe_policy": "negative"},
        "evaluate": {"relevance": "all", "gamma": 0.8, "gamma_sweep": [0.3, 0.6, 0.9], "max_classes": 16,
                     "ks": [100], "bootstrap": 200, "bootstrap_seed": 11, "cooccurrence_min_rate": 0.002,
                     "batch_size": 7, "examples": 2, "example_top": 4},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _save_checkpoint(root, name, seed=0, file="checkpoint.pt", policy="last", epoch=2):
    """A checkpoint in the trainer's format (benchmark.train.load_trained_model reads it) and the
    train stage's selection.json naming it."""
    model = build_model(name, classes_per_attribute=CLASSES, seed=seed)
    d = root / "models" / KEY / name / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(),
                "build": {"model_name": name, "classes_per_attribute": CLASSES, "backbone": "none",
                          "model_params": {"seed": seed}}}, d / file)
    (d / "selection.json").write_text(json.dumps({"policy": policy, "epoch": epoch, "file": file,
                                                  "epochs_run": epoch + 2, "max_epochs": 12}))
    return model


def _run_stages(name: str) -> None:
    """The stage after training, as DVC runs it: evaluate (embeddings, then attention and the
    pointing game, then the scores)."""
    from benchmark import evaluate

    assert evaluate.main([KEY, name, "--device", "cpu"]) == 0


def _direct_test_map(model, ids_q, ids_c, labels_by_image, attr_slices, pixels_of):
    """The protocol (docs/PROTOCOL.md#evaluation-protocol) by hand: per attribute, brute-force AP of cosine similarity; query-weighted mean."""
    with torch.no_grad():
        emb = {i: model.embed(pixels_of([i])).attribute[0] for i in set(ids_q) | set(ids_c)}
    aps, per_attr = [], {}
    for n, sl in enumerate(attr_slices):
        qs = [i for i in ids_q if labels_by_image[i][sl].any()]
        cs = [i for i in ids_c if labels_by_image[i][sl].any()]
        for q in qs:
            s = np.array([float(emb[q][n] @ emb[c][n]) for c in cs])
            rel = np.array([bool(np.all(labels_by_image[c][sl] >= labels_by_image[q][sl])) for c in cs])
            ap = brute_ap(s, rel)
            if not np.isnan(ap):
                aps.append(ap)
                per_attr.setdefault(n, []).append(ap)
    return 100 * np.mean(aps), {n: 100 * np.mean(v) for n, v in per_attr.items()}, len(aps)


def _labels_by_image(root):
    lab = pl.read_parquet(root / "data" / KEY / "validated" / "labels.parquet").filter(pl.col("state") == "positive")
    offsets = [0, 3]
    out = {i: np.zeros(7, dtype=bool) for i in range(40)}
    for i, a, c in lab.select("image_id", "attribute_id", "class_id").iter_rows():
        out[i][offsets[a] + c] = True
    return out


def test_metrics_match_a_direct_computation(tiny):
    from benchmark import evaluate

    model = _save_checkpoint(tiny, "standin_eval")
    _run_stages("standin_eval")
    rdir = tiny / "reports" / KEY / "standin_eval"
    m = json.loads((rdir / "metrics.json").read_text())
    for split in ("val", "test"):
        assert set(m[split]) >= {"map_all", "map_100", "recall_100", "queries", "cooccurring"}
        assert set(m[split]["map_all"]) == {"overall", "macro", "colour", "shape"}
    images = pl.read_parquet(tiny / "data" / KEY / "validated" / "images.parquet")
    src = ImageSource(tiny / "data" / KEY / "raw", images, SIZE)
    labels = _labels_by_image(tiny)
    overall, per_attr, used = _direct_test_map(model.eval(), list(range(20, 25)), list(range(25, 40)), labels,
                                               [slice(0, 3), slice(3, 7)], src.tensor)
    assert m["test"]["map_all"]["overall"] == pytest.approx(overall, abs=1e-3)
    assert m["test"]["map_all"]["colour"] == pytest.approx(per_attr[0], abs=1e-3)
    assert m["test"]["map_all"]["shape"] == pytest.approx(per_attr[1], abs=1e-3)
    assert m["test"]["queries"]["used"] == used
    # co-occurring: only the pair (0, 1) has rate >= 0.002
    assert m["test"]["cooccurring"]["pairs"] == 1 and m["test"]["cooccurring"]["classes"] == 2
    # pointing game over the val and test query images (8..10, 20..24): even ids' boxes hold the
    # red square, odd ids' do not -> 5 of 8
    pg = json.loads((rdir / "pointing.json").read_text())["pointing_game"]
    assert pg["accuracy"] == pytest.approx(62.5) and pg["n"] == 8
    # chance: every box covers 4 x 4 of the 16 x 16 image
    assert pg["chance"] == pytest.approx(100 * 16 / 256)
    ci = json.loads((rdir / "metrics_ci.json").read_text())
    c = ci["test"]["map_all"]
    assert c["low"] <= m["test"]["map_all"]["overall"] <= c["high"] and c["low"] < c["high"]
    rows = list(csv.DictReader(open(rdir / "gamma.csv")))
    assert [float(r["gamma"]) for r in rows] == [0.3, 0.6, 0.9]
    assert [float(r["map_all"]) for r in rows] == [pytest.approx(m["test"]["map_all"]["overall"], abs=1e-3)] * 3
    assert all(r["excluded_share"] == "" for r in rows)
    ev = tiny / "data" / KEY / "eval" / "standin_eval"
    pq = pl.read_parquet(ev / "per_query.parquet")
    assert pq.filter(pl.col("split") == "test")["map_all"].drop_nans().len() == used
    r = np.load(ev / "retrieval.npz")
    assert r["top_image_id"].shape == (2, 4) and set(r["top_image_id"].ravel()) <= set(range(25, 40))
    assert (tiny / "data" / KEY / "attention" / "standin_eval" / "attention.npz").exists()
    # the embeddings file holds the exact float32 embeddings the metrics came from
    from benchmark.inference import load_embeddings

    ids, emb, class_level = load_embeddings(tiny / "data" / KEY / "embeddings" / "standin_eval" / "seed0.npz")
    assert ids.tolist() == list(range(8, 40)) and not class_level and emb.attribute.dtype == torch.float32
    with torch.no_grad():
        direct = model.eval().embed(src.tensor(ids[:3])).attribute
    assert torch.allclose(emb.attribute[:3], direct, atol=1e-6)


def test_evaluates_the_selected_checkpoint_and_records_it(tiny):
    """best_val: selection.json names best.pt; the evaluate stage embeds with that file (not checkpoint.pt),
    and evaluate writes the policy and the epoch into metrics.json."""

    _save_checkpoint(tiny, "standin_eval", seed=5)  # a different model in checkpoint.pt (the last epoch)
    d = tiny / "models" / KEY / "standin_eval" / "seed0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "checkpoint.pt").write_bytes((tiny / "models" / KEY / "standin_eval" / "seed5" / "checkpoint.pt").read_bytes())
    best = _save_checkpoint(tiny, "standin_eval", seed=0, file="best.pt", policy="best_val", epoch=3)
    _run_stages("standin_eval")
    m = json.loads((tiny / "reports" / KEY / "standin_eval" / "metrics.json").read_text())
    assert m["checkpoint"] == {"policy": "best_val", "epoch": 3, "epochs_run": 5, "max_epochs": 12}
    images = pl.read_parquet(tiny / "data" / KEY / "validated" / "images.parquet")
    src = ImageSource(tiny / "data" / KEY / "raw", images, SIZE)
    overall, _, _ = _direct_test_map(best.eval(), list(range(20, 25)), list(range(25, 40)), _labels_by_image(tiny),
                                     [slice(0, 3), slice(3, 7)], src.tensor)
    assert m["test"]["map_all"]["overall"] == pytest.approx(overall, abs=1e-3)


def test_class_level_model_gets_multi_granularity_and_a_gamma_sweep(tiny):
    from benchmark import evaluate

    _save_checkpoint(tiny, "standin_eval_class")
    _run_stages("standin_eval_class")
    rdir = tiny / "reports" / KEY / "standin_eval_class"
    m = json.loads((rdir / "metrics.json").read_text())
    assert "attribute_ranking" in m and m["test"]["map_all"]["overall"] is not None
    rows = list(csv.DictReader(open(rdir / "gamma.csv")))
    shares = [float(r["excluded_share"]) for r in rows]
    assert all(0 <= s <= 1 for s in shares) and shares == sorted(shares) and shares[-1] > shares[0]
    assert pl.read_parquet(tiny / "data" / KEY / "eval" / "standin_eval_class" / "per_query.parquet")["ranking"][0] == "multi-granularity"


def test_gamma_filter_equals_embedding_at_that_gamma(tiny):
    from benchmark.evaluate import class_keep

    model = StandInClass(classes_per_attribute=CLASSES)
    x = torch.randn(6, 3, SIZE, SIZE)
    low = model.embed(x, gamma=0.2)
    for g in (0.5, 0.8):
        ref = model.embed(x, gamma=g)
        kept = low.class_index[class_keep(low, g, CLASSES)]
        assert sorted(map(tuple, kept.tolist())) == sorted(map(tuple, ref.class_index.tolist()))


def test_several_seeds_give_mean_and_std(tiny):
    from benchmark import evaluate

    p = yaml.safe_load(open("params.yaml"))
    p["train"]["seeds"] = [0, 1]
    open("params.yaml", "w").write(yaml.safe_dump(p))
    for s in (0, 1):
        _save_checkpoint(tiny, "standin_eval", seed=s)
    _run_stages("standin_eval")
    m = json.loads((tiny / "reports" / KEY / "standin_eval" / "metrics.json").read_text())
    assert m["seeds"]["count"] == 2
    assert m["std"]["test"]["map_all"]["overall"] > 0  # two different models


def test_region_paths_match_with_a_leading_folder():
    from benchmark.pointing import match_region_paths

    got = match_region_paths(["Images/a/x.jpg", "img/y.jpg", "z.jpg"],
                             {0: "fashionAI_attributes_train1/Images/a/x.jpg", 1: "img/y.jpg", 2: "other/zz.jpg"})
    assert got == {"Images/a/x.jpg": 0, "img/y.jpg": 1}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_cap_binding_counts_pairs_over_the_cap(n, cap, gamma, seed):
    from benchmark.evaluate import cap_binding

    cpa = [3, 7, 5]
    probs = torch.rand(n, sum(cpa), generator=torch.Generator().manual_seed(seed))
    got = cap_binding(probs, gamma, cpa, cap)
    binding, start = 0, 0
    for m in cpa:  # written out: per (image, attribute), count the classes above gamma
        for r in range(n):
            above = sum(float(probs[r, start + j]) > gamma for j in range(m))
            binding += above > cap
        start += m
    assert got["binding_pairs"] == binding and got["pairs"] == n * len(cpa)
    assert got["binding_share"] == pytest.approx(binding / (n * len(cpa)), abs=1e-4)
    assert cap_binding(None, gamma, cpa, cap) is None


def test_class_cap_and_zero_policy_reach_the_outputs(tiny):
    from benchmark import evaluate

    _save_checkpoint(tiny, "standin_eval_class")
    p = yaml.safe_load(open("params.yaml"))
    p["evaluate"]["max_classes"] = 1  # StandInClass predicts more than one class for some pairs
    open("params.yaml", "w").write(yaml.safe_dump(p))
    _run_stages("standin_eval_class")
    rdir = tiny / "reports" / KEY / "standin_eval_class"
    m = json.loads((rdir / "metrics.json").read_text())
    cap = m["class_cap"]
    assert cap["max_classes"] == 1 and cap["pairs"] == (12 + 20) * 2  # val + test images, 2 attributes
    rows = list(csv.DictReader(open(rdir / "gamma.csv")))
    shares = [float(r["cap_binding_share"]) for r in rows]
    assert shares == sorted(shares, reverse=True)  # a larger gamma passes fewer classes
    assert shares[0] > 0 and cap["binding_pairs"] == round(cap["binding_share"] * cap["pairs"])
    q = m["test"]["queries"]
    assert q["left_out"] == q["no_relevant"]
    # ASEN's policy: the same queries, none left out, R = 0 queries still counted
    p["evaluate"]["no_relevant"] = "zero"
    open("params.yaml", "w").write(yaml.safe_dump(p))
    emb_file = tiny / "data" / KEY / "embeddings" / "standin_eval_class" / "seed0.npz"
    before = emb_file.read_bytes()
    evaluate.main([KEY, "standin_eval_class", "--device", "cpu"])  # scoring only: no new embeddings
    assert emb_file.read_bytes() == before
    z = json.loads((rdir / "metrics.json").read_text())["test"]["queries"]
    assert z == {"used": q["used"] + q["left_out"], "left_out": 0, "no_relevant": q["no_relevant"]}


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 64))
def test_bounded_chunks_give_the_same_per_query_metrics(seed, cells):
    """evaluate_split with a tiny CHUNK_ELEMENTS (a few queries per chunk, as at full size) gives the
    same per-query metrics as all queries at once, for both rankings."""
    import benchmark.evaluate as E

    g = torch.Generator().manual_seed(seed)
    n, cpa, d = 40, [3, 4], 8
    lab = np.zeros((n, sum(cpa)), bool)
    rng = np.random.default_rng(seed)
    for i in range(n):
        lab[i, rng.integers(0, 3)] = True
        lab[i, 3 + rng.integers(0, 4)] = True
    rows = [(i, a, c) for i in range(n) for a in range(2) for c in rng.choice(cpa[a], 2, replace=False)]
    idx = torch.tensor(rows, dtype=torch.long)
    emb = Embeddings(torch.randn(n, 2, d, generator=g), None, idx, torch.randn(len(rows), d, generator=g))
    q, c = np.arange(0, 10), np.arange(10, n)
    for ranking in ("attribute", "multi-granularity"):
        ref = E.evaluate_split(emb, q, c, lab, cpa, relevance="all", ks=[5], ranking=ranking)
        old = E.CHUNK_ELEMENTS
        try:
            E.CHUNK_ELEMENTS = cells  # 1..64 cells: 1-2 queries per chunk of 30 candidates
            small = E.evaluate_split(emb, q, c, lab, cpa, relevance="all", ks=[5], ranking=ranking)
        finally:
            E.CHUNK_ELEMENTS = old
        assert ref.keys() == small.keys()
        for k in ref:
            np.testing.assert_array_equal(ref[k], small[k], err_msg=f"{ranking} {k}")


# ------------------------------------------------------------------ the committed per-query file; fashionbench score

def test_the_committed_per_query_file_holds_each_seeds_test_rows_in_float32(tiny):
    """reports/<key>/<model>/per_query.parquet (fashionbench compare's input): the test rows of
    data/<key>/eval/<model>/per_query.parquet, per seed, with only the query and the metrics."""
    p = yaml.safe_load(open("params.yaml"))
    p["train"]["seeds"] = [0, 3]
    open("params.yaml", "w").write(yaml.safe_dump(p))
    for s in (0, 3):
        _save_checkpoint(tiny, "standin_eval", seed=s)
    _run_stages("standin_eval")
    full = pl.read_parquet(tiny / "data" / KEY / "eval" / "standin_eval" / "per_query.parquet")
    small = pl.read_parquet(tiny / "reports" / KEY / "standin_eval" / "per_query.parquet")
    assert small.columns == ["seed", "image_id", "attribute_id", "map_all", "map_100", "recall_100"]
    assert all(small.schema[c] == pl.Float32 for c in ("map_all", "map_100", "recall_100"))
    test = full.filter(pl.col("split") == "test").sort(["seed", "attribute_id", "image_id"])
    assert small.height == test.height and sorted(set(small["seed"])) == [0, 3]
    for c in ("seed", "image_id", "attribute_id"):
        assert small[c].to_list() == test[c].to_list()
    for c in ("map_all", "map_100", "recall_100"):
        np.testing.assert_allclose(small[c].to_numpy(), test[c].to_numpy(), rtol=1e-6)  # NaN where R = 0 in both


def _scored(tiny, name):
    root = tiny / "reports" / KEY / name
    m = json.loads((root / "metrics.json").read_text())
    return m, json.loads((root / "metrics_ci.json").read_text()), (root / "gamma.csv").read_text(), \
        pl.read_parquet(root / "per_query.parquet"), pl.read_parquet(tiny / "data" / KEY / "eval" / name / "per_query.parquet")


@pytest.mark.parametrize("model", ["standin_eval", "standin_eval_class"])
def test_score_gives_the_evaluate_stages_numbers_for_its_own_embeddings(tiny, model, capsys):
    """The evaluate stage's embeddings files scored by `fashionbench score` (as they are, and with images and class
    rows shuffled) give the evaluate stage's metrics.json, intervals, gamma sweep and per-query tables."""
    from benchmark import cli

    p = yaml.safe_load(open("params.yaml"))
    p["train"]["seeds"] = [0, 1]
    open("params.yaml", "w").write(yaml.safe_dump(p))
    for s in (0, 1):
        _save_checkpoint(tiny, model, seed=s)
    _run_stages(model)
    ref_m, ref_ci, ref_g, ref_small, ref_full = _scored(tiny, model)
    edir = tiny / "data" / KEY / "embeddings" / model
    files = [edir / "seed0.npz", edir / "seed1.npz"]
    assert cli.main(["score", KEY, *map(str, files), "--name", "mine", "--device", "cpu"]) == 0
    # the user's own layout: images in another order, class rows shuffled, float64, a seed member, other names
    rng = np.random.default_rng(0)
    shuffled = []
    for s, f in zip((0, 1), files):
        with np.load(f) as z:
            perm = rng.permutation(len(z["image_id"]))
            inv = np.argsort(perm)
            arrays = {"image_id": z["image_id"][perm], "attribute": z["attribute"][perm].astype(np.float64),
                      "seed": np.array(s)}
            if "class_index" in z:
                ci, rows = z["class_index"].copy(), rng.permutation(len(z["class_index"]))
                ci[:, 0] = inv[ci[:, 0]]
                arrays.update(class_index=ci[rows], class_emb=z["class_emb"][rows], probs=z["probs"][perm])
        shuffled.append(tiny / f"user_{s}.npz")
        np.savez(shuffled[-1], **arrays)
    assert cli.main(["score", KEY, *map(str, reversed(shuffled)), "--name", "mine_shuffled", "--device", "cpu"]) == 0
    for name in ("mine", "mine_shuffled"):
        m, ci, g, small, full = _scored(tiny, name)
        assert m.pop("checkpoint")["policy"] == "precomputed" and m.pop("source")["seeds"] in ([0, 1], [1, 0])
        ref = dict(ref_m)
        ref.pop("checkpoint")
        assert m == ref, name
        assert ci == ref_ci and g == ref_g
        assert small.equals(ref_small)
        order = ["seed", "split", "attribute_id", "image_id"]
        assert full.sort(order).equals(ref_full.sort(order))
    if model == "standin_eval_class":
        assert ref_m["attribute_ranking"] and ref_full["ranking"][0] == "multi-granularity"
    # the leaderboard stage finds the scored model beside the trained one: the same row, no difference
    from benchmark import leaderboard

    board = leaderboard.build(KEY, {**p, "leaderboard": {"alpha": 0.05}})
    assert board["models"]["mine"]["map_all"] == board["models"][model]["map_all"]
    pair = board["pairs"].get(f"{model}_vs_mine") or board["pairs"][f"mine_vs_{model}"]
    assert pair["delta"] == 0 and pair["p"] == 1
    # the attribute level alone: the ranking the evaluate stage reports as attribute_ranking
    assert cli.main(["score", KEY, *map(str, files), "--name", "mine_att", "--attribute-level", "--device", "cpu"]) == 0
    att = json.loads((tiny / "reports" / KEY / "mine_att" / "metrics.json").read_text())
    want = ref_m.get("attribute_ranking", {"test": ref_m["test"]})["test"]["map_all"]["overall"]
    assert att["test"]["map_all"]["overall"] == want


def _user_file(tiny, name="u.npz", class_level=False, **change):
    """A valid user file for the tiny split (val and test images 8..39), then ``change``: member ->
    array (None removes it)."""
    ids = np.arange(8, 40)
    rng = np.random.default_rng(1)
    arrays = {"image_id": ids, "attribute": rng.normal(size=(len(ids), 2, 4)).astype(np.float32)}
    if class_level:
        arrays["class_index"] = np.array([[r, 0, r % 3] for r in range(len(ids))] + [[r, 1, r % 4] for r in range(len(ids))])
        arrays["class_emb"] = rng.normal(size=(2 * len(ids), 4)).astype(np.float32)
        arrays["probs"] = rng.random((len(ids), 7)).astype(np.float32)
    for k, v in change.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    path = tiny / name
    np.savez(path, **arrays)
    return path


def _nan_attribute():
    a = np.zeros((32, 2, 4), np.float32)
    a[5, 1, 2] = np.nan
    return a


BAD_FILES = {
    "no attribute": (dict(attribute=None), "no member 'attribute'"),
    "wrong attributes": (dict(attribute=np.zeros((32, 3, 4), np.float32)), "must have shape (n, N, D) = (32, 2, D)"),
    "nan": (dict(attribute=_nan_attribute()), "NaN or inf for 1 images, e.g. image ids 13"),
    "train image": (dict(image_id=np.r_[np.arange(9, 40), 0]), "not val or test images of the split (splits.parquet): 0"),
    "missing image": (dict(image_id=np.arange(8, 39), attribute=np.zeros((31, 2, 4), np.float32)),
                      "without an embedding: 39"),
    "repeated image": (dict(image_id=np.r_[np.arange(8, 39), 8]), "more than once: 8"),
    "float ids": (dict(image_id=np.arange(8, 40).astype(float)), "'image_id' must hold integers"),
    "class out of range": ({"class_level": True, "class_index": np.array([[0, 0, 3]]), "class_emb": np.zeros((1, 4))},
                           "'class_index' row 0: class 3 outside attribute 0's 3 classes (colour)"),
    "row out of range": ({"class_level": True, "class_index": np.array([[32, 1, 0]]), "class_emb": np.zeros((1, 4))},
                         "image row 32 outside [0, 32)"),
    "probs above 1": ({"class_level": True, "probs": np.full((32, 7), 1.5, np.float32)}, "'probs' must lie in [0, 1]"),
    "class_emb rows": ({"class_level": True, "class_emb": np.zeros((3, 4))}, "'class_emb' must have shape (P, D') with P = 64"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_score_rejects_a_bad_file_naming_it(tiny, case, capsys):
    from benchmark import cli

    change, message = BAD_FILES[case]
    change = dict(change)
    class_level = change.pop("class_level", False)
    path = _user_file(tiny, f"bad_{case.replace(' ', '_')}.npz", class_level=class_level, **change)
    assert cli.main(["score", KEY, str(path), "--name", "bad", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err, err
    assert not (tiny / "reports" / KEY / "bad").exists()  # nothing written


def test_score_rejects_bad_arguments(tiny, capsys):
    from benchmark import cli

    good = _user_file(tiny, "seed0.npz", class_level=True)
    assert cli.main(["score", KEY, str(good), "--name", "ok", "--device", "cpu"]) == 0
    assert json.loads((tiny / "reports" / KEY / "ok" / "metrics.json").read_text())["source"]["seeds"] == [0]
    (tiny / "junk.npz").write_bytes(b"not a zip")
    assert cli.main(["score", KEY, str(tiny / "junk.npz"), "--name", "x"]) == 2
    assert f"{tiny / 'junk.npz'}: not a .npz file" in capsys.readouterr().err
    other = _user_file(tiny, "other.npz", seed=np.array(0))
    assert cli.main(["score", KEY, str(good), str(other), "--name", "x"]) == 2
    assert "seed 0 again" in capsys.readouterr().err
    p = yaml.safe_load(open("params.yaml"))
    p["models"] = {"m3net": {}}
    open("params.yaml", "w").write(yaml.safe_dump(p))
    for name in ("m3net", "attribute_blind", "a_vs_b", "Upper"):
        assert cli.main(["score", KEY, str(good), "--name", name]) == 2
        assert f"--name {name}" in capsys.readouterr().err.replace("'", "")
