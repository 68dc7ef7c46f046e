"""Co-occurrence: counts against a brute-force loop, symmetry, bounds, selection, the stage, real labels."""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.cooccurrence import cooccurrence, main, positives, summary
from datasets.schemas import (
    CooccurrenceClassesSchema,
    CooccurrencePairsSchema,
    ImagesSchema,
    LabelsSchema,
    TaxonomySchema,
    read_table,
    write_table,
)

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "asen_splits" / "DeepFashion" / "label_valid.txt"

image_labels = st.lists(st.sets(st.integers(0, 11), max_size=6), min_size=1, max_size=60)


def _pos(sets):
    rows = [(i, c) for i, s in enumerate(sets) for c in s]
    return pl.DataFrame(rows, schema={"image_id": pl.Int64, "global_class_id": pl.Int32}, orient="row")


def _brute(sets):
    pairs, classes = Counter(), Counter()
    for s in sets:
        for c in s:
            classes[c] += 1
        for a, b in itertools.combinations(sorted(s), 2):
            pairs[(a, b)] += 1
    return pairs, classes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sets=image_labels, extra_images=st.integers(0, 5), min_rate=st.sampled_from([0.0, 0.002, 0.05, 0.2, 0.5]))
def test_counts_equal_a_brute_force_count(sets, extra_images, min_rate):
    n = len(sets) + extra_images  # images without labels still count in N
    pairs, classes = cooccurrence(_pos(sets), n, range(12), min_rate)
    CooccurrencePairsSchema.validate(pairs)
    CooccurrenceClassesSchema.validate(classes)
    want_pairs, want_classes = _brute(sets)
    got = {(a, b): k for a, b, k in pairs.select("class_a", "class_b", "images").iter_rows()}
    assert got == dict(want_pairs)
    assert dict(zip(classes["global_class_id"].to_list(), classes["images"].to_list())) == {
        c: want_classes.get(c, 0) for c in range(12)}
    rate = dict(zip(classes["global_class_id"].to_list(), classes["rate"].to_list()))
    for a, b, k, r, sel in pairs.iter_rows():
        assert a < b
        assert r == pytest.approx(k / n)
        assert r <= min(rate[a], rate[b]) + 1e-12  # no pair more frequent than either class
        assert sel == (k / n >= min_rate)
    selected = {c for a, b, *_ , s in pairs.iter_rows() if s for c in (a, b)}
    assert set(classes.filter("selected")["global_class_id"].to_list()) == selected
    s = summary(pairs, classes, n, min_rate)
    assert s["selected_pairs"] == sum(1 for k in want_pairs.values() if k / n >= min_rate)
    assert s["selected_classes"] == len(selected)


@settings(max_examples=30, deadline=None)
@given(sets=image_labels)
def test_cooccurrence_is_symmetric_under_relabelling(sets):
    """Reversing the class ids (which swaps a and b in every pair) gives the same counts: the
    stored a < b half stands for a symmetric matrix, whichever order the classes come in."""
    pairs, _ = cooccurrence(_pos(sets), len(sets), range(12), 0.1)
    rev, _ = cooccurrence(_pos([{11 - c for c in s} for s in sets]), len(sets), range(12), 0.1)
    m = np.zeros((12, 12), np.int64)
    for a, b, k in pairs.select("class_a", "class_b", "images").iter_rows():
        m[a, b] = m[b, a] = k
    r = np.zeros((12, 12), np.int64)
    for a, b, k in rev.select("class_a", "class_b", "images").iter_rows():
        r[a, b] = r[b, a] = k
    assert np.array_equal(m, m.T) and np.array_equal(m, r[::-1, ::-1])


def test_only_positive_labels_of_listed_images_count():
    tax = pl.DataFrame({"attribute_id": [0, 0, 1], "attribute": ["a", "a", "b"], "class_id": [0, 1, 0],
                        "class_name": ["x", "y", "z"], "global_class_id": [0, 1, 2]})
    labels = pl.DataFrame({"image_id": [0, 0, 0, 1, 1, 2, 2], "attribute_id": [0, 0, 1, 0, 1, 0, 1],
                           "class_id": [0, 1, 0, 0, 0, 0, 0],
                           "state": ["positive", "positive", "unknown", "positive", "positive", "positive", "positive"]})
    pos = positives(labels, tax, [0, 1])  # image 2 is not a validated image
    pairs, classes = cooccurrence(pos, 2, range(3), 0.5)
    assert pairs.select("class_a", "class_b", "images").rows() == [(0, 1, 1), (0, 2, 1)]
    assert classes["images"].to_list() == [2, 1, 1]


