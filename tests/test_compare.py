"""`fashionbench compare` on two commits of a test repository, and its arithmetic against a slow reference.

The per-query files are written directly (synthetic, no pipeline run) in the evaluate stage's
committed format (reports/<key>/<model>/per_query.parquet, ``benchmark.query_report``).
Per-query AP = model mean + query effect + seed effect (the seed's trunk, shared by every model of
that seed, and the run's own) + noise: the structure the replication found (a rerun with other
seeds shifts every model of a dataset together).
"""

from __future__ import annotations

import io
import math
import subprocess

import numpy as np
import polars as pl
import pytest
import scipy.stats as scipy_stats  # the reference t distribution (scipy comes with scikit-learn, a dev dependency)

from benchmark import cli
from benchmark.compare import compare_metric, compare_sides
from benchmark.query_report import ReportPerQuerySchema, report_per_query
from datasets.schemas import write_table

DATASETS = {"alpha": 240, "beta": 180}  # test queries per dataset
MODELS = {"m_good": 0.55, "m_mid": 0.45, "m_low": 0.35}
SEEDS = [0, 1, 2]
TRUNK_SD, RUN_SD, NOISE_SD, QUERY_SD = 0.006, 0.004, 0.05, 0.15


def _query_effects(rng_seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rng_seed)
    return {k: rng.normal(0, QUERY_SD, q) for k, q in DATASETS.items()}


def synthetic(seeds, rng_seed: int, shift: dict | None = None) -> dict[tuple[str, str], pl.DataFrame]:
    """(dataset, model) -> the committed per-query table of one run of every model with ``seeds``;
    ``shift``: (dataset, model) -> added to that model's mean (a planted change)."""
    rng = np.random.default_rng(rng_seed)
    qeff = _query_effects()
    out = {}
    for key, q in DATASETS.items():
        trunk = {s: rng.normal(0, TRUNK_SD) for s in seeds}  # shared by the models of seed s
        for model, mu in MODELS.items():
            mu = mu + (shift or {}).get((key, model), 0.0)
            rows = []
            for s in seeds:
                ap = np.clip(mu + qeff[key] + trunk[s] + rng.normal(0, RUN_SD) + rng.normal(0, NOISE_SD, q), 0, 1)
                ap[:3] = np.nan  # queries with no relevant candidate
                rows.append(pl.DataFrame({"seed": [s] * q, "image_id": np.arange(q) + 1000,
                                          "attribute_id": np.arange(q) % 4, "map_all": ap,
                                          "map_100": np.clip(ap * 1.05, 0, 1), "recall_100": np.clip(ap + 0.2, 0, 1)}))
            out[(key, model)] = ReportPerQuerySchema.validate(pl.concat(rows))
    return out


def _write(root, tables) -> None:
    for (key, model), df in tables.items():
        write_table(df, root / "reports" / key / model / "per_query.parquet", ReportPerQuerySchema)


def _git(root, *args) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    (root / "params.yaml").write_text("evaluate:\n  no_relevant: leave_out\n  ci_level: 0.95\nleaderboard:\n  alpha: 0.05\n")
    _write(root, synthetic(SEEDS, 1))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "A")
    return root


def _commit(root, tables, msg) -> None:
    _write(root, tables)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", msg)


