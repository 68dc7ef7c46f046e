"""Losses shared by M3-Net and the baselines (paper Eq. 7-11; docs/PROTOCOL.md#m3-net-losses).

- :func:`cosine_triplet`: max(0, margin + s(a, n) - s(a, p)) with cosine similarity s.
- :func:`attribute_bce`: Eq. 7, the multi-label loss L_M with positive weight w_p, averaged over
  the M_n classes inside each attribute, then over the annotated (image, attribute) pairs.
- :func:`weighted_bce`: the same weighted BCE averaged over (masked) entries.
- :func:`seen_mean`: the mean of per-sample terms over the rows whose prototype was ever updated.
- :class:`PrototypeBank`: MODC's online clustering, one unit-norm prototype per class space,
  an EMA of the L2-normalised embeddings assigned to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cosine_triplet(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """(B, D) x3 -> (B,) per-sample triplet loss max(0, margin + s(a, n) - s(a, p)).

    Inputs need not be normalised; s is the cosine similarity. Per-sample so that callers
    choose the reduction (and can mask rows).
    """
    sim_pos_b = F.cosine_similarity(anchor, positive, dim=-1, eps=1e-8)  # (B,)
    sim_neg_b = F.cosine_similarity(anchor, negative, dim=-1, eps=1e-8)  # (B,)
    return F.relu(margin + sim_neg_b - sim_pos_b)


def weighted_bce(
    logits: torch.Tensor, targets: torch.Tensor, w_p: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 7: mean of -[w_p y log x + (1 - y) log(1 - x)], x = sigmoid(logits); (B, M) -> scalar.

    Written with softplus so that it is stable for large |logits|:
    -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z).
    ``mask`` (B, M) bool keeps only annotated entries; the mean runs over the kept entries
    (zero, with a gradient path, when none is kept). No host sync.
    """
    targets = targets.to(logits.dtype)
    loss_bm = w_p * targets * F.softplus(-logits) + (1.0 - targets) * F.softplus(logits)  # (B, M)
    if mask is None:
        return loss_bm.mean()
    keep_bm = mask.to(logits.dtype)
    return (loss_bm * keep_bm).sum() / keep_bm.sum().clamp_min(1.0)


def attribute_bce(
    logits: torch.Tensor, targets: torch.Tensor, w_p: float, class_attribute: torch.Tensor,
    annotated: torch.Tensor, classes_per_attribute,
) -> torch.Tensor:
    """Eq. 7 summed the paper's way: (B, C) logits over global class ids -> scalar.

    For image i and attribute n, L_M(i, n) = -1/M_n sum_{m in n} [w_p y log x + (1 - y) log(1 - x)],
    x = sigmoid(logit): the 1/M_n is inside each attribute, so every attribute weighs the same
    whatever its class count. The loss is the mean of L_M(i, n) over the annotated pairs
    (``annotated`` (B, N) bool; zero, with a gradient path, when none is). ``class_attribute`` (C,)
    long is the attribute of each global class id. Averaging over all annotated (image, class)
    entries instead (:func:`weighted_bce` with a mask) would weight an attribute by M_n.
    """
    targets = targets.to(logits.dtype)
    loss_bc = w_p * targets * F.softplus(-logits) + (1.0 - targets) * F.softplus(logits)  # (B, C)
    m_n = torch.as_tensor(list(classes_per_attribute), dtype=logits.dtype, device=logits.device)  # (N,)
    sum_bn = loss_bc.new_zeros(loss_bc.shape[0], m_n.shape[0]).index_add_(1, class_attribute, loss_bc)  # (B, N)
    keep_bn = annotated.to(logits.dtype)
    return (sum_bn / m_n * keep_bn).sum() / keep_bn.sum().clamp_min(1.0)


def seen_mean(loss_b: torch.Tensor, seen_b: torch.Tensor) -> torch.Tensor:
    """Mean of (B,) per-sample losses over the rows whose prototype has been updated at least once
    (``seen_b`` (B,) bool): a prototype still at its random start is no class centre. Zero, with a
    gradient path, when no row qualifies. No host sync."""
    keep_b = seen_b.to(loss_b.dtype)
    return (loss_b * keep_b).sum() / keep_b.sum().clamp_min(1.0)


class PrototypeBank(nn.Module):
    """K unit-norm prototypes (MODC's online deep clustering), updated by EMA without gradients.

    ``update`` averages the L2-normalised embeddings of each prototype in the batch, mixes that
    mean into the prototype with ``momentum`` (old weight), and renormalises. A prototype not yet
    seen is set to its first batch mean, so the random initial direction never leaks into the
    loss after the first update. Under torch.distributed the per-prototype sums and counts are
    all-reduced first, so every rank keeps the same prototypes.
    """

    def __init__(self, num_prototypes: int, dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = float(momentum)
        protos_kd = F.normalize(torch.randn(num_prototypes, dim), dim=-1)  # (K, D)
        self.register_buffer("prototypes", protos_kd)
        self.register_buffer("seen", torch.zeros(num_prototypes, dtype=torch.bool))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.get(ids)

    def get(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) long -> (B, D) prototypes (buffers: no gradient flows into them)."""
        return self.prototypes.index_select(0, ids)

    @torch.no_grad()
    def update(self, ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """EMA of the normalised ``embeddings`` (B, D) into prototypes ``ids`` (B,)."""
        protos_kd = self.prototypes
        emb_bd = F.normalize(embeddings.detach().to(protos_kd.dtype), dim=-1)  # (B, D)
        sums_kd = torch.zeros_like(protos_kd).index_add_(0, ids, emb_bd)  # (K, D)
        counts_k = torch.zeros(protos_kd.shape[0], dtype=protos_kd.dtype, device=protos_kd.device)
        counts_k.index_add_(0, ids, torch.ones_like(ids, dtype=protos_kd.dtype))  # (K,)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums_kd)
            torch.distributed.all_reduce(counts_k)
        hit_k = counts_k > 0
        mean_kd = sums_kd / counts_k.clamp_min(1.0).unsqueeze(1)  # (K, D)
        mixed_kd = self.momentum * protos_kd + (1.0 - self.momentum) * mean_kd
        new_kd = torch.where(self.seen.unsqueeze(1), mixed_kd, mean_kd)
        new_kd = F.normalize(new_kd, dim=-1, eps=1e-12)
        protos_kd.copy_(torch.where(hit_k.unsqueeze(1), new_kd, protos_kd))
        self.seen.logical_or_(hit_k)
