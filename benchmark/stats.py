"""Statistics for the leaderboard: chance level, paired significance tests, Holm's correction.

Pure functions on numpy arrays (no polars, no files), each checked in tests against a slow,
obvious reference (enumeration of every ranking or every sign flip, the textbook loops).

- :func:`expected_random_metrics`: the exact expectation of AP@all, AP@k and Recall@k of a
  query whose ranked list is a uniformly random permutation: the "chance" row of a page. It
  depends only on the list length L and the number of relevant candidates R.
- :func:`paired_permutation_test`: two-sided sign-flip permutation test of the mean of paired
  per-query differences (two models on the same queries).
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`wilson_interval`: the interval of a proportion (the pointing game's accuracy).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["expected_random_metrics", "paired_permutation_test", "holm", "wilson_interval"]


def expected_random_metrics(n_relevant: np.ndarray, n_candidates: np.ndarray, k: int | None = None) -> dict:
    """Per query: E[AP@all], E[AP@k], E[Recall@k] of a uniformly random ranking; NaN where R = 0.

    Position i (1-based) holds a relevant candidate with probability R/L; given that, the other
    i - 1 positions above it hold (i - 1)(R - 1)/(L - 1) relevant ones on average, so
    E[P@i rel_i] = (R/L) (1 + (i - 1)(R - 1)/(L - 1)) / i, and AP@k divides the sum over i <= k
    by min(R, k) (AP@all: k = L). Recall@k = min(k, L)/L in expectation.
    """
    R = np.asarray(n_relevant, dtype=np.float64).reshape(-1)
    L = np.asarray(n_candidates, dtype=np.float64).reshape(-1)
    if R.shape != L.shape:
        raise ValueError(f"n_relevant {R.shape} and n_candidates {L.shape} differ")
    if np.any(L < 1) or np.any(R < 0) or np.any(R > L):
        raise ValueError("need 1 <= L and 0 <= R <= L for every query")

    top = int(L.max()) if L.size else 0
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])  # H_0 .. H_top

    def partial(m: np.ndarray) -> np.ndarray:
        # sum over i = 1..m of (1 + (i - 1) q) / i = H_m (1 - q) + m q, q = (R - 1)/(L - 1)
        q = np.where(L > 1, (R - 1) / np.maximum(L - 1, 1), 0.0)
        return harmonic[m.astype(np.int64)] * (1 - q) + m * q

    with np.errstate(invalid="ignore", divide="ignore"):
        ap_all = np.where(R > 0, partial(L) / L, np.nan)
        out = {"ap_all": ap_all}
        if k is not None:
            m = np.minimum(L, k)
            out[f"ap@{k}"] = np.where(R > 0, (R / L) * partial(m) / np.minimum(R, k), np.nan)
            out[f"recall@{k}"] = np.where(R > 0, m / L, np.nan)
    return out


def paired_permutation_test(a: np.ndarray, b: np.ndarray, n_permutations: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of mean(a - b) = 0 by random sign flips of the paired differences.

    p = (1 + #{flips with |mean| >= |observed mean|}) / (1 + n_permutations): never 0, exact in
    the limit; the same seed gives the same p on every machine. NaN pairs are dropped.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return float("nan")
    observed = abs(d.mean())
    if np.all(d == 0):
        return 1.0
    rng = np.random.default_rng(seed)
    hits = 0
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    block = max(1, (1 << 22) // n)
    done = 0
    while done < n_permutations:
        m = min(block, n_permutations - done)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1  # (m, n) of +-1
        means = np.abs(signs @ d) / n
        hits += int((means >= observed - tol).sum())
        done += m
    return (1 + hits) / (1 + n_permutations)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input's order; NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def wilson_interval(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion hits/n, as fractions; (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    phat = hits / n
    den = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / den
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)
