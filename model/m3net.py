"""M3-Net (CVPR 2023, paper section 3; docs/PROTOCOL.md#m3-net) and its two ablations, M3-Net_a and M3-Net_c.

Section 3, step by step, and the method that computes it (SCA and CCA: model/attention.py):

psi = trunk(I)                                (B, c, h, w)       generic_features
alpha_n = SCA-A(psi, n), phi_n = alpha_n psi  Alg. 1, Eq. 1      attribute_branch
x_n = CCA-A(phi_n, n)                         Alg. 2, Eq. 2      attribute_branch: attribute-specific, c-d
P_n = sigmoid(g_n(x_n))                       Eq. 3              class_logits: multi-label, M_n classes
alpha_bar = SCA-C_n(phi_n, m),
    phi_bar = alpha_bar phi_n                 Eq. 4              class_branch
v = CCA-A(phi_bar, n)                         Eq. 5              class_branch
x_nm = CCA-C_n(v, m)                          Eq. 6              class_branch: class-specific, c-d
L_M, multi-label BCE on P_n                   Eq. 7              forward (model/losses.py attribute_bce)
max(0, zeta + s(a, neg) - s(a, pos))          Eq. 8's triplet    prototype_triplets (cosine_triplet)
L_CC, L_CI on x_nm; L_AC, L_AI on x_n         Eq. 9, 10; MODC's  prototype_triplets, once per space
loss = L_M + L_CC + L_CI (+ L_AC + L_AI)      Eq. 11 (+ MODC's attribute-level terms)   forward
prototypes: EMA of anchors and positives      MODC's clustering  forward (model/losses.py PrototypeBank)

Nothing of size c x h x w is built per (image, attribute, class): see model/attention.py for
the factoring. Rows of the head are (image, attribute) pairs with K classes each: in training
R = 1 attribute (the triplet's) and K = 1 class per image; in ``embed`` R = N, K <= max_classes.

Variants (the paper's ablations, section 4; docs/PROTOCOL.md#m3-net-ablations):
- ``m3net``: all of the above.
- ``m3net_a``: no class-conditional modules; the class spaces are the attribute space, with one
  prototype per class there (as MODC). L_CC / L_CI then coincide with the attribute-level
  terms L_AC / L_AI and are counted once (weights lambda_cc, lambda_ci).
- ``m3net_eq11``: ``m3net`` trained on the literal Eq. 11, L = L_M + L_CC + L_CI: MODC's
  attribute-level terms are off (lambda_ac = lambda_ai = 0). ``m3net`` keeps them (weight 1), since
  the paper says it builds on MODC's attribute-level losses; both are reported.
- ``m3net_c``: no attribute-conditional modules; the class branch starts from psi (SCA-C_n on
  psi, no CCA-A) and P_n comes from mean-pooled psi, which is also the attribute-level
  embedding used for ranking. There is no attribute-specific space to shape, so L_AC = L_AI = 0.

Embedding size: the paper's embeddings are c-dimensional (1024 = ResNet-50 layer3). When
``embed_dim`` differs from the trunk's c (the twin profile's resnet18 trunk has c = 256 while
params say 1024) a bias-free linear c -> embed_dim, shared by both granularities, maps x_n and
x_nm; with embed_dim == c it is the identity, as in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import ChannelConditionalAttention, SpatialConditionalAttention, grouped_linear, pool
from model.backbone import build_trunk, trunk_channels
from model.base import Embeddings, RetrievalModel, gamma_classes
from model.losses import PrototypeBank, attribute_bce, cosine_triplet, seen_mean
from model.registry import register_model

VARIANTS = ("full", "attribute", "class")


class M3Net(RetrievalModel):
    #: the publication and code this model follows (the model card's ``reference``)
    reference = ('Jiao et al., "Learning Attribute and Class-Specific Representation Duet for Fine-grained Fashion Analysis", CVPR 2023; '
                 'no public code (docs/PROTOCOL.md)')
    has_class_level = True

    def __init__(
        self,
        *,
        classes_per_attribute: list[int],
        variant: str = "full",
        backbone: str = "resnet50_layer3",
        pretrained: bool = True,
        embed_dim: int = 1024,
        inner_dim: int = 512,
        margin: float = 0.4,
        w_p: float | dict = 1.0,
        lambda_m: float = 1.0,
        lambda_cc: float = 1.0,
        lambda_ci: float = 1.0,
        lambda_ac: float = 1.0,
        lambda_ai: float = 1.0,
        prototype_momentum: float = 0.9,
        dataset: str | None = None,
        trunk: nn.Module | None = None,
    ):  # no **kwargs: the trainer keeps its own keys (lr, lr_decay, ...), so a misspelt key fails here
        super().__init__(classes_per_attribute=classes_per_attribute)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        if isinstance(w_p, dict):  # params.yaml gives w_p per dataset (100 DeepFashion, 1 others)
            if dataset is None:
                raise ValueError("w_p is given per dataset; pass dataset= to pick one")
            w_p = w_p[dataset]
        self.variant = variant
        self.margin, self.w_p = float(margin), float(w_p)
        self.lambdas = dict(m=lambda_m, cc=lambda_cc, ci=lambda_ci, ac=lambda_ac, ai=lambda_ai)
        # `trunk` lets tests plug a tiny network; its out_channels must then be given by attribute
        self.trunk = trunk if trunk is not None else build_trunk(backbone, pretrained=pretrained)
        c = getattr(self.trunk, "out_channels", None) or trunk_channels(backbone)
        d, N = inner_dim, self.num_attributes
        self.channels, self.inner_dim, self.embed_dim = c, d, embed_dim
        self.max_classes = max(self.classes_per_attribute)  # class tables are padded to this

        # global class id -> attribute, class within attribute, flat slot in an (N, max M_n) table
        class_attr = torch.repeat_interleave(torch.arange(N), torch.tensor(self.classes_per_attribute))
        class_local = torch.arange(self.num_classes) - self.class_offsets[class_attr]
        self.register_buffer("class_attr", class_attr, persistent=False)  # (C,)
        self.register_buffer("class_slot", class_attr * self.max_classes + class_local, persistent=False)

        if variant != "class":  # attribute-conditional modules
            self.spatial_attention_a = SpatialConditionalAttention(in_channels=c, inner_dim=d, num_labels=N)
            self.channel_attention_a = ChannelConditionalAttention(in_channels=c, inner_dim=d, num_labels=N)
        if variant != "attribute":  # class-conditional modules, one copy per attribute
            kw = dict(in_channels=c, inner_dim=d, num_labels=self.max_classes, groups=N)
            self.spatial_attention_c = SpatialConditionalAttention(**kw)
            self.channel_attention_c = ChannelConditionalAttention(**kw)
        # g_n (Eq. 3): per-attribute MLP c -> c' -> M_n, all attributes in one grouped matmul
        self.g_w1 = nn.Parameter(torch.empty(N, c, d).uniform_(-1 / math.sqrt(c), 1 / math.sqrt(c)))
        self.g_b1 = nn.Parameter(torch.zeros(N, d))
        self.g_w2 = nn.Parameter(torch.empty(N, d, self.max_classes).uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d)))
        self.g_b2 = nn.Parameter(torch.zeros(N, self.max_classes))
        self.project = nn.Identity() if embed_dim == c else nn.Linear(c, embed_dim, bias=False)
        # prototypes (MODC's online clustering), one per global class in each granularity's space
        self.prototypes_attribute = PrototypeBank(self.num_classes, embed_dim, prototype_momentum)
        if variant == "full" or variant == "class":
            self.prototypes_class = PrototypeBank(self.num_classes, embed_dim, prototype_momentum)

    # --- the network (paper section 3) ------------------------------------------------------

    def generic_features(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """psi = trunk(I): (B, 3, H, W) -> (B, c, L), L = h*w, and (h, w)."""
        psi_bchw = self.trunk(images)
        return psi_bchw.flatten(2), tuple(psi_bchw.shape[2:])

    def attribute_branch(self, psi_bcl: torch.Tensor):
        """Attribute level (Eq. 1-2), every attribute of every image: alpha_n (B, N, L) (None for
        m3net_c) and x_n (B, N, c). SCA-A and CCA-A see one row per image whose K labels are the N
        attributes (one group: the row layout costs nothing)."""
        B, c, _ = psi_bcl.shape
        N = self.num_attributes
        if self.variant == "class":  # m3net_c: P_n from pooled psi, a uniform spatial attention
            return None, psi_bcl.mean(-1)[:, None, :].expand(B, N, c)
        attrs_11n = torch.arange(N, device=psi_bcl.device)[None, None, :]  # the same N labels for every image
        alpha_b1nl = self.spatial_attention_a(psi_bcl, attrs_11n)  # Eq. 1: phi_n = SCA-A(psi, n) = alpha_n * psi
        q1_b1nc = pool(alpha_b1nl, psi_bcl)  # Alg. 2 step 5: q1(phi_n) = sum_l alpha_n psi
        x_b1nc = self.channel_attention_a(q1_b1nc, attrs_11n)  # Eq. 2: x_n = CCA-A(phi_n, n)
        return alpha_b1nl[:, 0], x_b1nc[:, 0]

    def class_logits(self, x_bnc: torch.Tensor) -> torch.Tensor:
        """Eq. 3, g_n for every attribute (P_n = sigmoid of these): (B, N, c) -> logits (B, C) over
        global class ids."""
        hidden_bn1d = F.relu(grouped_linear(x_bnc[:, :, None, :], self.g_w1, self.g_b1, None))
        logits_bnm = grouped_linear(hidden_bn1d, self.g_w2, self.g_b2, None)[:, :, 0]  # (B, N, max M_n)
        return logits_bnm.flatten(1)[:, self.class_slot]

    def class_branch(self, psi_bcl, alpha_brl, attr_br, class_brk, *, return_attention: bool = False):
        """Class level (Eq. 4-6): x_nm (B, R, K, c) for K classes (ids within attribute) per
        (image, attribute) row, and with ``return_attention`` the SCA-C_n maps alpha_bar (B, R, K, L).

        ``attr_br`` (B, R) attribute ids, or None when the rows are all N attributes in order.
        ``alpha_brl`` is the row's SCA-A map alpha_n (None for m3net_c, whose branch starts from psi).
        """
        B, R, K = class_brk.shape
        attrs_br = attr_br if attr_br is not None else torch.arange(R, device=psi_bcl.device)[None, :]
        # Eq. 4: phi_bar = SCA-C_n(phi_n, m) = alpha_bar * phi_n, phi_n = alpha_n * psi (m3net_c: psi)
        alpha_bar_brkl = self.spatial_attention_c(psi_bcl, class_brk, attr_br, prior_brl=alpha_brl)
        weight_brkl = alpha_bar_brkl if alpha_brl is None else alpha_bar_brkl * alpha_brl[:, :, None, :]
        q1_brkc = pool(weight_brkl, psi_bcl)  # Alg. 2 step 5: q1(phi_bar) = sum_l alpha_bar alpha_n psi
        if self.variant == "full":  # Eq. 5: v = CCA-A(phi_bar, n), the attribute level's CCA-A
            v_brkc = self.channel_attention_a(q1_brkc, attrs_br[:, :, None])
        else:  # m3net_c has no CCA-A: v = q1(phi_bar)
            v_brkc = q1_brkc
        x_brkc = self.channel_attention_c(v_brkc, class_brk, attr_br)  # Eq. 6: x_nm = CCA-C_n(v, m)
        return (x_brkc, alpha_bar_brkl) if return_attention else x_brkc

    # --- training: the multi-task objective (Eq. 7-11) ----------------------------------------

    def prototype_triplets(self, emb_3bd: torch.Tensor, bank: PrototypeBank, global_id_b: torch.Tensor):
        """The two triplets of one granularity's space (Eq. 8's form, cosine similarity, margin zeta)
        on the (3B, D) anchors, positives, negatives: (prototypical, instance). The prototypical term
        (Eq. 9 in class space, MODC's L_AC in attribute space) has the prototype of the triplet's
        class as positive and averages over the triplets whose prototype was ever updated; the
        instance term (Eq. 10, MODC's L_AI) is the plain triplet."""
        a, p, n = emb_3bd.split(len(global_id_b))
        proto = seen_mean(cosine_triplet(a, bank(global_id_b), n, self.margin), bank.seen[global_id_b])
        return proto, cosine_triplet(a, p, n, self.margin).mean()

    def forward(self, batch: dict) -> dict:
        images, attribute, class_id = batch["images"], batch["attribute"], batch["class_id"]
        B = attribute.shape[0]
        global_id = self.class_offsets[attribute] + class_id  # (B,) the triplet's class
        psi_bcl, _ = self.generic_features(images)  # (3B, c, L)
        alpha_bnl, x_bnc = self.attribute_branch(psi_bcl)  # Eq. 1-2
        # Eq. 3, 7: L_M on every image, in every attribute it is annotated in
        loss_m = attribute_bce(self.class_logits(x_bnc), batch["targets"], self.w_p, self.class_attr,
                               batch["target_mask"], self.classes_per_attribute)

        # all 3B images in the triplet's attribute; the anchor's class is applied to the negative
        # too (docs/PROTOCOL.md#m3-net)
        attr_r, class_r = attribute.repeat(3), class_id.repeat(3)
        row = torch.arange(3 * B, device=images.device)
        emb_attr = self.project(x_bnc[row, attr_r])  # (3B, D) x_n
        loss_ac, loss_ai = self.prototype_triplets(emb_attr, self.prototypes_attribute, global_id)  # MODC's
        if self.variant == "attribute":  # the class spaces are the attribute space: the same terms
            emb_class = None
            loss_cc, loss_ci = loss_ac, loss_ai
        else:
            alpha_r1l = None if alpha_bnl is None else alpha_bnl[row, attr_r][:, None, :]
            x_c = self.class_branch(psi_bcl, alpha_r1l, attr_r[:, None], class_r[:, None, None])[:, 0, 0]  # Eq. 4-6
            emb_class = self.project(x_c)  # (3B, D) x_nm
            loss_cc, loss_ci = self.prototype_triplets(emb_class, self.prototypes_class, global_id)  # Eq. 9, 10
            if self.variant == "class":  # no attribute-specific space to shape
                loss_ac = loss_ai = loss_m.new_zeros(())
        terms = dict(m=loss_m, cc=loss_cc, ci=loss_ci, ac=loss_ac, ai=loss_ai)
        # Eq. 11 (+ MODC's attribute-level terms); m3net_a counts its L_AC / L_AI once, as L_CC / L_CI
        trained = ("m", "cc", "ci") if self.variant == "attribute" else tuple(terms)
        total = sum(self.lambdas[k] * terms[k] for k in trained)

        if self.training:  # MODC's online clustering: anchors and positives update their class prototype
            if emb_class is not None:
                self.prototypes_class.update(global_id.repeat(2), emb_class[: 2 * B])
            if self.variant != "class":
                self.prototypes_attribute.update(global_id.repeat(2), emb_attr[: 2 * B])
        return {"loss": total, **{f"loss_{k}": v.detach() for k, v in terms.items()}}

    # --- inference --------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16,
              ranked: torch.Tensor | None = None) -> Embeddings:
        """``ranked`` (B, N) bool: the (image, attribute) pairs whose class level the caller ranks
        (None: every pair). The class branch runs on those rows only: the evaluation ranks image i
        in attribute n only where i has a positive label in n (1 of 8 pairs on FashionAI)."""
        psi_bcl, _ = self.generic_features(images)
        B, N = psi_bcl.shape[0], self.num_attributes
        alpha_bnl, x_bnc = self.attribute_branch(psi_bcl)
        probs_bC = torch.sigmoid(self.class_logits(x_bnc))
        emb_attr_bnd = F.normalize(self.project(x_bnc), dim=-1)
        # classes per (image, attribute): the gamma rule (model.base.gamma_keep), at most max_classes
        padded = probs_bC.new_full((B, N * self.max_classes), -1.0)
        padded[:, self.class_slot] = probs_bC
        top_m, keep_bnk = gamma_classes(padded.view(B, N, self.max_classes), gamma, max_classes)  # (B, N, K)
        if ranked is not None:
            keep_bnk &= ranked.to(device=keep_bnk.device, dtype=torch.bool)[:, :, None]
        K = int(keep_bnk.sum(-1).max()) if keep_bnk.numel() else 0  # inference may sync: drop unused columns
        top_m, keep_bnk = top_m[..., :K], keep_bnk[..., :K]
        b, n, k = keep_bnk.nonzero(as_tuple=True)  # row-major: image, attribute, then highest class first
        class_index = torch.stack([b, n, top_m[b, n, k]], dim=1)  # (P, 3)
        if self.variant == "attribute":
            class_emb = emb_attr_bnd[b, n]
        elif len(b) == 0:  # no ranked pair in this batch
            class_emb = emb_attr_bnd.new_zeros(0, emb_attr_bnd.shape[-1])
        elif ranked is None:
            class_emb = F.normalize(self.project(self.class_branch(psi_bcl, alpha_bnl, None, top_m)), dim=-1)[b, n, k]
        else:  # one row per (image, attribute) pair with a kept class, as the training step's rows
            pb, pn = keep_bnk.any(-1).nonzero(as_tuple=True)
            row = torch.full(keep_bnk.shape[:2], -1, dtype=torch.long, device=keep_bnk.device)
            row[pb, pn] = torch.arange(len(pb), device=keep_bnk.device)
            alpha_p1l = None if alpha_bnl is None else alpha_bnl[pb, pn][:, None, :]
            x_p1kc = self.class_branch(psi_bcl[pb], alpha_p1l, pn[:, None], top_m[pb, pn][:, None, :])
            class_emb = F.normalize(self.project(x_p1kc[:, 0]), dim=-1)[row[b, n], k]
        return Embeddings(attribute=emb_attr_bnd, probs=probs_bC, class_index=class_index, class_emb=class_emb)

    @torch.no_grad()
    def attention_map(self, images: torch.Tensor, attribute: torch.Tensor, class_id: torch.Tensor | None = None):
        """(B, h, w): the SCA-A map of ``attribute`` or, given ``class_id``, the SCA-C_n map of that class."""
        psi_bcl, (h, w) = self.generic_features(images)
        B = psi_bcl.shape[0]
        row = torch.arange(B, device=images.device)
        alpha_bnl, _ = self.attribute_branch(psi_bcl)
        if class_id is None:
            return None if alpha_bnl is None else alpha_bnl[row, attribute].view(B, h, w)
        if self.variant == "attribute":
            return None
        alpha_b1l = None if alpha_bnl is None else alpha_bnl[row, attribute][:, None, :]
        _, alpha_bar = self.class_branch(psi_bcl, alpha_b1l, attribute[:, None], class_id[:, None, None],
                                         return_attention=True)
        return alpha_bar[:, 0, 0].view(B, h, w)


# The registry name fixes the branch (params.yaml has no `variant`); the keyword arguments go to
# M3Net's constructor, which names every one it takes.
@register_model("m3net")
def m3net(**kwargs) -> M3Net:
    return M3Net(variant="full", **kwargs)


@register_model("m3net_a")
def m3net_a(**kwargs) -> M3Net:
    return M3Net(variant="attribute", **kwargs)


@register_model("m3net_c")
def m3net_c(**kwargs) -> M3Net:
    return M3Net(variant="class", **kwargs)


@register_model("m3net_eq11")
def m3net_eq11(**kwargs) -> M3Net:
    """M3-Net on the literal Eq. 11 (L_M + L_CC + L_CI): lambda_ac = lambda_ai = 0, enforced."""
    for k in ("lambda_ac", "lambda_ai"):
        if float(kwargs.get(k, 0.0)) != 0.0:
            raise ValueError(f"m3net_eq11 is the literal Eq. 11: {k} must be 0, got {kwargs[k]}")
        kwargs[k] = 0.0
    return M3Net(variant="full", **kwargs)
