"""The leaderboard stage on per-query tables written in the evaluate stage's format."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import yaml

from benchmark import leaderboard
from benchmark.stats import expected_random_metrics, nested_interval
from datasets.schemas import PerQuerySchema, write_table

N_QUERIES = 300


def _per_query(rng, quality: float, seeds=(0, 1, 2)) -> pl.DataFrame:
    """Per-query AP that grows with ``quality``; the same queries (and list sizes) for every model."""
    q = np.arange(N_QUERIES)
    lists = np.random.default_rng(0)
    n_cand = lists.integers(200, 260, N_QUERIES)
    n_rel = lists.integers(0, 20, N_QUERIES)
    n_labels = 1 + (q % 3 == 0)
    rows = []
    for s in seeds:
        ap = np.clip(quality + rng.normal(0, 0.05, N_QUERIES), 0, 1)
        ap = np.where(n_rel == 0, np.nan, ap)
        rows.append(pl.DataFrame({"seed": np.full(N_QUERIES, s), "split": ["test"] * N_QUERIES,
                                  "ranking": ["attribute"] * N_QUERIES, "image_id": q // 2, "attribute_id": q % 2,
                                  "cooccurring": q % 5 == 0, "n_relevant": n_rel, "n_candidates": n_cand,
                                  "n_labels": n_labels, "map_all": ap, "map_100": ap, "recall_100": ap}))
        # a val row per seed that the leaderboard must ignore
        rows.append(rows[-1].head(3).with_columns(pl.lit("val").alias("split"), pl.lit(1.0).alias("map_all")))
    return pl.concat(rows)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    tables = {}
    for model, quality in (("good", 0.6), ("twin_of_good", 0.6), ("bad", 0.3), ("attribute_blind", 0.5)):
        d = tmp_path / "data" / "fashionai" / "eval" / model
        d.mkdir(parents=True)
        tables[model] = _per_query(rng, quality)
        write_table(tables[model], d / "per_query.parquet", PerQuerySchema)
        info = {"pointing_game": {"accuracy": 25.0, "n": 40, "chance": 10.0}} if model == "good" else {"pointing_game": None}
        a = tmp_path / "data" / "fashionai" / "attention" / model
        a.mkdir(parents=True)
        (a / "pointing.json").write_text(json.dumps(info))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "evaluate": {"bootstrap": 300, "bootstrap_seed": 3, "ci_level": 0.95, "no_relevant": "leave_out"},
        "leaderboard": {"alpha": 0.05}}))
    return tmp_path, tables


def test_leaderboard_contract_and_values(tree):
    root, tables = tree
    assert leaderboard.main(["fashionai"]) == 0
    lb = json.loads((root / "reports" / "fashionai" / "leaderboard.json").read_text())
    t = tables["good"].filter(pl.col("split") == "test")
    n_rel = t.filter(pl.col("seed") == 0)["n_relevant"].to_numpy()
    assert lb["queries"] == {"test": int((n_rel > 0).sum()), "test_left_out": int((n_rel == 0).sum())}
    n_cand = t.filter(pl.col("seed") == 0)["n_candidates"].to_numpy()
    assert lb["candidates"] == {"min": int(n_cand.min()), "median": float(np.median(n_cand))}
    # chance: the exact expectation, averaged over the used queries
    e = expected_random_metrics(n_rel, n_cand, k=100)
    assert lb["chance"]["map_all"] == pytest.approx(100 * np.nanmean(e["ap_all"]), abs=1e-3)
    assert lb["chance"]["recall_100"] == pytest.approx(100 * np.nanmean(e["recall@100"]), abs=1e-3)
    g = lb["models"]["good"]
    assert g["seeds"] == [0, 1, 2]
    per_seed = [100 * np.nanmean(t.filter(pl.col("seed") == s)["map_all"].to_numpy()) for s in (0, 1, 2)]
    assert g["map_all"]["mean"] == pytest.approx(np.mean(per_seed), abs=1e-3)
    assert g["map_all"]["sd"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-3)
    # the interval: seeds the units of replication, queries nested (the slow reference: tests/test_stats.py)
    table = np.vstack([t.filter(pl.col("seed") == s).sort(["attribute_id", "image_id"])["map_all"].to_numpy()
                       for s in (0, 1, 2)])
    lo, hi = nested_interval(table)
    assert (g["map_all"]["low"], g["map_all"]["high"]) == pytest.approx((100 * lo, 100 * hi), abs=1e-3)
    assert g["map_all"]["low"] < g["map_all"]["mean"] < g["map_all"]["high"]
    assert 0 <= g["map_all"]["seed_share"] <= 1
    # the attribute-blind control: top level, shaped like a model, tested against every model
    c = lb["attribute_blind"]
    assert "attribute_blind" not in lb["models"] and c["seeds"] == [0, 1, 2]
    assert c["map_all"]["mean"] == pytest.approx(50, abs=2) and set(c["map_all"]) == set(g["map_all"])
    assert lb["above_control"] == {"good": True, "twin_of_good": True, "bad": False}
    cp = lb["control_pairs"]
    assert set(cp) == {"good_vs_attribute_blind", "twin_of_good_vs_attribute_blind", "bad_vs_attribute_blind"}
    assert cp["good_vs_attribute_blind"]["delta"] == pytest.approx(10, abs=2) and cp["good_vs_attribute_blind"]["significant"]
    assert cp["bad_vs_attribute_blind"]["delta"] < 0 and cp["bad_vs_attribute_blind"]["significant"]
    multi = t.filter(pl.col("n_labels") >= 2).group_by(["image_id", "attribute_id"]).agg(pl.col("map_all").mean())
    assert g["multi_class_map_all"] == pytest.approx(100 * np.nanmean(multi["map_all"].to_numpy()), abs=1e-3)
    assert g["pointing"]["accuracy"] == 25.0 and g["pointing"]["low"] < 25 < g["pointing"]["high"]
    assert "pointing" not in lb["models"]["bad"]
    # pairs: every pair once, Holm-adjusted; a real gap is significant, a tie is not
    assert set(lb["pairs"]) == {"bad_vs_good", "bad_vs_twin_of_good", "good_vs_twin_of_good"}  # Holm's family
    assert lb["pairs"]["bad_vs_good"]["seeds"] == 3 and lb["pairs"]["bad_vs_good"]["detectable"] > 0
    bg = lb["pairs"]["bad_vs_good"]
    assert bg["delta"] == pytest.approx(-30, abs=2) and bg["significant"] and bg["p_adjusted"] >= bg["p"]
    assert not lb["pairs"]["good_vs_twin_of_good"]["significant"]
    assert all(lb["models"][m]["map_all"]["low"] > lb["chance"]["map_all"] for m in lb["models"])


def test_zero_policy_counts_every_query(tree):
    root, _ = tree
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["evaluate"]["no_relevant"] = "zero"
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    leaderboard.main(["fashionai"])
    lb = json.loads((root / "reports" / "fashionai" / "leaderboard.json").read_text())
    assert lb["queries"] == {"test": N_QUERIES, "test_left_out": 0}
    assert lb["models"]["good"]["map_all"]["mean"] < 60  # the R = 0 queries (AP = 0) pull the mean down


def test_no_evaluations_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "darn" / "eval").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"bootstrap": 10, "bootstrap_seed": 1},
                                                          "leaderboard": {"alpha": 0.05}}))
    with pytest.raises(SystemExit, match="run the evaluate stages first"):
        leaderboard.main(["darn"])
