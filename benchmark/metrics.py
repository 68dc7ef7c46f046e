"""Retrieval metrics (docs/PROTOCOL.md#metrics): AP@all, AP@k, Recall@k per query, aggregation, bootstrap CIs.

Every number the suite reports comes from :func:`retrieval_metrics`. Definitions, for a query
with ranked list of length L (the valid candidates) and R relevant candidates in that list:

* ranking: score descending, ties by candidate index ascending (deterministic, device-independent);
* AP@k = (sum over ranks i <= k of P@i * rel_i) / min(R, k); AP@all is AP with k = L,
  i.e. (sum over relevant ranks of P@i) / R;
* Recall@k = (relevant in the top k) / R;
* NaN where R = 0; :func:`aggregate` leaves such queries out of every mean (or counts them as
  0, ASEN's way, with ``no_relevant="zero"``) and counts them either way.

How it is fast: each chunk of queries is turned into one int64 key per (query, candidate)
that packs [invalid flag | score rank | candidate index | relevance bit], so a plain
(unstable, SIMD) value sort of the keys yields the exact tie-broken order with the relevance
bit already in place: no argsort, no gather. Only the relevant positions (R per query) are
then touched to accumulate the precisions. On CPU the key sort is NumPy's (AVX-512/AVX2
vectorised, ~8x faster than ``torch.sort``); on CUDA it is ``torch.sort``.

Torch (and NumPy on CPU) only: the GPU machine has no polars/pandera.
"""

from __future__ import annotations

import math
import time

import torch

__all__ = ["retrieval_metrics", "aggregate", "apply_no_relevant", "bootstrap_ci", "bench"]

# key layout (bits, from the top): 0 (sign) | invalid (1) | score rank (32) | index (29) | relevant (1)
_IDX_BITS = 29
_MAX_CANDIDATES = 1 << _IDX_BITS
_SCORE_SHIFT = _IDX_BITS + 1
_INVALID_SHIFT = _SCORE_SHIFT + 32
# elements per chunk (queries x candidates) when chunk_size is None; bounds the working set
_CPU_CHUNK_ELEMENTS = 1 << 22
_CUDA_CHUNK_ELEMENTS = 1 << 24


def _descending_rank_f32(x: torch.Tensor) -> torch.Tensor:
    """int64 in [0, 2^32): smaller = higher float32 score; equal floats (incl. -0 == +0) equal keys."""
    x = x + 0.0  # -0.0 -> +0.0, so that the two zeros tie as they compare equal
    b = x.view(torch.int32).to(torch.int64)
    # monotone map of IEEE-754 bits onto unsigned order: u = b + 2^31 for b >= 0, -1 - b for b < 0
    u = torch.where(b >= 0, b + (1 << 31), -1 - b)
    return (1 << 32) - 1 - u


