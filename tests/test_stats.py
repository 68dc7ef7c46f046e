"""The leaderboard's statistics against slow references: every ranking, every sign flip, the textbook loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.stats import expected_random_metrics, holm, paired_permutation_test, wilson_interval


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


def _exact_sign_flip_p(d: np.ndarray) -> float:
    obs = abs(d.mean())
    n = len(d)
    count = 0
    for signs in itertools.product((-1, 1), repeat=n):
        count += abs(np.dot(signs, d) / n) >= obs - 1e-12
    return count / 2 ** n


@pytest.mark.parametrize("seed", range(6))
def test_permutation_p_converges_to_the_exact_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = 10
    a = rng.random(n)
    b = a - rng.normal(0.15 * (seed % 3), 0.3, n)
    exact = _exact_sign_flip_p(a - b)
    B = 20000
    got = paired_permutation_test(a, b, B, seed=seed)
    sigma = math.sqrt(exact * (1 - exact) / B) + 1 / B
    assert abs(got - exact) <= 5 * sigma + 1 / B


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=40), st.integers(0, 100))
def test_permutation_p_is_symmetric_and_a_probability(pairs, seed):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    p_ab = paired_permutation_test(a, b, 500, seed)
    assert 0 < p_ab <= 1
    assert p_ab == paired_permutation_test(b, a, 500, seed)
    assert paired_permutation_test(a, a, 500, seed) == 1.0


def test_permutation_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(3)
    a = rng.random(1000)
    assert paired_permutation_test(a + 0.02, a + rng.normal(0, 0.01, 1000), 2000, seed=1) < 0.01
    null = [paired_permutation_test(a, a + np.random.default_rng(s).normal(0, 0.1, 1000), 500, seed=s)
            for s in range(40)]
    # under the null p is uniform: few of 40 fall below 0.05
    assert sum(p < 0.05 for p in null) <= 7


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
