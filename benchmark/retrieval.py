"""Retrieval protocol pieces (docs/PROTOCOL.md#evaluation-protocol): relevance, similarities, the multi-granularity ranking.

Rankings are expressed as (Q, C) score matrices consumed by :func:`benchmark.metrics.retrieval_metrics`
(score descending, ties by candidate index). Torch only: this runs on the GPU machine too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from datasets.taxonomy import class_offsets

__all__ = ["relevance", "attribute_similarity", "class_level_similarity", "multi_granularity_scores", "MG_OFFSET",
           "attribute_lists", "attribute_map_all"]

#: added to the class-level similarity of candidates sharing a predicted class; cosines lie in
#: [-1, 1], so [2, 4] (shared) and [-1, 1] (the rest) never overlap
MG_OFFSET = 3.0
_CHUNK_ELEMENTS = 1 << 24


def relevance(query_labels: torch.Tensor, cand_labels: torch.Tensor, mode: str = "all") -> torch.Tensor:
    """(Q, C) bool from multi-hot label sets (Q, M) and (C, M).

    ``all``: S_q is a subset of S_c (an empty S_q is a subset of everything);
    ``any``: S_q and S_c intersect. Counts come from a float32 matrix product of 0/1 values,
    exact for M < 2^24; processed in query chunks to bound memory.
    """
    if mode not in ("all", "any"):
        raise ValueError(f"mode must be 'all' or 'any', got {mode!r}")
    if query_labels.dim() != 2 or cand_labels.dim() != 2 or query_labels.shape[1] != cand_labels.shape[1]:
        raise ValueError(f"label sets must be (Q, M) and (C, M), got {tuple(query_labels.shape)} and {tuple(cand_labels.shape)}")
    q = query_labels.to(torch.bool).to(torch.float32)
    c = cand_labels.to(device=q.device, dtype=torch.bool).to(torch.float32)
    Q, C = q.shape[0], c.shape[0]
    out = torch.empty(Q, C, dtype=torch.bool, device=q.device)
    ct = c.t().contiguous()
    size = q.sum(1, keepdim=True)
    step = max(1, _CHUNK_ELEMENTS // max(C, 1))
    for s in range(0, Q, step):
        inter = q[s : s + step] @ ct
        if mode == "all":
            torch.eq(inter, size[s : s + step], out=out[s : s + step])
        else:
            torch.gt(inter, 0.5, out=out[s : s + step])
    return out


def attribute_similarity(q_emb: torch.Tensor, c_emb: torch.Tensor) -> torch.Tensor:
    """(Q, C) cosine similarity of attribute-specific embeddings (Q, D) and (C, D)."""
    return F.normalize(q_emb, dim=1) @ F.normalize(c_emb, dim=1).t()


def _check_index(index: torch.Tensor, emb: torch.Tensor, rows: int, num_classes: int, what: str) -> None:
    if index.dim() != 2 or index.shape[1] != 2 or index.shape[0] != emb.shape[0]:
        raise ValueError(f"{what}: index must be (P, 2) matching emb (P, D); got {tuple(index.shape)}, {tuple(emb.shape)}")
    if index.numel():
        if int(index[:, 0].min()) < 0 or int(index[:, 0].max()) >= rows:
            raise ValueError(f"{what}: row ids outside [0, {rows})")
        if int(index[:, 1].min()) < 0 or int(index[:, 1].max()) >= num_classes:
            raise ValueError(f"{what}: class ids outside [0, {num_classes})")
        key = index[:, 0] * num_classes + index[:, 1]
        if torch.unique(key).numel() != key.numel():
            raise ValueError(f"{what}: duplicate (row, class) pairs")


def class_level_similarity(
    q_index: torch.Tensor,
    q_emb: torch.Tensor,
    c_index: torch.Tensor,
    c_emb: torch.Tensor,
    num_queries: int,
    num_candidates: int,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best class-specific cosine over shared predicted classes, and the shared mask.

    q_index (Pq, 2) long rows (query row, class id) with q_emb (Pq, D) class-specific embeddings
    of the query's predicted classes; the same for candidates. Returns ``sim`` (Q, C) float
    (-inf where no class is shared) and ``shared`` (Q, C) bool. One matrix product per class
    present on both sides; no loop over pairs.
    """
    _check_index(q_index, q_emb, num_queries, num_classes, "q_index")
    _check_index(c_index, c_emb, num_candidates, num_classes, "c_index")
    device = q_emb.device
    q_index = q_index.to(device=device, dtype=torch.int64)
    c_index = c_index.to(device=device, dtype=torch.int64)
    qn = F.normalize(q_emb, dim=1)
    cn = F.normalize(c_emb.to(device=device, dtype=q_emb.dtype), dim=1)
    dtype = qn.dtype if qn.is_floating_point() else torch.float32
    sim = torch.full((num_queries, num_candidates), float("-inf"), dtype=dtype, device=device)
    shared = torch.zeros(num_queries, num_candidates, dtype=torch.bool, device=device)
    if q_index.numel() == 0 or c_index.numel() == 0:
        return sim, shared
    q_cls, c_cls = q_index[:, 1], c_index[:, 1]
    q_order = torch.argsort(q_cls, stable=True)
    c_order = torch.argsort(c_cls, stable=True)
    q_cnt = torch.bincount(q_cls, minlength=num_classes)
    c_cnt = torch.bincount(c_cls, minlength=num_classes)
    q_start = (q_cnt.cumsum(0) - q_cnt).tolist()
    c_start = (c_cnt.cumsum(0) - c_cnt).tolist()
    both = torch.nonzero((q_cnt > 0) & (c_cnt > 0)).flatten().tolist()
    q_cnt_l, c_cnt_l = q_cnt.tolist(), c_cnt.tolist()
    for m in both:
        qi = q_order[q_start[m] : q_start[m] + q_cnt_l[m]]
        ci = c_order[c_start[m] : c_start[m] + c_cnt_l[m]]
        r = q_index[qi, 0].unsqueeze(1)
        k = c_index[ci, 0].unsqueeze(0)
        block = qn[qi] @ cn[ci].t()
        # (row, class) pairs are unique, so each (r, k) cell appears once per class
        sim[r, k] = torch.maximum(sim[r, k], block.to(dtype))
        shared[r, k] = True
    return sim, shared