def test_a_planted_regression_is_reported_and_exits_1(repo, capsys, tmp_path):
    """Commit B retrains beta/m_mid with the same seeds and a mean 8 points lower (the other files
    unchanged): compare HEAD~1 HEAD names it as worse, and only it, and exits 1."""
    tables = synthetic(SEEDS, 2, shift={("beta", "m_mid"): -0.08})
    unchanged = {k: v for k, v in synthetic(SEEDS, 1).items() if k != ("beta", "m_mid")}
    _commit(repo, {**unchanged, ("beta", "m_mid"): tables[("beta", "m_mid")]}, "B: a regression")
    out_json = tmp_path / "cmp.json"
    rc = cli.main(["compare", "HEAD~1", "HEAD", "--repo", str(repo), "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "significantly worse after Holm: beta/m_mid map_all" in out
    assert "5 of them unchanged (the same file): not shown" in out and "alpha/m_mid" not in out
    import json

    r = json.loads(out_json.read_text())
    e = r["models"]["beta/m_mid"]["map_all"]
    assert e["verdict"] == "worse" and e["pairing"] == "seed" and e["delta"] == pytest.approx(-8, abs=1.5)
    assert e["low"] < e["delta"] < e["high"] < 0
    assert [n for n, m in r["models"].items() if m["map_all"]["significant"]] == ["beta/m_mid"]
    same = r["models"]["alpha/m_mid"]["map_all"]
    assert same["delta"] == 0 and same["p"] == 1 and same["verdict"] == "unchanged" and same["p_adjusted"] is None
    assert e["p_adjusted"] == e["p"]  # the unchanged files are not in Holm's family: only one hypothesis
    # the default: HEAD against the working tree, which equals HEAD
    assert cli.main(["compare", "--repo", str(repo)]) == 0
    # an improvement is reported and does not fail
    assert cli.main(["compare", "HEAD", "HEAD~1", "--repo", str(repo)]) == 0
    assert "better" in capsys.readouterr().out


def test_a_rerun_with_other_seeds_is_not_significant(repo, capsys):
    """Commit B reruns every model with seeds 3, 4, 5 (new trunks, same distribution): every shift
    stays within training variance, and the command exits 0."""
    _git(repo, "rm", "-q", "-r", "reports")
    _commit(repo, synthetic([3, 4, 5], 3), "B: a rerun with other seeds")
    rc = cli.main(["compare", "HEAD~1", "HEAD", "--repo", str(repo)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no model significantly worse on MAP@all" in out
    assert "significantly worse" not in out.replace("no model significantly worse", "")
    assert out.count("within training variance") == 3 * len(DATASETS) * len(MODELS)
    assert "3~3" in out  # other seeds: paired by order


def test_the_working_tree_is_read_and_a_model_only_on_one_side_is_listed(repo, capsys):
    tables = synthetic(SEEDS, 4, shift={("alpha", "m_good"): -0.1})
    _write(repo, {("alpha", "m_good"): tables[("alpha", "m_good")]})  # not committed
    _write(repo, {("alpha", "m_new"): tables[("alpha", "m_low")]})
    rc = cli.main(["compare", "--repo", str(repo)])
    out = capsys.readouterr().out
    assert rc == 1 and "alpha/m_good map_all" in out and "only in B: alpha/m_new" in out


def test_unreadable_inputs_exit_2_naming_them(repo, capsys):
    assert cli.main(["compare", "nosuchrev", "--repo", str(repo)]) == 2
    assert "nosuchrev: not a commit" in capsys.readouterr().err
    bad = repo / "reports" / "alpha" / "m_low" / "per_query.parquet"
    bad.write_bytes(b"not parquet")
    _git(repo, "commit", "-q", "-am", "broken")
    assert cli.main(["compare", "HEAD~1", "HEAD", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert ":reports/alpha/m_low/per_query.parquet: not a readable parquet file" in err
    df = pl.DataFrame({"seed": [0], "image_id": [1], "attribute_id": [0], "map_all": [1.5], "map_100": [0.1],
                       "recall_100": [0.1]})
    df.write_parquet(bad)
    assert cli.main(["compare", "HEAD~1", "--repo", str(repo)]) == 2
    assert str(bad) in capsys.readouterr().err
    # a commit from before the evaluate stage wrote the file
    empty = repo.parent / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    _git(empty, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x")
    assert cli.main(["compare", "--repo", str(empty)]) == 2
    assert "HEAD: no reports/<key>/<model>/per_query.parquet" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the arithmetic, by hand

def _reference(a: pl.DataFrame, b: pl.DataFrame, metric: str, level: float, no_relevant: str):
    """The nested test written out with loops and dicts: queries of both sides, seeds paired by
    value where the sets agree, else by rank; a query dropped where any paired seed has no value."""
    va = {(s, i, t): v for s, i, t, v in a.select("seed", "image_id", "attribute_id", metric).iter_rows()}
    vb = {(s, i, t): v for s, i, t, v in b.select("seed", "image_id", "attribute_id", metric).iter_rows()}
    fix = (lambda v: 0.0 if math.isnan(v) else v) if no_relevant == "zero" else (lambda v: v)
    sa, sb = sorted({k[0] for k in va}), sorted({k[0] for k in vb})
    if sa != sb:
        n = min(len(sa), len(sb))
        sa, sb = sa[:n], sb[:n]
    queries = sorted({k[1:] for k in va} & {k[1:] for k in vb})
    d = {}
    for q in queries:
        row = []
        for x, y in zip(sa, sb):
            u = fix(va[(x, *q)]) if (x, *q) in va else float("nan")  # a query missing from a seed stays missing
            w = fix(vb[(y, *q)]) if (y, *q) in vb else float("nan")
            row.append(w - u)
        if not any(math.isnan(v) for v in row):
            d[q] = row
    S, Q = len(sa), len(d)
    seed_means = [sum(d[q][k] for q in d) / Q for k in range(S)]
    query_means = [sum(d[q]) / S for q in d]
    grand = sum(query_means) / Q

    def var(xs):
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    se = math.sqrt(var(seed_means) / S + var(query_means) / Q)
    df = S - 1
    p = 2 * scipy_stats.t.sf(abs(grand) / se, df)
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * se
    return {"delta": 100 * grand, "low": 100 * (grand - half), "high": 100 * (grand + half), "p": p, "queries": Q,
            "se": 100 * se, "seeds": S}


def _random_side(rng, seeds, n_images=30, nan_share=0.1, drop=0.1):
    rows = []
    for s in seeds:
        for i in range(n_images):
            for t in range(2):
                if rng.random() < drop:  # a query missing at this revision (split changed)
                    continue
                v = rng.random() if rng.random() > nan_share else float("nan")
                rows.append((s, i, t, v, v, v))
    df = pl.DataFrame(rows, schema=["seed", "image_id", "attribute_id", "map_all", "map_100", "recall_100"], orient="row")
    return ReportPerQuerySchema.validate(df)


@pytest.mark.parametrize("case", range(12))
def test_compare_metric_matches_a_slow_reference(case):
    rng = np.random.default_rng(100 + case)
    seeds_a = [[0, 1, 2], [0, 1, 2, 5], [4, 9]][case % 3]
    seeds_b = [[0, 1, 2], [3, 4, 5], [1, 2, 3, 4]][case % 3]
    a, b = _random_side(rng, seeds_a), _random_side(rng, seeds_b)
    for no_relevant in ("leave_out", "zero"):
        got = compare_metric(a, b, "map_all", no_relevant, level=0.9, alpha=0.05)
        ref = _reference(a, b, "map_all", 0.9, no_relevant)
        assert got["queries"] == ref["queries"]
        assert len(got["seeds_a"]) == len(got["seeds_b"]) == ref["seeds"]
        for k in ("delta", "low", "high", "se"):
            assert got[k] == pytest.approx(ref[k], abs=2e-4), k
        assert got["p"] == pytest.approx(ref["p"], abs=2e-4)
        assert got["pairing"] == ("seed" if seeds_a == seeds_b else "order")


def test_holm_over_each_metric_and_one_seed_rows_are_untested():
    """Holm's adjustment, written out: sort, multiply by the remaining count, running maximum."""
    rng = np.random.default_rng(5)
    a = {("d", f"m{i}"): _random_side(rng, [0, 1, 2], drop=0) for i in range(4)}
    b = {("d", f"m{i}"): _random_side(rng, [0, 1, 2], drop=0) for i in range(4)}
    a[("d", "single")] = _random_side(rng, [0], drop=0)
    b[("d", "single")] = _random_side(rng, [0], drop=0)
    r = compare_sides(a, b, alpha=0.05)
    for metric in r["metrics"]:
        tested = {n: e[metric] for n, e in r["models"].items() if e[metric]["tested"]}
        assert set(tested) == {f"d/m{i}" for i in range(4)}
        order = sorted(tested, key=lambda n: tested[n]["p"])
        running = 0.0
        for rank, n in enumerate(order):
            running = max(running, min(1.0, (len(order) - rank) * tested[n]["p"]))
            assert tested[n]["p_adjusted"] == pytest.approx(running, abs=1e-3)
        single = r["models"]["d/single"][metric]
        assert single["verdict"] == "untested (one seed)" and single["p_adjusted"] is None and not single["significant"]


def test_false_alarms_of_reruns_stay_near_alpha():
    """60 simulated reruns with other seeds (the same distribution): the share of reruns with any
    model flagged (family-wise, after Holm) stays at or below alpha, up to sampling error."""
    alarms = 0
    for rep in range(60):
        a = synthetic([0, 1, 2], 1000 + rep)
        b = synthetic([3, 4, 5], 2000 + rep)
        r = compare_sides(a, b, metrics=("map_all",))
        alarms += any(e["map_all"]["significant"] for e in r["models"].values())
    assert alarms <= 8  # alpha 0.05: 3 expected; P(Binomial(60, 0.05) > 8) < 0.01


def test_the_committed_file_is_small():
    """The budget: 27 models (8 per dataset and the control) x 3 seeds x the default twins' test
    queries (DeepFashion 1,395, FashionAI 1,028, DARN 2,413) under 5 MB."""
    rng = np.random.default_rng(0)
    total = 0
    for q in (1395, 1028, 2413):
        ap = rng.beta(1.2, 2.0, size=(3, q))
        df = pl.DataFrame({"seed": np.repeat([0, 1, 2], q), "split": "test",
                           "image_id": np.tile(rng.choice(20000, q, replace=False), 3),
                           "attribute_id": np.tile(np.sort(rng.integers(0, 8, q)), 3), "map_all": ap.ravel(),
                           "map_100": np.minimum(1, ap.ravel() * 1.02), "recall_100": rng.random(3 * q)})
        small = ReportPerQuerySchema.validate(report_per_query(df))
        assert small.schema["recall_100"] == pl.Float32 and small.height == 3 * q
        buf = io.BytesIO()
        small.write_parquet(buf)
        total += 9 * len(buf.getvalue())
    assert total < 5e6, total
