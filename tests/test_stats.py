"""The leaderboard's statistics against slow references: every ranking, every sign flip, the textbook loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.stats import (expected_random_metrics, holm, nested_difference_test, nested_interval, nested_se,
                             student_t_cdf, student_t_ppf, wilson_interval)


def _metrics_of_positions(rel_positions: set[int], L: int, k: int) -> tuple[float, float, float]:
    """AP@all, AP@k, Recall@k of one ranked list whose relevant items sit at ``rel_positions`` (0-based)."""
    R = len(rel_positions)
    hits, s_all, s_k = 0, 0.0, 0.0
    for i in range(L):
        if i in rel_positions:
            hits += 1
            s_all += hits / (i + 1)
            if i < k:
                s_k += hits / (i + 1)
    return s_all / R, s_k / min(R, k), sum(p < k for p in rel_positions) / R


@pytest.mark.parametrize("L", range(1, 8))
def test_expected_random_metrics_equal_the_mean_over_every_ranking(L):
    for R in range(0, L + 1):
        for k in (1, 2, 3, 10):
            got = expected_random_metrics(np.array([R]), np.array([L]), k=k)
            if R == 0:
                assert all(math.isnan(v[0]) for v in got.values())
                continue
            # a random permutation puts the R relevant candidates on a uniformly random R-subset
            subsets = list(itertools.combinations(range(L), R))
            ref = np.mean([_metrics_of_positions(set(c), L, k) for c in subsets], axis=0)
            assert got["ap_all"][0] == pytest.approx(ref[0], abs=1e-12)
            assert got[f"ap@{k}"][0] == pytest.approx(ref[1], abs=1e-12)
            assert got[f"recall@{k}"][0] == pytest.approx(ref[2], abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 400), st.floats(0, 1)), min_size=1, max_size=20))
def test_expected_ap_lies_between_the_relevant_share_and_one(rows):
    L = np.array([r[0] for r in rows])
    R = np.maximum(1, np.round(np.array([r[1] for r in rows]) * L)).astype(int)
    ap = expected_random_metrics(R, L, k=100)
    share = R / L
    assert np.all(ap["ap_all"] >= share - 1e-12) and np.all(ap["ap_all"] <= 1 + 1e-12)
    assert np.all(ap["ap_all"][R == L] == pytest.approx(1.0))
    assert np.all((ap["recall@100"] <= 1 + 1e-12) & (ap["recall@100"] > 0))


def test_expected_metrics_reject_impossible_counts():
    with pytest.raises(ValueError):
        expected_random_metrics(np.array([5]), np.array([3]))
    with pytest.raises(ValueError):
        expected_random_metrics(np.array([0]), np.array([0]))


def _nested_reference(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, se, df) by explicit loops: the per-seed means over queries, the per-query means over
    seeds, their textbook sample variances; the seeds' degrees of freedom."""
    S, Q = len(x), len(x[0])
    seed_means = [sum(row) / Q for row in x]
    query_means = [sum(x[k][q] for k in range(S)) / S for q in range(Q)]
    grand = sum(seed_means) / S
    var_s = sum((m - grand) ** 2 for m in seed_means) / (S - 1)
    var_q = sum((m - grand) ** 2 for m in query_means) / (Q - 1)
    A, B = var_s / S, var_q / Q
    return grand, math.sqrt(A + B), S - 1


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.integers(2, 30), st.integers(0, 10_000))
def test_nested_se_matches_the_loops(S, Q, seed):
    x = np.random.default_rng(seed).normal(0.5, 0.2, (S, Q)) + np.random.default_rng(seed + 1).normal(0, 0.1, (S, 1))
    mean, se, df, share = nested_se(x)
    ref = _nested_reference(x.tolist())
    assert mean == pytest.approx(ref[0], abs=1e-12) and se == pytest.approx(ref[1], rel=1e-9)
    assert df == ref[2]
    assert 0 <= share <= 1


def test_nested_se_drops_left_out_queries_and_handles_one_seed():
    x = np.array([[0.2, np.nan, 0.4, 0.6], [0.3, 0.5, np.nan, 0.5]])
    mean, se, df, _ = nested_se(x)
    ref = _nested_reference([[0.2, 0.6], [0.3, 0.5]])
    assert (mean, se, df) == pytest.approx(ref)
    mean1, se1, df1, share1 = nested_se(np.array([[0.2, 0.4, 0.9]]))
    assert mean1 == pytest.approx(0.5) and se1 == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1) / math.sqrt(3))
    assert df1 == 2 and math.isnan(share1)


