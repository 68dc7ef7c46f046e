"""benchmark.metrics against a slow float64 reference, sklearn, and the properties AP must have."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.metrics import aggregate, bootstrap_ci, retrieval_metrics

torch.set_num_threads(1)


def reference(scores, rel, valid=None, k=None):
    """Obvious per-query AP / recall: sort by (-score, index), loop over ranks, float64."""
    n = len(scores)
    cand = [i for i in range(n) if valid is None or valid[i]]
    order = sorted(cand, key=lambda i: (-float(scores[i]), i))
    R = sum(1 for i in order if rel[i])
    if R == 0:
        return math.nan, math.nan
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if k is not None and rank > k:
            break
        if rel[i]:
            hits += 1
            total += hits / rank
    return total / (R if k is None else min(R, k)), hits / R


def close(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15, equal_nan=True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_valid", [False, True])
def test_matches_reference_with_ties(seed, with_valid):
    g = torch.Generator().manual_seed(seed)
    Q, C = 9, 40
    scores = torch.randint(-3, 4, (Q, C), generator=g).float()  # many ties
    scores[0, :5] = float("-inf")
    rel = torch.rand(Q, C, generator=g) < 0.25
    rel[1] = False  # R = 0 -> NaN
    valid = torch.rand(Q, C, generator=g) < 0.7 if with_valid else None
    ks = (1, 5, 25, 1000)
    out = retrieval_metrics(scores, rel, ks=ks, valid=valid, chunk_size=4)
    for q in range(Q):
        v = None if valid is None else valid[q].tolist()
        ap, _ = reference(scores[q].tolist(), rel[q].tolist(), v)
        close(out["ap_all"][q], ap)
        for k in ks:
            apk, rk = reference(scores[q].tolist(), rel[q].tolist(), v, k)
            close(out[f"ap@{k}"][q], apk)
            close(out[f"recall@{k}"][q], rk)
    assert torch.isnan(out["ap_all"][1])
    assert out["ap_all"].dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.float16])
def test_other_dtypes_match_reference(dtype):
    g = torch.Generator().manual_seed(3)
    base = torch.randint(-20, 20, (6, 50), generator=g)
    scores = base.to(dtype) if dtype != torch.float64 else base.double() / 7 + 1e-12 * torch.rand(6, 50, generator=g, dtype=torch.float64)
    rel = torch.rand(6, 50, generator=g) < 0.3
    out = retrieval_metrics(scores, rel, ks=(10,))
    for q in range(6):
        close(out["ap_all"][q], reference(scores[q].double().tolist(), rel[q].tolist())[0])
        close(out["ap@10"][q], reference(scores[q].double().tolist(), rel[q].tolist(), k=10)[0])


def test_matches_sklearn_on_distinct_scores():
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 300, generator=g)
    rel = torch.rand(20, 300, generator=g) < 0.1
    rel[:, 0] = True
    out = retrieval_metrics(scores, rel)
    expected = [sklearn.average_precision_score(rel[q].numpy(), scores[q].numpy()) for q in range(20)]
    close(out["ap_all"], expected)


def test_chunked_equals_unchunked_exactly():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 10, (37, 64), generator=g).float() + (torch.rand(37, 64, generator=g) < 0.5) * torch.rand(37, 64, generator=g)
    rel = torch.rand(37, 64, generator=g) < 0.2
    valid = torch.rand(37, 64, generator=g) < 0.8
    a = retrieval_metrics(scores, rel, ks=(3, 10), valid=valid, chunk_size=1)
    b = retrieval_metrics(scores, rel, ks=(3, 10), valid=valid, chunk_size=5)
    c = retrieval_metrics(scores, rel, ks=(3, 10), valid=valid)
    for key in a:
        assert torch.equal(a[key].nan_to_num(-1), b[key].nan_to_num(-1))
        assert torch.equal(a[key].nan_to_num(-1), c[key].nan_to_num(-1))


def test_nan_scores_rejected_but_allowed_outside_the_list():
    s = torch.tensor([[0.1, float("nan"), 0.3]])
    rel = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError):
        retrieval_metrics(s, rel)
    out = retrieval_metrics(s, rel, valid=torch.tensor([[True, False, True]]))
    close(out["ap_all"], [1.0])


def test_invalid_candidates_do_not_count_even_with_inf_scores():
    s = torch.tensor([[float("-inf"), float("-inf"), 5.0, float("inf")]])
    rel = torch.tensor([[True, False, False, True]])
    valid = torch.tensor([[True, True, True, False]])
    out = retrieval_metrics(s, rel, ks=(2,), valid=valid)
    # list: idx2 (5.0), idx0 (-inf, relevant), idx1 (-inf); R = 1 (idx3 is outside the list)
    close(out["ap_all"], [1 / 2])
    close(out["recall@2"], [1.0])


# ---------------------------------------------------------------- properties (hypothesis)

def _case(draw, distinct=False):
    C = draw(st.integers(1, 30))
    if distinct:
        scores = draw(st.permutations(list(range(C))))
        scores = [float(x) for x in scores]
    else:
        scores = draw(st.lists(st.integers(-4, 4), min_size=C, max_size=C))
    rel = draw(st.lists(st.booleans(), min_size=C, max_size=C))
    return torch.tensor(scores, dtype=torch.float32), torch.tensor(rel)


@st.composite
def cases(draw, distinct=False):
    return _case(draw, distinct)


def _ap(s, r, **kw):
    return retrieval_metrics(s.unsqueeze(0), r.unsqueeze(0), **kw)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_ap_bounds_and_perfect_ranking(case):
    s, r = case
    ap = _ap(s, r)["ap_all"][0].item()
    if not r.any():
        assert math.isnan(ap)
        return
    assert 0.0 <= ap <= 1.0
    perfect = bool(s[r].min() > s[~r].max()) if (~r).any() else True
    order = sorted(range(len(s)), key=lambda i: (-s[i].item(), i))
    top = [bool(r[i]) for i in order[: int(r.sum())]]
    assert (ap == 1.0) == all(top)
    if perfect:
        assert ap == 1.0


@settings(max_examples=40, deadline=None)
@given(cases(distinct=True), st.randoms(use_true_random=False))
def test_invariant_to_candidate_permutation_and_monotone_transform(case, rnd):
    s, r = case
    base = _ap(s, r, ks=(3,))
    perm = list(range(len(s)))
    rnd.shuffle(perm)
    p = torch.tensor(perm)
    permuted = _ap(s[p], r[p], ks=(3,))
    transformed = _ap(torch.exp(s / 10) * 5 - 2, r, ks=(3,))
    for key in base:
        close(permuted[key], base[key])
        close(transformed[key], base[key])


@settings(max_examples=40, deadline=None)
@given(cases())
def test_integer_transform_keeps_ties(case):
    s, r = case
    a, b = _ap(s, r, ks=(4,)), _ap(s * 3 + 1, r, ks=(4,))
    for key in a:
        close(a[key], b[key])


@settings(max_examples=60, deadline=None)
@given(cases(), st.data())
def test_moving_a_relevant_candidate_up_never_lowers_ap(case, data):
    s, r = case
    if not r.any():
        return
    i = data.draw(st.sampled_from(torch.nonzero(r).flatten().tolist()))
    boost = data.draw(st.integers(1, 10))
    s2 = s.clone()
    s2[i] += boost
    a, b = _ap(s, r, ks=(5,)), _ap(s2, r, ks=(5,))
    assert b["ap_all"][0] >= a["ap_all"][0] - 1e-15
    assert b["ap@5"][0] >= a["ap@5"][0] - 1e-15
    assert b["recall@5"][0] >= a["recall@5"][0]


@settings(max_examples=40, deadline=None)
@given(cases())
def test_recall_non_decreasing_in_k(case):
    s, r = case
    ks = (1, 2, 3, 5, 8, 13, 40)
    out = _ap(s, r, ks=ks)
    if not r.any():
        return
    rec = [out[f"recall@{k}"][0].item() for k in ks]
    assert rec == sorted(rec)
    assert rec[-1] == 1.0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 25), st.integers(0, 2**31 - 1), st.integers(1, 4))
def test_batch_equals_single_queries_and_chunking(Q, C, seed, chunk):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 5, (Q, C), generator=g).float()
    r = torch.rand(Q, C, generator=g) < 0.4
    batch = retrieval_metrics(s, r, ks=(3,), chunk_size=chunk)
    singles = torch.cat([_ap(s[q], r[q])["ap_all"] for q in range(Q)])
    assert torch.equal(batch["ap_all"].nan_to_num(-1), singles.nan_to_num(-1))
    ok = ~torch.isnan(singles)
    if ok.any():
        close(batch["ap_all"][ok].mean(), singles[ok].mean())


# ---------------------------------------------------------------- aggregate / bootstrap

def test_aggregate_percentages_macro_and_counts():
    per = {
        "ap_all": torch.tensor([0.5, 1.0, math.nan, 0.25, math.nan], dtype=torch.float64),
        "recall@100": torch.tensor([1.0, 1.0, math.nan, 0.5, math.nan], dtype=torch.float64),
    }
    attr = torch.tensor([0, 0, 1, 2, 3])
    agg = aggregate(per, attr, ["a", "b", "c", "d"])
    assert agg["queries"] == {"used": 3, "left_out": 2, "no_relevant": 2}
    ap = agg["ap_all"]
    assert ap["overall"] == pytest.approx((0.5 + 1.0 + 0.25) / 3 * 100)
    assert ap["a"] == pytest.approx(75.0) and ap["c"] == pytest.approx(25.0)
    assert "b" not in ap and "d" not in ap
    assert ap["macro"] == pytest.approx(50.0)
    assert agg["recall@100"]["c"] == pytest.approx(50.0)


def test_aggregate_all_nan_is_nan_not_error():
    agg = aggregate({"ap_all": torch.full((3,), math.nan, dtype=torch.float64)}, torch.zeros(3, dtype=torch.long), ["x"])
    assert math.isnan(agg["ap_all"]["overall"]) and math.isnan(agg["ap_all"]["macro"])
    assert agg["queries"] == {"used": 0, "left_out": 3, "no_relevant": 3}


def _asen_style_map(ap: list[float], attr: list[int], names: list[str]) -> dict:
    """ASEN's evaluation, written out: a query without a relevant candidate scores 0 and every
    mean divides by all of the attribute's (or all) queries."""
    vals = [0.0 if math.isnan(v) else v for v in ap]
    per = {}
    for a, name in enumerate(names):
        mine = [v for v, q in zip(vals, attr) if q == a]
        if mine:
            per[name] = 100 * sum(mine) / len(mine)
    return {"overall": 100 * sum(vals) / len(vals), "macro": sum(per.values()) / len(per), **per}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.just(math.nan), st.floats(0, 1)), st.integers(0, 3)), min_size=1, max_size=30))