def multi_granularity_scores(attr_sim: torch.Tensor, class_sim: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """The multi-granularity ranking as scores (float64): shared candidates first, by class-level
    similarity (+ MG_OFFSET), then the rest by attribute similarity.

    float64 keeps the order inside each block exactly that of the float32 inputs (x + 3 is exact
    in float64 for any float32 |x| >= 2^-28; below that two distinct cosines may tie and then fall
    back to the candidate-index order).
    """
    if not (attr_sim.shape == class_sim.shape == shared.shape):
        raise ValueError(f"shapes differ: {tuple(attr_sim.shape)}, {tuple(class_sim.shape)}, {tuple(shared.shape)}")
    shared = shared.to(dtype=torch.bool, device=attr_sim.device)
    cls = class_sim.to(device=attr_sim.device, dtype=torch.float64)
    return torch.where(shared, cls + MG_OFFSET, attr_sim.to(torch.float64))


def attribute_lists(rows_q, rows_c, labels, classes_per_attribute):
    """The protocol's ranking tasks, one per attribute n that has a query: yields ``(n, sl, qn, cn)``,
    ``sl`` the slice of n's classes in ``labels`` ((n_images, C) bool, numpy), ``qn`` the rows of
    ``rows_q`` positive in n (its queries), ``cn`` those of ``rows_c`` positive in n (the ranked
    list). The one spelling of who is ranked against whom (benchmark.evaluate, the val curve)."""
    offsets = class_offsets(classes_per_attribute)
    for n in range(len(offsets) - 1):
        sl = slice(offsets[n], offsets[n + 1])
        qn = rows_q[labels[rows_q, sl].any(1)]
        if len(qn) == 0:
            continue
        yield n, sl, qn, rows_c[labels[rows_c, sl].any(1)]


def attribute_map_all(attribute_emb: torch.Tensor, rows_q, rows_c, labels, classes_per_attribute,
                      relevance_mode: str = "all") -> float:
    """MAP@all (%) of the attribute-level ranking: every :func:`attribute_lists` task ranked by
    cosine (``attribute_emb`` (n_images, N, D)), relevance ``relevance_mode``, queries with no
    relevant candidate left out, the mean over all queries (query-weighted: the evaluate stage's
    overall figure). NaN when no query has a relevant candidate. Train's val curve."""
    from benchmark.metrics import retrieval_metrics

    aps = []
    for n, sl, q, c in attribute_lists(rows_q, rows_c, labels, classes_per_attribute):
        if len(c) == 0:  # no candidate: every AP is undefined, left out
            continue
        rel = relevance(torch.as_tensor(labels[q, sl]), torch.as_tensor(labels[c, sl]), relevance_mode)
        aps.append(retrieval_metrics(attribute_similarity(attribute_emb[q, n], attribute_emb[c, n]), rel)["ap_all"].double())
    ap = torch.cat(aps) if aps else torch.zeros(0, dtype=torch.float64)
    ap = ap[~torch.isnan(ap)]
    return float(100.0 * ap.mean()) if len(ap) else float("nan")