def _write_validated(root, key, n=300, seed=0):
    rng = np.random.default_rng(seed)
    tax = pl.DataFrame([(a, f"attr{a}", c, f"c{a}_{c}", a * 6 + c) for a in range(3) for c in range(6)],
                       schema=["attribute_id", "attribute", "class_id", "class_name", "global_class_id"], orient="row")
    images = pl.DataFrame({"image_id": np.arange(n), "path": [f"img/{i}.jpg" for i in range(n)],
                           "width": [8] * n, "height": [8] * n, "bytes": [1] * n, "sha256": ["x"] * n})
    rows = sorted({(i, int(a), int(c)) for i in range(n) for a, c in zip(rng.integers(0, 3, 3), rng.integers(0, 6, 3))})
    labels = pl.DataFrame([(i, a, c, "positive") for i, a, c in rows],
                          schema=["image_id", "attribute_id", "class_id", "state"], orient="row")
    v = root / "data" / key / "validated"
    write_table(images, v / "images.parquet", ImagesSchema)
    write_table(labels, v / "labels.parquet", LabelsSchema)
    write_table(tax, v / "taxonomy.parquet", TaxonomySchema)
    return labels


def test_stage_writes_tables_report_and_heatmap(tmp_path, monkeypatch):
    labels = _write_validated(tmp_path, "darn")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"cooccurrence": {"min_rate": 0.02, "heatmap_classes": 10}}))
    monkeypatch.chdir(tmp_path)
    assert main(["darn"]) == 0
    pairs = read_table(tmp_path / "data/darn/cooccurrence/pairs.parquet", CooccurrencePairsSchema)
    classes = read_table(tmp_path / "data/darn/cooccurrence/classes.parquet", CooccurrenceClassesSchema)
    rep = json.loads((tmp_path / "reports/darn/cooccurrence.json").read_text())
    png = (tmp_path / "reports/darn/cooccurrence.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert classes.height == 18 and rep["images"] == 300
    sets = labels.with_columns((pl.col("attribute_id") * 6 + pl.col("class_id")).alias("g")).group_by(
        "image_id").agg("g")["g"].to_list()
    want, _ = _brute([set(s) for s in sets])
    assert pairs.height == len(want) == rep["observed_pairs"]
    assert rep["selected_pairs"] == sum(1 for k in want.values() if k / 300 >= 0.02) == pairs["selected"].sum()
    assert rep["rate_range"][1] == pytest.approx(max(want.values()) / 300)
    assert rep["min_images"] == 6


def _load_script():
    spec = importlib.util.spec_from_file_location("cooccurrence_real", ROOT / "scripts" / "cooccurrence_real.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_reads_asen_label_lines_with_trailing_tabs(tmp_path):
    f = tmp_path / "label_valid.txt"
    f.write_bytes(b"0\t3\t226\t2\t254\t2\t268\t\t\t\r\n1\t3\t20\t5\t162\t\t\r\n2\t\t\r\n3\t3\t226\t2\t254\t\r\n")
    mod = _load_script()
    pos, n = mod.read_label_file(f)
    assert n == 4 and pos.height == 7
    res = mod.analyse(f, min_rate=0.5)
    assert res["top_pair"] == {"class_a": 226, "class_b": 254, "images": 2, "rate": 0.5}
    assert res["selected_pairs"] == 1 and res["selected_classes"] == 2
    f.write_text("0\t3\n")
    from datasets.errors import FormatError

    with pytest.raises(FormatError, match=":1:"):
        mod.read_label_file(f)


@pytest.mark.skipif(not REAL.exists(), reason=f"real ASEN DeepFashion labels not present at {REAL}")
def test_real_deepfashion_valid_labels():
    """ASEN's DeepFashion valid split (27,625 images): the rate range matches the [0, 0.033] of docs/PROTOCOL.md#deepfashion
    for the whole set, and the counts match a brute-force count of the file."""
    mod = _load_script()
    res = mod.analyse(REAL, min_rate=0.002)
    assert res["images"] == 27625
    assert 0.025 < res["rate_range"][1] < 0.04 and res["rate_range"][0] == 0.0
    assert 3.0 < res["labels_per_image"] < 4.0
    sets = []
    for line in REAL.read_text().splitlines():
        tok = line.split()
        if tok:
            sets.append({int(g) for g in tok[2::2]})
    want, _ = _brute(sets)
    assert res["observed_pairs"] == len(want)
    assert res["selected_pairs"] == sum(1 for k in want.values() if k / len(sets) >= 0.002) == 260
    assert res["selected_classes"] == 133
