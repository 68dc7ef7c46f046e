"""Statistics for the leaderboard: chance level, paired significance tests, Holm's correction.

Pure functions on numpy arrays (no polars, no files), each checked in tests against a slow,
obvious reference (enumeration of every ranking or every sign flip, the textbook loops).

- :func:`expected_random_metrics`: the exact expectation of AP@all, AP@k and Recall@k of a
  query whose ranked list is a uniformly random permutation: the "chance" row of a page. It
  depends only on the list length L and the number of relevant candidates R.
- :func:`nested_interval` and :func:`nested_difference_test`: the leaderboard's interval and
  pairwise test, with training runs (seeds) as the units of replication and queries nested in
  them: the standard error adds the spread of the per-seed means over seeds and the spread of
  the seed-averaged per-query values over queries, with the seeds' S - 1 degrees of freedom and
  Student's t (docs/PROTOCOL.md#leaderboard-chance-and-significance).
- :func:`student_t_cdf` / :func:`student_t_ppf`: Student's t, from the regularised incomplete beta.
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`wilson_interval`: the interval of a proportion (the pointing game's accuracy).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["expected_random_metrics", "holm", "wilson_interval", "nested_interval",
           "nested_difference_test", "student_t_cdf", "student_t_ppf"]


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


# ----------------------------------------------------------------- seeds as units of replication


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    x = df / (df + t * t)
    # P(T > |t|) = I_x(df/2, 1/2) / 2 = (1 - I_{1-x}(1/2, df/2)) / 2: the form whose argument is small
    tail = 0.5 * _betainc(df / 2.0, 0.5, x) if x < 0.5 else 0.5 * (1.0 - _betainc(0.5, df / 2.0, t * t / (df + t * t)))
    return 1.0 - tail if t > 0 else tail


def student_t_ppf(q: float, df: float) -> float:
    """The t with P(T <= t) = q (bisection on :func:`student_t_cdf`)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    lo, hi = -1.0, 1.0
    while student_t_cdf(lo, df) > q:
        lo *= 2.0
    while student_t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def nested_se(values: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, standard error, degrees of freedom, seed share) of the grand mean of a (seeds S, queries Q)
    table, seeds the units of replication and queries nested in them.

    With m_k the mean of seed k over the queries and y_q the mean of query q over the seeds,
    se^2 = A + B, A = var_k(m_k) / S (training runs: a rerun draws new seeds), B = var_q(y_q) / Q (the
    test queries: another test set draws new queries). Each estimates its own component plus a
    share of the seed-by-query noise, so se is slightly conservative. Degrees of freedom: S - 1,
    those of the seed component (conservative: se >= sqrt(A)). Welch-Satterthwaite's estimate,
    (A + B)^2 / (A^2 / (S - 1) + B^2 / (Q - 1)), grows exactly when A happens to come out small, and
    with 3 seeds it rejected 8.3% of equal pairs at 5% (tests/test_stats.py). With one seed A is
    unknown: se is sqrt(B), df = Q - 1 and the seed share NaN. Columns (queries) with a NaN are dropped."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"need a (seeds, queries) table, got shape {x.shape}")
    x = x[:, ~np.isnan(x).any(axis=0)]
    S, Q = x.shape
    if S == 0 or Q < 2:
        return float("nan"), float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    B = float(x.mean(axis=0).var(ddof=1)) / Q
    if S == 1:
        return mean, math.sqrt(B), float(Q - 1), float("nan")
    A = float(x.mean(axis=1).var(ddof=1)) / S
    se2 = A + B
    if se2 == 0.0:
        return mean, 0.0, float(S - 1), float("nan")
    return mean, math.sqrt(se2), float(S - 1), A / se2


def nested_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The two-sided Student-t interval of the grand mean of a (seeds, queries) table (:func:`nested_se`)."""
    mean, se, df, _ = nested_se(values)
    if not np.isfinite(se):
        return float("nan"), float("nan")
    if se == 0.0:
        return mean, mean
    half = student_t_ppf(0.5 + level / 2.0, df) * se
    return mean - half, mean + half


def nested_difference_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of mean(a - b) = 0 for two models' (seeds, queries) tables, seed k of one
    paired with seed k of the other (on the twin profile they share trunk k) and query q with q: the
    t-test of :func:`nested_se` on the table of differences. Seeds are the units of replication, so
    with S seeds a difference must stand out from the seed-to-seed spread of the differences."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two tables differ in shape: {a.shape} and {b.shape}")
    mean, se, df, _ = nested_se(a - b)
    if not np.isfinite(mean):
        return float("nan")
    if se == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return float(min(1.0, 2.0 * (1.0 - student_t_cdf(abs(mean) / se, df))))
