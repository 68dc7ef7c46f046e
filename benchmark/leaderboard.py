"""Leaderboard stage: one dataset's models side by side, with chance, seed spread and significance.

    python -m benchmark.leaderboard <dataset>

Reads every ``data/<key>/eval/<model>/per_query.parquet`` that the evaluate stages wrote (and
the attention stages' ``data/<key>/attention/<model>/pointing.json``); writes ``reports/<key>/leaderboard.json``, a DVC metric:

- ``chance``: MAP@all / MAP@100 / Recall@100 of a uniformly random ranking of the same lists,
  its exact expectation (``benchmark.stats.expected_random_metrics``), in percent;
- ``attribute_blind``: the control of ``benchmark/control.py`` (each seed's trunk, pooled, one
  embedding for every attribute), summarised exactly as a model; ``control_pairs.<model>_vs_attribute_blind``:
  each model against it by the same nested test as the pairs below (seed k against seed k, which
  share trunk k), a check of each model on its own (as being above chance is), so unadjusted;
  ``above_control.<model>``: whether the model is better than the control, significantly at
  ``leaderboard.alpha``;
- ``queries``: test queries used and left out; ``candidates``: min and median ranked-list length;
- ``models.<model>``: the seeds, and per metric ``{mean, sd, low, high, seed_share}``: the mean
  over seeds of the overall (query-weighted) figure, its standard deviation across seeds, and the
  Student-t interval with training runs as the units of replication and queries nested in them
  (``benchmark.stats.nested_interval``; ``seed_share``: how much of its variance is the seeds');
  the pointing game with its Wilson interval and chance; MAP@all over multi-class queries
  (|S_q| >= 2) and single-class ones;
- ``pairs.<a>_vs_<b>``: MAP@all of a minus b on the shared test queries (seeds averaged), the
  nested t-test's p-value (seed k of a paired with seed k of b, which share trunk k;
  ``benchmark.stats.nested_difference_test``), its standard error, degrees of freedom and
  ``detectable``: the smallest difference it could call significant before Holm's adjustment;
  Holm's adjustment over all pairs of models of the dataset (one family; the control is not in
  it), and whether it is significant at ``leaderboard.alpha``.

Queries with no relevant candidate follow ``evaluate.no_relevant``, as every other figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmark.metrics import apply_no_relevant
from benchmark.params import load_params
from benchmark.stats import (expected_random_metrics, holm, nested_difference_test, nested_interval, nested_se,
                             student_t_ppf, wilson_interval)
from datasets import DATASETS, paths
from datasets.schemas import PerQuerySchema, read_table, write_json

METRICS = ("map_all", "map_100", "recall_100")
CONTROL = "attribute_blind"  # benchmark/control.py: evaluated as a model, reported beside chance


def _round(v):
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def _policy(values: np.ndarray, no_relevant: str) -> np.ndarray:
    """``evaluate.no_relevant`` applied to per-query values (benchmark.metrics.apply_no_relevant)."""
    return apply_no_relevant(torch.from_numpy(np.asarray(values, dtype=np.float64)), no_relevant).numpy()


def load_model_queries(eval_root: Path) -> dict[str, pl.DataFrame]:
    """Per model, its test rows of per_query.parquet (one row per seed and query)."""
    out = {}
    for d in sorted(p for p in eval_root.iterdir() if (p / "per_query.parquet").exists()):
        pq = read_table(d / "per_query.parquet", PerQuerySchema)
        out[d.name] = pq.filter(pl.col("split") == "test")
    return out


def seed_table(pq: pl.DataFrame, metric: str, no_relevant: str, keys: pl.DataFrame) -> tuple[list[int], np.ndarray]:
    """(seeds, (S, Q) table): per seed (ascending), the per-query values in the order of ``keys``
    (image_id, attribute_id), NaN where a query is left out or missing."""
    df = pq.with_columns(pl.Series(metric, _policy(pq[metric].to_numpy(), no_relevant)))
    seeds = sorted(int(s) for s in df["seed"].unique().to_list())
    rows = []
    for s in seeds:
        part = df.filter(pl.col("seed") == s).select(["image_id", "attribute_id", metric])
        g = keys.join(part, on=["image_id", "attribute_id"], how="left", maintain_order="left")
        rows.append(g[metric].fill_null(float("nan")).to_numpy().astype(np.float64))
    return seeds, np.vstack(rows)


def seed_summary(pq: pl.DataFrame, metric: str, no_relevant: str, ev: dict, keys: pl.DataFrame) -> dict:
    """{mean, sd, low, high, seed_share} in percent for one model and metric: the mean over seeds of
    the overall figure, its sd across seeds, and the interval of ``benchmark.stats.nested_interval``
    (seeds the units of replication, queries nested in them; ``seed_share``: the share of its
    variance that comes from the seed-to-seed spread)."""
    _, table = seed_table(pq, metric, no_relevant, keys)
    table = table[:, ~np.isnan(table).any(axis=0)]
    per_seed = table.mean(axis=1) * 100 if table.size else np.array([np.nan])
    lo, hi = nested_interval(table, float(ev.get("ci_level", 0.95)))
    _, _, _, share = nested_se(table)
    return {"mean": _round(per_seed.mean()), "sd": _round(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
            "low": _round(100 * lo), "high": _round(100 * hi), "seed_share": _round(share)}


def averaged(pq: pl.DataFrame, metric: str, no_relevant: str, keys: pl.DataFrame | None = None) -> np.ndarray:
    """Per-query values averaged over seeds, NaN where the query is left out; in the order of
    ``keys`` (image_id, attribute_id) when given, else sorted by query."""
    df = pq.with_columns(pl.Series(metric, _policy(pq[metric].to_numpy(), no_relevant)))
    g = df.group_by(["image_id", "attribute_id"]).agg(pl.col(metric).mean())
    if keys is None:
        g = g.sort(["attribute_id", "image_id"])
    else:
        g = keys.join(g, on=["image_id", "attribute_id"], how="left", maintain_order="left")
    return g[metric].fill_null(float("nan")).to_numpy().astype(np.float64)


def chance(pq: pl.DataFrame, no_relevant: str, k: int = 100) -> dict:
    q = pq.unique(["image_id", "attribute_id"]).sort(["attribute_id", "image_id"])
    e = expected_random_metrics(q["n_relevant"].to_numpy(), q["n_candidates"].to_numpy(), k=k)
    out = {}
    for name, key in (("map_all", "ap_all"), (f"map_{k}", f"ap@{k}"), (f"recall_{k}", f"recall@{k}")):
        v = _policy(e[key], no_relevant)
        v = v[~np.isnan(v)]
        out[name] = _round(100 * v.mean()) if v.size else None
    return out


def pointing(info: dict, level: float) -> dict | None:
    pg = (info or {}).get("pointing_game")
    if not pg or not pg.get("n"):
        return None
    hits = round(pg["accuracy"] * pg["n"] / 100)
    lo, hi = wilson_interval(hits, pg["n"], level)
    return {"accuracy": pg["accuracy"], "low": _round(100 * lo), "high": _round(100 * hi),
            "chance": pg.get("chance"), "n": pg["n"]}


def build(key: str, params: dict) -> dict:
    ev = params["evaluate"]
    lb = params["leaderboard"]
    no_relevant = ev.get("no_relevant", "leave_out")
    eval_root = paths.eval_dir(key, "x").parent
    by_model = load_model_queries(eval_root)
    if not by_model:
        raise SystemExit(f"leaderboard: no per_query.parquet under {eval_root}: run the evaluate stages first")
    first = next(iter(by_model.values()))
    queries = first.unique(["image_id", "attribute_id"]).sort(["attribute_id", "image_id"])
    n_used = int((queries["n_relevant"] > 0).sum()) if no_relevant == "leave_out" else queries.height
    result: dict = {
        "chance": chance(first, no_relevant),
        "queries": {"test": n_used, "test_left_out": queries.height - n_used},
        "candidates": {"min": int(queries["n_candidates"].min()), "median": float(queries["n_candidates"].median())},
        "models": {},
        "pairs": {},
    }
    keys = queries.select(["image_id", "attribute_id"])
    avg_ap, tables = {}, {}
    for model, pq in by_model.items():
        info_path = paths.attention_dir(key, model) / "pointing.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        m: dict = {"seeds": sorted(int(s) for s in pq["seed"].unique().to_list())}
        for metric in METRICS:
            m[metric] = seed_summary(pq, metric, no_relevant, ev, keys)
        pg = pointing(info, float(ev.get("ci_level", 0.95)))
        if pg is not None:
            m["pointing"] = pg
        for name, cond in (("multi_class_map_all", pl.col("n_labels") >= 2), ("single_class_map_all", pl.col("n_labels") == 1)):
            v = averaged(pq.filter(cond), "map_all", no_relevant)
            v = v[~np.isnan(v)]
            m[name] = _round(100 * v.mean()) if v.size else None
        if model == CONTROL:  # the attribute-blind control: a top-level entry shaped like a model's
            result[CONTROL] = m
        else:
            result["models"][model] = m
        avg_ap[model] = averaged(pq, "map_all", no_relevant, keys)
        tables[model] = seed_table(pq, "map_all", no_relevant, keys)
    result["above_control"] = {m: False for m in result["models"]}
    alpha = float(lb["alpha"])
    names = [m for m in by_model if m != CONTROL]
    pairs = list(itertools.combinations(names, 2))
    raw = [_pair(result["pairs"], a, b, avg_ap, tables, alpha) for a, b in pairs]
    for (a, b), p, pa in zip(pairs, raw, holm(raw)):  # one family: every pair of models of the dataset
        result["pairs"][f"{a}_vs_{b}"].update({"p": _round(p), "p_adjusted": _round(pa), "significant": bool(pa < alpha)})
    # each model against its own control: the model's own check (as "above chance" is), not a family
    result["control_pairs"] = {}
    if CONTROL in by_model:
        for m in names:
            p = _pair(result["control_pairs"], m, CONTROL, avg_ap, tables, alpha)
            d = result["control_pairs"][f"{m}_vs_{CONTROL}"]
            d.update({"p": _round(p), "significant": bool(p < alpha)})
            result["above_control"][m] = bool(d["significant"] and (d["delta"] or 0) > 0)
    return result


def _pair(out: dict, a: str, b: str, avg_ap: dict, tables: dict, alpha: float) -> float:
    """Write out[a_vs_b] (difference, queries, seeds, se, df, detectable) and return the nested test's p."""
    da, db = avg_ap[a], avg_ap[b]
    shared = ~np.isnan(da) & ~np.isnan(db)
    (sa, ta), (sb, tb) = tables[a], tables[b]
    common = sorted(set(sa) & set(sb))  # seed k of a against seed k of b: the same trunk on the twin profile
    ta, tb = ta[[sa.index(k) for k in common]], tb[[sb.index(k) for k in common]]
    p = nested_difference_test(ta, tb) if common else float("nan")
    _, se, df, _ = nested_se(ta - tb) if common else (None, float("nan"), float("nan"), None)
    detectable = student_t_ppf(1 - alpha / 2, df) * se if np.isfinite(se) and np.isfinite(df) and se > 0 else float("nan")
    out[f"{a}_vs_{b}"] = {"delta": _round(100 * (da[shared] - db[shared]).mean()) if shared.any() else None,
                          "queries": int(shared.sum()), "seeds": len(common), "se": _round(100 * se),
                          "df": _round(df), "detectable": _round(100 * detectable)}
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.leaderboard", description=__doc__.split("\n")[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    result = build(args.dataset, load_params(args.params))
    out = paths.leaderboard_path(args.dataset)
    write_json(out, result)
    sig = sum(p["significant"] for p in result["pairs"].values())
    print(f"{args.dataset}: {len(result['models'])} models, {result['queries']['test']} test queries, "
          f"chance MAP@all {result['chance']['map_all']}, {sig}/{len(result['pairs'])} pairs significant",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
