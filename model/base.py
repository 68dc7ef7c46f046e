"""The interface every registered model implements, so that one trainer and one evaluator serve all.

Training batch (built by ``benchmark.loaders``, whose uint8 images ``batch_to_device`` normalises
on the device; B triplets, 3B images):
    images       (3B, 3, H, W) float, normalised; rows [0:B] anchors, [B:2B] positives, [2B:3B] negatives
    attribute    (B,) long   attribute id n of each triplet
    class_id     (B,) long   class id m within attribute n: anchor and positive have it, the negative not
    targets      (3B, C) float   multi-hot over global class ids (1 = positive label)
    target_mask  (3B, N) bool    attributes in which each image is annotated (BCE only there)
    index        (3B,) long  image ids (for prototype bookkeeping and debugging)

``forward(batch)`` returns a dict: ``loss`` (scalar tensor with grad, the weighted sum) and one
detached scalar per term, named ``loss_<term>`` (logged by the trainer).

``embed(images, gamma=..., max_classes=..., ranked=None)`` returns an :class:`Embeddings`.
``ranked`` (B, N) bool names the (image, attribute) pairs whose class level the caller ranks (the
evaluation ranks image i in attribute n only where i has a positive label in n; the val curve
ranks none): a model may leave the other pairs out of ``class_index`` (M3-Net does: its class
branch is most of its inference). The attribute-level embeddings cover every pair regardless.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Embeddings:
    attribute: torch.Tensor  # (B, N, D) L2-normalised attribute-specific embeddings
    probs: torch.Tensor | None = None  # (B, C) class probabilities P_n, concatenated over attributes
    class_index: torch.Tensor | None = None  # (P, 3) long: (image row, attribute id, class id)
    class_emb: torch.Tensor | None = None  # (P, D) L2-normalised class-specific embeddings

    def to(self, device) -> "Embeddings":
        f = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Embeddings(f(self.attribute), f(self.probs), f(self.class_index), f(self.class_emb))


def gamma_keep(probs: torch.Tensor, gamma: float, top1: torch.Tensor) -> torch.Tensor:
    """The gamma rule (docs/PROTOCOL.md), the one spelling of it: a class of an (image, attribute)
    pair is kept when its P_n > ``gamma``, and the pair's most probable class always (``top1``:
    bool, same shape as ``probs``, True at that class). ``gamma_classes`` adds the cap: at most
    ``max_classes``, most probable first. ``benchmark.evaluate`` filters one extraction by it."""
    return (probs > gamma) | top1


def gamma_classes(probs_bnm: torch.Tensor, gamma: float, max_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``probs_bnm`` (B, N, M): each pair's class probabilities, padded with values below any gamma
    (e.g. -1). Returns ``top_m`` (B, N, K) class ids, most probable first, and ``keep`` (B, N, K)
    bool: the classes :func:`gamma_keep` keeps, K = min(max_classes, M)."""
    K = min(max_classes, probs_bnm.shape[-1])
    top_p, top_m = probs_bnm.topk(K, dim=-1)
    first = torch.zeros_like(top_p, dtype=torch.bool)
    first[..., 0] = True
    return top_m, gamma_keep(top_p, gamma, first)


class RetrievalModel(nn.Module):
    #: evaluated with the multi-granularity ranking (docs/PROTOCOL.md#rankings) when True
    has_class_level: bool = False
    #: training phases in order (ASEN++ has two); the trainer calls set_phase before each
    phases: tuple[str, ...] = ("main",)
    #: the publication and code the model follows: the model card's ``reference`` (reports/models.md)
    reference: str | None = None

    def __init__(self, *, classes_per_attribute: list[int]):
        super().__init__()
        self.classes_per_attribute = list(classes_per_attribute)
        self.num_attributes = len(self.classes_per_attribute)
        self.num_classes = sum(self.classes_per_attribute)
        offsets = torch.tensor([0] + self.classes_per_attribute[:-1]).cumsum(0)
        # global class id = class_offsets[attribute] + class id
        self.register_buffer("class_offsets", offsets, persistent=False)
        self.phase = self.phases[0]

    def set_phase(self, phase: str) -> None:
        if phase not in self.phases:
            raise ValueError(f"{type(self).__name__} has phases {self.phases}, not {phase!r}")
        self.phase = phase

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups for the current phase (default: everything at lr)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16,
              ranked: torch.Tensor | None = None) -> Embeddings:
        raise NotImplementedError

    def attention_map(self, images: torch.Tensor, attribute: torch.Tensor, class_id: torch.Tensor | None = None):
        """(B, h, w) spatial attention for (image, attribute[, class]); None for models without one."""
        return None


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_mode(setting) -> str | None:
    """params' ``train.compile`` as a torch.compile mode: ``false``/``null`` -> None (eager);
    ``true`` -> ``default``; a mode name -> itself; anything else -> ValueError."""
    if setting is None or setting is False:
        return None
    mode = "default" if setting is True else setting
    if mode not in COMPILE_MODES:
        raise ValueError(f"train.compile must be false, true or one of {COMPILE_MODES}, got {setting!r}")
    return mode


def compiled(module: nn.Module, setting) -> nn.Module:
    """The module under :func:`compile_mode` (``setting``), or itself when eager.
    ``reduce-overhead`` captures CUDA graphs: at the paper's 16 triplets a step is bound by kernel
    launches, not arithmetic. torch.compile is lazy: nothing is compiled (and no C++ compiler
    needed) until the first call."""
    mode = compile_mode(setting)
    if mode is None:
        return module
    return torch.compile(module, mode=mode, dynamic=False)  # a training run has one batch shape