def _argsort_desc(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu":
        try:
            import numpy as np

            return torch.from_numpy(np.argsort(-x.numpy(), axis=1))
        except ImportError:  # pragma: no cover - numpy is a dependency
            pass
    return torch.argsort(x, dim=1, descending=True)


def _descending_dense_rank(x: torch.Tensor) -> torch.Tensor:
    """Dense rank per row (0 = highest score, equal scores equal rank), for any float dtype."""
    order = _argsort_desc(x)
    vals = torch.gather(x, 1, order)
    new = torch.zeros_like(order, dtype=torch.int64)
    new[:, 1:] = vals[:, 1:] != vals[:, :-1]
    group = new.cumsum_(1)
    return torch.empty_like(group).scatter_(1, order, group)


def _sort_keys(keys: torch.Tensor) -> torch.Tensor:
    if keys.device.type == "cpu":
        try:
            import numpy as np

            arr = keys.numpy()
            arr.sort(axis=1)  # in place; keys are unique so stability is irrelevant
            return keys
        except ImportError:  # pragma: no cover
            pass
    return torch.sort(keys, dim=1).values


def _sort_values(x: torch.Tensor) -> torch.Tensor:
    """Ascending sort of each row's values (NumPy's SIMD sort on CPU, torch.sort elsewhere)."""
    if x.device.type == "cpu":
        try:
            import numpy as np

            return torch.from_numpy(np.sort(x.contiguous().numpy(), axis=1))
        except ImportError:  # pragma: no cover
            pass
    return torch.sort(x, dim=1).values


def _prepare_scores(similarity: torch.Tensor) -> torch.Tensor:
    """float32 or float64 scores, converted losslessly (half -> float32, integers -> float64)."""
    s = similarity
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    elif s.dtype not in (torch.float32, torch.float64):
        s = s.double()
    return s.contiguous()


def _ranked_positions_by_keys(s, rel, v):
    """Exact 0-based list positions of the relevant candidates, via one sort of packed keys.

    Returns (rows, pos) in row-major, rank-ascending order. Used for rows with tied scores.
    """
    C = s.shape[1]
    rank = _descending_rank_f32(s) if s.dtype == torch.float32 else _descending_dense_rank(s)
    keys = rank.bitwise_left_shift_(_SCORE_SHIFT)
    keys.bitwise_or_((torch.arange(C, device=s.device, dtype=torch.int64) << 1).unsqueeze(0)).bitwise_or_(rel)
    if v is not None:
        keys.bitwise_or_((~v).to(torch.int64).bitwise_left_shift_(_INVALID_SHIFT))
    del rank
    keys = _sort_keys(keys)
    nz = torch.nonzero(keys.bitwise_and_(1))
    return nz[:, 0], nz[:, 1]


def _ranked_positions(s, rel, v):
    """(rows, pos) of every relevant candidate of the chunk, sorted by row then position.

    Fast path: sort only the scores (values, no indices) and place each relevant candidate by
    binary search: position = #valid candidates with a higher score. That is exact whenever the
    relevant candidate's score is unique among valid candidates (and finite from above);
    rows where it is not go through the packed-key sort, which breaks ties by index.
    """
    n, C = s.shape
    device = s.device
    nz = torch.nonzero(rel)
    rows, cols = nz[:, 0], nz[:, 1]
    if rows.numel() == 0:
        return rows, cols
    if v is not None:
        sv = s.masked_fill(~v, float("inf"))
        n_inv = (~v).sum(1)
    else:
        sv = s
        n_inv = torch.zeros(n, dtype=torch.int64, device=device)
    srt = _sort_values(sv)
    counts = torch.bincount(rows, minlength=n)
    offsets = counts.cumsum(0) - counts
    slot = torch.arange(rows.numel(), device=device) - offsets[rows]
    vals = s[rows, cols]
    pad = torch.full((n, int(counts.max())), float("inf"), dtype=s.dtype, device=device)
    pad[rows, slot] = vals
    if bool(torch.isnan(srt[:, -1]).any()):  # NaN sorts last; invalid entries were masked to inf
        raise ValueError("similarity holds NaN scores in a ranked list")
    right = torch.searchsorted(srt, pad, right=True)[rows, slot]
    # srt[right - 1] is the candidate's own score; another equal score sits just before it
    before = srt[rows, (right - 2).clamp(min=0)]
    tie = ((right >= 2) & (before == vals)) | (vals == float("inf"))
    del srt, pad
    pos = C - right - n_inv[rows]
    if not bool(tie.any()):
        # positions are unique within a row; order each row's items by position
        order = torch.argsort(rows * C + pos)
        return rows[order], pos[order]
    tie_row = torch.zeros(n, dtype=torch.bool, device=device)
    tie_row[rows[tie]] = True
    keep = ~tie_row[rows]
    tr = torch.nonzero(tie_row).flatten()
    r2, p2 = _ranked_positions_by_keys(s[tr], rel[tr], None if v is None else v[tr])
    rows = torch.cat([rows[keep], tr[r2]])
    pos = torch.cat([pos[keep], p2])
    order = torch.argsort(rows * C + pos)
    return rows[order], pos[order]


def retrieval_metrics(
    similarity: torch.Tensor,
    relevant: torch.Tensor,
    ks=(100,),
    chunk_size: int | None = None,
    valid: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-query AP@all, AP@k and Recall@k (float64, NaN where the query has no relevant candidate).

    similarity (Q, C) scores (higher = more similar); relevant (Q, C) bool; valid (Q, C) bool or
    None: candidates outside a query's ranked list (valid False) are excluded from it, so list
    lengths may vary per query. Works on whatever device the inputs are on, ``chunk_size``
    queries at a time (default: about 4M elements per chunk on CPU, 16M on CUDA).
    """
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be (Q, C), got shape {tuple(similarity.shape)}")
    if relevant.shape != similarity.shape:
        raise ValueError(f"relevant {tuple(relevant.shape)} != similarity {tuple(similarity.shape)}")
    if valid is not None and valid.shape != similarity.shape:
        raise ValueError(f"valid {tuple(valid.shape)} != similarity {tuple(similarity.shape)}")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    Q, C = similarity.shape
    if C >= _MAX_CANDIDATES:
        raise ValueError(f"at most {_MAX_CANDIDATES - 1} candidates supported, got {C}")
    device = similarity.device
    relevant = relevant.to(device=device, dtype=torch.bool)
    if valid is not None:
        valid = valid.to(device=device, dtype=torch.bool)
    scores = _prepare_scores(similarity)
    if chunk_size is None:
        per = _CUDA_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS
        chunk_size = max(1, per // max(C, 1))
    chunk_size = max(1, int(chunk_size))

    names = ["ap_all"] + [f"ap@{k}" for k in ks] + [f"recall@{k}" for k in ks]
    out = {n: torch.empty(Q, dtype=torch.float64, device=device) for n in names}
    for start in range(0, Q, chunk_size):
        stop = min(Q, start + chunk_size)
        n = stop - start
        v = None if valid is None else valid[start:stop]
        rel = relevant[start:stop] if v is None else relevant[start:stop] & v
        rows, pos = _ranked_positions(scores[start:stop], rel, v)
        counts = torch.bincount(rows, minlength=n)
        R = counts.to(torch.float64)
        offsets = counts.cumsum(0) - counts
        j = torch.arange(rows.numel(), device=device, dtype=torch.int64) - offsets[rows]
        # P@i at the relevant ranks: (relevant up to rank i) / i, 1-based; summed in rank order
        prec = (j + 1).to(torch.float64) / (pos + 1).to(torch.float64)
        zeros = torch.zeros(n, dtype=torch.float64, device=device)
        out["ap_all"][start:stop] = zeros.clone().index_add_(0, rows, prec) / R
        for k in ks:
            top = pos < k
            rk = rows[top]
            hits = torch.bincount(rk, minlength=n).to(torch.float64)
            out[f"ap@{k}"][start:stop] = zeros.clone().index_add_(0, rk, prec[top]) / R.clamp(max=k)
            out[f"recall@{k}"][start:stop] = hits / R
    return out


NO_RELEVANT_POLICIES = ("leave_out", "zero")


def apply_no_relevant(values: torch.Tensor, policy: str = "leave_out") -> torch.Tensor:
    """Per-query values under a policy for queries without a relevant candidate (NaN, R = 0).

    ``leave_out`` (the suite's default): they stay NaN, so every mean skips them; a query that
    cannot be answered says nothing about the embedding. ``zero`` (ASEN's evaluation code): they
    count as 0 and every mean divides by all queries, which is what ASEN's published numbers did.
    """
    if policy not in NO_RELEVANT_POLICIES:
        raise ValueError(f"no_relevant must be one of {NO_RELEVANT_POLICIES}, not {policy!r}")
    if policy == "zero":
        return torch.nan_to_num(values, nan=0.0)
    return values


def aggregate(per_query: dict[str, torch.Tensor], query_attribute: torch.Tensor, attribute_names: list[str],
              no_relevant: str = "leave_out") -> dict:
    """Percentages per metric: overall (query-weighted), macro (mean over attributes), per attribute.

    Queries with no relevant candidate (NaN in ``ap_all``) follow ``no_relevant``
    (:func:`apply_no_relevant`): left out of every mean (default) or counted as 0. An attribute
    without used queries is omitted from its metric dict and from the macro mean (overall/macro
    are NaN when nothing is used). Also ``{"queries": {"used": n, "left_out": n, "no_relevant": n}}``:
    ``no_relevant`` counts the R = 0 queries whatever the policy, ``left_out`` those the means skip.
    """
    reserved = {"overall", "macro"}
    if reserved & set(attribute_names):
        raise ValueError(f"attribute names may not be {sorted(reserved)}")
    qa = query_attribute.detach().to("cpu", torch.int64).reshape(-1)
    result: dict = {}
    used_mask = None
    no_rel = None
    for name, values in per_query.items():
        raw = values.detach().to("cpu", torch.float64).reshape(-1)
        if raw.numel() != qa.numel():
            raise ValueError(f"{name}: {raw.numel()} values for {qa.numel()} queries")
        if no_rel is None or name == "ap_all":
            no_rel = int(torch.isnan(raw).sum())
        v = apply_no_relevant(raw, no_relevant)
        ok = ~torch.isnan(v)
        if used_mask is None or name == "ap_all":
            used_mask = ok
        d: dict = {"overall": float(v[ok].mean() * 100.0) if bool(ok.any()) else float("nan")}
        per_attr: dict = {}
        for a, attr in enumerate(attribute_names):
            m = ok & (qa == a)
            if bool(m.any()):
                per_attr[attr] = float(v[m].mean() * 100.0)
        d["macro"] = math.fsum(per_attr.values()) / len(per_attr) if per_attr else float("nan")
        d.update(per_attr)
        result[name] = d
    used = int(used_mask.sum()) if used_mask is not None else 0
    result["queries"] = {"used": used, "left_out": int(qa.numel()) - used, "no_relevant": no_rel or 0}
    return result


def bootstrap_ci(values: torch.Tensor, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over queries (NaN excluded), in the units of ``values``.

    Seeded (CPU generator: identical on every machine), vectorised in blocks of resamples.
    Returns (nan, nan) when no value is usable.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = values.detach().to("cpu", torch.float64).reshape(-1)
    v = v[~torch.isnan(v)]
    m = v.numel()
    if m == 0 or n < 1:
        return float("nan"), float("nan")
    gen = torch.Generator().manual_seed(int(seed))
    means = torch.empty(n, dtype=torch.float64)
    block = max(1, (1 << 22) // m)
    for s in range(0, n, block):
        e = min(n, s + block)
        idx = torch.randint(m, (e - s, m), generator=gen)
        means[s:e] = v[idx].mean(1)
    alpha = (1.0 - level) / 2.0
    q = torch.quantile(means, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


# DeepFashion's evaluation size (ASEN's split): 5,525 queries x 22,100 candidates over 5 attributes
DEEPFASHION_CLASSES = (156, 218, 180, 216, 230)


def synthetic_eval(queries=5525, candidates=22100, dim=1024, classes=DEEPFASHION_CLASSES, seed=0, device="cpu"):
    """Random evaluation data: per attribute, L2-normalised embeddings and single class ids."""
    gen = torch.Generator().manual_seed(seed)
    na = len(classes)
    data = []
    for a, nc in enumerate(classes):
        nq = queries // na + (a < queries % na)
        ncand = candidates // na + (a < candidates % na)
        q = torch.nn.functional.normalize(torch.randn(nq, dim, generator=gen), dim=1)
        c = torch.nn.functional.normalize(torch.randn(ncand, dim, generator=gen), dim=1)
        qv = torch.randint(nc, (nq,), generator=gen)
        cv = torch.randint(nc, (ncand,), generator=gen)
        data.append(tuple(t.to(device) for t in (q, c, qv, cv)))
    return data


def evaluate_per_attribute(data, ks=(100,)) -> dict[str, torch.Tensor]:
    """The protocol on per-attribute blocks: cosine ranking, relevance (all), metrics; concatenated."""
    from benchmark.retrieval import attribute_similarity, relevance

    parts = []
    for q, c, qv, cv in data:
        nc = int(torch.maximum(qv.max(), cv.max())) + 1
        eye = torch.eye(nc, dtype=torch.bool, device=q.device)
        rel = relevance(eye[qv], eye[cv], mode="all")
        parts.append(retrieval_metrics(attribute_similarity(q, c), rel, ks=ks))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def bench(device="cuda", queries=5525, candidates=22100, dim=1024, repeats=3) -> dict:
    """Times the per-attribute protocol at DeepFashion's size on ``device`` (torch only)."""
    device = torch.device(device)
    data = synthetic_eval(queries, candidates, dim, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    evaluate_per_attribute(data)  # warm-up
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = evaluate_per_attribute(data)
        sync()
        times.append(time.perf_counter() - t0)
    out = {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "queries": queries,
        "candidates": candidates,
        "dim": dim,
        "seconds_min": min(times),
        "seconds_all": times,
        "map_all": float(res["ap_all"].nanmean()),
    }
    if device.type == "cuda":
        out["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


if __name__ == "__main__":  # python -m benchmark.metrics [device]
    import json
    import sys

    print(json.dumps(bench(sys.argv[1] if len(sys.argv) > 1 else "cpu"), indent=2))
