"""benchmark.retrieval against brute force, and the protocol at chance level on ASEN's FashionAI split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.metrics import aggregate, retrieval_metrics
from benchmark.retrieval import attribute_similarity, class_level_similarity, multi_granularity_scores, relevance

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FASHIONAI = SHARED / "real" / "asen_splits" / "FashionAI"


@pytest.mark.parametrize("mode", ["all", "any"])
def test_relevance_matches_python_sets(mode):
    g = torch.Generator().manual_seed(0)
    q = torch.rand(15, 6, generator=g) < 0.3
    c = torch.rand(25, 6, generator=g) < 0.5
    q[0] = False  # empty label set: subset of everything, intersects nothing
    out = relevance(q, c, mode=mode)
    assert out.dtype == torch.bool and out.shape == (15, 25)
    for i in range(15):
        sq = {m for m in range(6) if q[i, m]}
        for j in range(25):
            sc = {m for m in range(6) if c[j, m]}
            assert bool(out[i, j]) == (sq <= sc if mode == "all" else bool(sq & sc))


def test_relevance_rejects_unknown_mode():
    with pytest.raises(ValueError):
        relevance(torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool), mode="some")


def test_attribute_similarity_is_cosine():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=g) * 3, torch.randn(5, 8, generator=g)
    sim = attribute_similarity(a, b)
    for i in range(4):
        for j in range(5):
            assert sim[i, j].item() == pytest.approx(torch.nn.functional.cosine_similarity(a[i], b[j], dim=0).item(), abs=1e-6)


def _predicted(g, rows, num_classes, dim, max_per_row=3):
    index, emb = [], []
    for r in range(rows):
        k = int(torch.randint(0, max_per_row + 1, (1,), generator=g))
        for m in torch.randperm(num_classes, generator=g)[:k].tolist():
            index.append((r, m))
            emb.append(torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0))
    return torch.tensor(index, dtype=torch.long).reshape(-1, 2), torch.stack(emb) if emb else torch.zeros(0, dim)


def test_class_level_similarity_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    Q, C, M, D = 7, 11, 5, 6
    qi, qe = _predicted(g, Q, M, D)
    ci, ce = _predicted(g, C, M, D)
    sim, shared = class_level_similarity(qi, qe, ci, ce, Q, C, M)
    assert sim.shape == shared.shape == (Q, C)
    for q in range(Q):
        for c in range(C):
            best = float("-inf")
            for a in range(len(qi)):
                for b in range(len(ci)):
                    if qi[a, 0] == q and ci[b, 0] == c and qi[a, 1] == ci[b, 1]:
                        best = max(best, float(qe[a] @ ce[b]))
            assert bool(shared[q, c]) == (best != float("-inf"))
            if best == float("-inf"):
                assert sim[q, c].item() == float("-inf")
            else:
                assert sim[q, c].item() == pytest.approx(best, abs=1e-6)
    assert shared.any() and (~shared).any()


def test_class_level_similarity_rejects_duplicate_pairs():
    idx = torch.tensor([[0, 1], [0, 1]])
    emb = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    with pytest.raises(ValueError):
        class_level_similarity(idx, emb, idx, emb, 1, 1, 2)


def test_multi_granularity_shared_candidates_rank_first():
    g = torch.Generator().manual_seed(3)
    Q, C, M, D = 6, 30, 4, 8
    qi, qe = _predicted(g, Q, M, D, max_per_row=2)
    ci, ce = _predicted(g, C, M, D, max_per_row=2)
    cls, shared = class_level_similarity(qi, qe, ci, ce, Q, C, M)
    attr = attribute_similarity(torch.randn(Q, D, generator=g), torch.randn(C, D, generator=g))
    attr[0, 0] = 1.0  # extreme attribute similarity still ranks below any shared candidate
    scores = multi_granularity_scores(attr, cls, shared)
    for q in range(Q):
        order = sorted(range(C), key=lambda c: (-scores[q, c].item(), c))
        flags = [bool(shared[q, c]) for c in order]
        assert flags == sorted(flags, reverse=True)  # all shared first
        n = sum(flags)
        assert [c for c in order[:n]] == sorted(order[:n], key=lambda c: (-cls[q, c].item(), c))
        assert [c for c in order[n:]] == sorted(order[n:], key=lambda c: (-attr[q, c].item(), c))
    # the metric code consumes the float64 transform: relevant = shared -> perfect AP
    out = retrieval_metrics(scores, shared)
    ok = shared.any(1)
    assert torch.all(out["ap_all"][ok] == 1.0)


def _read(path):
    rows = [tuple(int(x) for x in line.split()) for line in path.read_text().splitlines() if line.strip()]
    return torch.tensor(rows, dtype=torch.long)


@pytest.mark.skipif(not (FASHIONAI / "query_valid.txt").exists(), reason="ASEN's real FashionAI split files are not beside the repository")
def test_fashionai_valid_random_embeddings_is_at_chance():
    q = _read(FASHIONAI / "query_valid.txt")  # (fidx, attr, value)
    c = _read(FASHIONAI / "candidate_valid.txt")
    g = torch.Generator().manual_seed(0)
    D = 64
    images = int(max(q[:, 0].max(), c[:, 0].max())) + 1
    attrs = int(max(q[:, 1].max(), c[:, 1].max())) + 1
    values = int(max(q[:, 2].max(), c[:, 2].max())) + 1
    emb = torch.nn.functional.normalize(torch.randn(images, attrs, D, generator=g), dim=2)
    q_emb, c_emb = emb[q[:, 0], q[:, 1]], emb[c[:, 0], c[:, 1]]
    onehot = torch.eye(attrs * values, dtype=torch.bool)
    rel = relevance(onehot[q[:, 1] * values + q[:, 2]], onehot[c[:, 1] * values + c[:, 2]], mode="all")
    valid = q[:, 1, None] == c[None, :, 1]  # the list of a query of attribute n: candidates of n
    out = retrieval_metrics(attribute_similarity(q_emb, c_emb), rel, valid=valid, ks=(100,))
    R = rel.sum(1).double()
    L = valid.sum(1).double()
    chance = float((R / L).mean()) * 100
    agg = aggregate(out, q[:, 1], [f"attr{n}" for n in range(attrs)])
    got = agg["ap_all"]["overall"]
    print(f"\nFashionAI valid: {len(q)} queries x {len(c)} candidates; MAP@all random = {got:.2f}, chance = {chance:.2f}")
    assert agg["queries"] == {"used": len(q), "left_out": 0, "no_relevant": 0}
    assert abs(got - chance) < 1.5
    # per attribute too, and the per-attribute block evaluation gives exactly the same numbers
    for n in range(attrs):
        m = q[:, 1] == n
        cm = c[:, 1] == n
        block = retrieval_metrics(attribute_similarity(q_emb[m], c_emb[cm]), rel[m][:, cm], ks=(100,))
        assert torch.equal(block["ap_all"], out["ap_all"][m])
        assert torch.equal(block["ap@100"], out["ap@100"][m])
        assert abs(agg["ap_all"][f"attr{n}"] - float((R[m] / L[m]).mean()) * 100) < 3.0


def test_attribute_map_all_is_the_evaluate_stages_overall_attribute_map():
    """The val curve's MAP@all (benchmark.retrieval.attribute_map_all) is the evaluate stage's
    query-weighted attribute-level figure on the same rows: one ranking-and-AP loop."""
    import numpy as np

    from benchmark.evaluate import evaluate_split
    from benchmark.retrieval import attribute_map_all
    from model.base import Embeddings

    rng = np.random.default_rng(3)
    cpa = [3, 4, 2]
    labels = rng.random((40, sum(cpa))) < 0.3
    emb = torch.nn.functional.normalize(torch.randn(40, len(cpa), 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    rows_q, rows_c = np.arange(0, 12), np.arange(12, 40)
    per_q = evaluate_split(Embeddings(attribute=emb), rows_q, rows_c, labels, cpa, relevance="all", ks=[10],
                           ranking="attribute")
    ap = per_q["ap_all"][~np.isnan(per_q["ap_all"])]
    assert attribute_map_all(emb, rows_q, rows_c, labels, cpa) == pytest.approx(100 * ap.mean(), abs=1e-9)