def test_aggregate_zero_policy_matches_asen_loop(rows):
    ap = [r[0] for r in rows]
    attr = [r[1] for r in rows]
    names = ["a", "b", "c", "d"]
    agg = aggregate({"ap_all": torch.tensor(ap, dtype=torch.float64)}, torch.tensor(attr), names, no_relevant="zero")
    ref = _asen_style_map(ap, attr, names)
    assert set(agg["ap_all"]) == set(ref)
    for k, v in ref.items():
        assert agg["ap_all"][k] == pytest.approx(v, abs=1e-9)
    n_nan = sum(math.isnan(v) for v in ap)
    assert agg["queries"] == {"used": len(ap), "left_out": 0, "no_relevant": n_nan}
    # the default leaves them out: its overall is the mean over answerable queries only
    lo = aggregate({"ap_all": torch.tensor(ap, dtype=torch.float64)}, torch.tensor(attr), names)
    assert lo["queries"] == {"used": len(ap) - n_nan, "left_out": n_nan, "no_relevant": n_nan}
    if n_nan and n_nan < len(ap):
        assert lo["ap_all"]["overall"] >= agg["ap_all"]["overall"] - 1e-9


def test_no_relevant_policy_rejects_unknown():
    with pytest.raises(ValueError, match="no_relevant"):
        aggregate({"ap_all": torch.zeros(2, dtype=torch.float64)}, torch.zeros(2, dtype=torch.long), ["x"],
                  no_relevant="skip")


def test_bootstrap_ci_seeded_and_sensible():
    g = torch.Generator().manual_seed(0)
    v = torch.rand(2000, generator=g, dtype=torch.float64)
    v[::10] = math.nan
    lo, hi = bootstrap_ci(v, n=500, seed=1)
    assert (lo, hi) == bootstrap_ci(v, n=500, seed=1)
    assert (lo, hi) != bootstrap_ci(v, n=500, seed=2)
    m = float(v.nanmean())
    se = float(v[~torch.isnan(v)].std()) / math.sqrt(1800)
    assert lo < m < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert all(math.isnan(x) for x in bootstrap_ci(torch.full((4,), math.nan, dtype=torch.float64)))
