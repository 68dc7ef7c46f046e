"""The train stage's validation: the val split's MAP@all after an epoch (the convergence record, the
``best_val`` selection and early stopping), ranked and averaged as the evaluate stage tests (the
multi-granularity ranking for a model with a class level, ``evaluate.no_relevant``), and the
early-stopping rule on that curve."""

from __future__ import annotations

import math

import torch

from benchmark.train_data import ValSet


@torch.no_grad()
def validation_map(model, val: ValSet, device: torch.device, *, relevance_mode: str = "all", gamma: float = 0.8,
                   max_classes: int = 16, no_relevant: str = "leave_out", precision: str = "fp32",
                   batch_size: int = 64) -> float:
    """MAP@all (%) on the val split, ranked as the evaluate stage ranks the test split: for each
    attribute n, every val query image positive in n against every val candidate positive in n,
    relevance ``relevance_mode``; the multi-granularity ranking at ``gamma`` and ``max_classes``
    for a model with a class level (M3-Net and its variants, MODC), the attribute-level ranking
    otherwise (the ASEN family); a query with no relevant candidate left out or counted as 0
    (``no_relevant``); the mean over all queries (query-weighted, the evaluate stage's overall
    figure). NaN when no query counts. Under ``precision: bf16`` the embedding runs in bfloat16
    autocast, as the training step does."""
    import numpy as np

    from benchmark.inference import embed_batches, ranked_pairs
    from benchmark.loaders import image_loader
    from benchmark.metrics import apply_no_relevant
    from benchmark.train_config import autocast

    was_training = model.training
    model.eval()
    labels = val.labels.numpy()
    class_level = bool(getattr(model, "has_class_level", False))
    # the class level only where it is ranked (an image positive in the attribute), as the evaluate stage
    ranked = ranked_pairs(labels, val.classes_per_attribute) if class_level else None
    with autocast(device, precision):
        emb = embed_batches(model, image_loader(val.table, batch_size=batch_size), gamma=gamma,
                            max_classes=max_classes, device=device, ranked=ranked)
    model.train(was_training)
    is_q = val.is_query.numpy()
    ranking = "multi-granularity" if class_level and emb.class_index is not None else "attribute"
    ap = split_ap_all(emb, np.flatnonzero(is_q), np.flatnonzero(~is_q), labels, val.classes_per_attribute,
                      relevance_mode, ranking)
    ap = apply_no_relevant(ap, no_relevant)
    ap = ap[~torch.isnan(ap)]
    return float(100.0 * ap.mean()) if len(ap) else float("nan")


def split_ap_all(emb, rows_q, rows_c, labels, classes_per_attribute, relevance_mode: str, ranking: str) -> torch.Tensor:
    """Per-query AP over the full ranked list (float64, NaN where no candidate is relevant) of every
    :func:`benchmark.retrieval.attribute_lists` task, ranked by ``ranking`` (``attribute`` |
    ``multi-granularity``) with the functions the evaluate stage ranks with. ``emb``: Embeddings
    of every row, its class_index already at the gamma that is scored."""
    from benchmark.metrics import retrieval_metrics
    from benchmark.retrieval import (attribute_lists, attribute_similarity, class_level_similarity,
                                     multi_granularity_scores, relevance)

    aps = []
    for n, sl, q, c in attribute_lists(rows_q, rows_c, labels, classes_per_attribute):
        if len(c) == 0:  # no candidate: every AP is undefined
            aps.append(torch.full((len(q),), float("nan"), dtype=torch.float64))
            continue
        sim = attribute_similarity(emb.attribute[q, n], emb.attribute[c, n])
        if ranking == "multi-granularity":
            q_idx, q_emb = _class_rows(emb, q, n)
            c_idx, c_emb = _class_rows(emb, c, n)
            class_sim, shared = class_level_similarity(q_idx, q_emb, c_idx, c_emb, len(q), len(c),
                                                       classes_per_attribute[n])
            sim = multi_granularity_scores(sim, class_sim, shared)
        rel = relevance(torch.as_tensor(labels[q, sl]), torch.as_tensor(labels[c, sl]), relevance_mode)
        aps.append(retrieval_metrics(sim, rel)["ap_all"].double())
    return torch.cat(aps) if aps else torch.zeros(0, dtype=torch.float64)


def _class_rows(emb, rows, attribute: int):
    """(P, 2) (position in ``rows``, class id) and (P, D) class-specific embeddings of ``attribute``."""
    idx = emb.class_index
    pos = torch.full((len(emb.attribute),), -1, dtype=torch.long)
    pos[torch.from_numpy(rows)] = torch.arange(len(rows))
    sel = (idx[:, 1] == attribute) & (pos[idx[:, 0]] >= 0)
    return torch.stack([pos[idx[sel, 0]], idx[sel, 2]], 1), emb.class_emb[sel]


def levelled(scores: list[float], patience: int, min_delta: float) -> bool:
    """Early stopping on the val curve (one phase's scores, in epoch order): True when the last
    ``patience`` epochs did not raise the best score of the epochs before them by more than
    ``min_delta`` (points of MAP@all). A non-finite score counts as no score."""
    vals = [v if v is not None and math.isfinite(v) else -math.inf for v in scores]
    if len(vals) <= patience:
        return False
    return max(vals[-patience:]) <= max(vals[:-patience]) + min_delta