@settings(max_examples=60, deadline=None)
@given(st.floats(-30, 30), st.floats(0.5, 500))
def test_student_t_matches_scipy(t, df):
    import scipy.stats as scipy_stats  # the reference (scipy comes with the dev dependency scikit-learn)
    assert student_t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-10)
    q = min(max(scipy_stats.t.cdf(t, df), 1e-9), 1 - 1e-9)
    assert student_t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-6, abs=1e-6)


def _simulate(rng, n_sims: int, delta: float, S: int = 3, Q: int = 300):
    """Two models' (seeds, queries) AP tables as a benchmark run makes them: a query effect both share,
    a trunk effect per seed both share (paired), a large training-run effect per model and seed, and
    per-(model, seed, query) noise; model a is ``delta`` better."""
    for _ in range(n_sims):
        query = rng.normal(0.5, 0.2, Q)
        trunk = rng.normal(0, 0.02, (S, 1))
        a = query + trunk + rng.normal(0, 0.02, (S, 1)) + rng.normal(0, 0.1, (S, Q)) + delta
        b = query + trunk + rng.normal(0, 0.02, (S, 1)) + rng.normal(0, 0.1, (S, Q))
        yield a, b


def test_nested_test_holds_its_level_with_large_seed_variance_and_reports_its_power():
    """Equal models whose training runs differ far more than their queries' noise suggests: the
    nested test rejects at most alpha + its Monte Carlo error; a test over queries only (the per-query
    seed-averaged differences, the unit the old permutation test used) rejects far more often."""
    rng = np.random.default_rng(0)
    n, alpha = 2000, 0.05
    mc = 2 * math.sqrt(alpha * (1 - alpha) / n)
    p_nested, p_query = [], []
    for a, b in _simulate(rng, n, 0.0):
        p_nested.append(nested_difference_test(a, b))
        d = (a - b).mean(axis=0)
        t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
        p_query.append(2 * (1 - student_t_cdf(abs(t), len(d) - 1)))
    fpr = float(np.mean(np.array(p_nested) < alpha))
    fpr_query = float(np.mean(np.array(p_query) < alpha))
    power = {delta: float(np.mean([nested_difference_test(a, b) < alpha
                                   for a, b in _simulate(np.random.default_rng(1), 400, delta)]))
             for delta in (0.02, 0.05, 0.1)}
    print(f"\nnested test: false positives {fpr:.3f} (alpha {alpha}, MC +-{mc:.3f}); queries only: {fpr_query:.3f}; "
          f"power at a true difference of 2 / 5 / 10 points (seed sd 2.8 points): {power}")
    assert fpr <= alpha + mc
    assert fpr_query > 0.3  # why training runs must be the units: the query-only test finds differences that are not there
    assert power[0.1] > power[0.02] and power[0.1] >= 0.5


def test_nested_test_is_symmetric_and_finds_a_real_gap():
    rng = np.random.default_rng(4)
    a, b = next(_simulate(rng, 1, 0.3))
    p = nested_difference_test(a, b)
    assert p == pytest.approx(nested_difference_test(b, a)) and p < 0.01
    assert nested_difference_test(a, a) == 1.0
    lo, hi = nested_interval(a)
    assert lo < a.mean() < hi


def _holm_loop(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    adj = [0.0] * m
    prev = 0.0
    for rank, i in enumerate(order):
        prev = max(prev, min(1.0, (m - rank) * p[i]))
        adj[i] = prev
    return adj


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_holm_matches_the_textbook_loop_and_its_invariants(p):
    got = holm(p)
    assert got.tolist() == pytest.approx(_holm_loop(p))
    assert np.all(got >= np.array(p) - 1e-15) and np.all(got <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(got[order]) >= -1e-15)  # monotone in the raw p-values


def test_holm_keeps_nan_out_of_the_family():
    got = holm([0.01, float("nan"), 0.04])
    assert math.isnan(got[1]) and got[0] == pytest.approx(0.02) and got[2] == pytest.approx(0.04)


@pytest.mark.parametrize("hits, n", [(0, 10), (5, 10), (10, 10), (37, 200), (1, 3)])
def test_wilson_interval_solves_the_score_inequality(hits, n):
    lo, hi = wilson_interval(hits, n)
    z = 1.959963984540054
    phat = hits / n
    inside = lambda p: abs(phat - p) <= z * math.sqrt(p * (1 - p) / n) + 1e-12  # noqa: E731
    grid = np.linspace(0, 1, 20001)
    ok = [p for p in grid if inside(p)]
    assert lo == pytest.approx(min(ok), abs=1e-4) and hi == pytest.approx(max(ok), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
