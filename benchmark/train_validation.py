"""The train stage's validation: the val split's MAP@all after an epoch (the convergence record and
the ``best_val`` selection) and the early-stopping rule on that curve."""

from __future__ import annotations

import math

import torch

from benchmark.train_data import ValSet


@torch.no_grad()
def validation_map(model, val: ValSet, device: torch.device, *, relevance_mode: str = "all",
                   batch_size: int = 64) -> float:
    """MAP@all (%) of the attribute-level ranking on the val split: for each attribute n, every val
    query image positive in n against every val candidate positive in n, relevance ``relevance_mode``;
    queries with no relevant candidate are left out; the mean over all queries (query-weighted, the
    overall figure of the evaluate stage). NaN when no query has a relevant candidate."""
    import numpy as np

    from benchmark.loaders import image_loader, network_input
    from benchmark.retrieval import attribute_map_all

    was_training = model.training
    model.eval()
    embs = []
    for images, _ in image_loader(val.table, batch_size=batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            x = network_input(images.to(device))  # the attribute ranking: no pair's class level is ranked
            none = torch.zeros(len(x), len(val.classes_per_attribute), dtype=torch.bool, device=x.device)
            embs.append(model.embed(x, ranked=none).attribute.float().cpu())
    model.train(was_training)
    is_q = val.is_query.numpy()
    return attribute_map_all(torch.cat(embs), np.flatnonzero(is_q), np.flatnonzero(~is_q), val.labels.numpy(),
                             val.classes_per_attribute, relevance_mode)


def levelled(scores: list[float], patience: int, min_delta: float) -> bool:
    """Early stopping on the val curve (one phase's scores, in epoch order): True when the last
    ``patience`` epochs did not raise the best score of the epochs before them by more than
    ``min_delta`` (points of MAP@all). A non-finite score counts as no score."""
    vals = [v if v is not None and math.isfinite(v) else -math.inf for v in scores]
    if len(vals) <= patience:
        return False
    return max(vals[-patience:]) <= max(vals[:-patience]) + min_delta

