"""M3-Net (CVPR 2023, paper section 3; docs/PROTOCOL.md#m3-net) and its two ablations, M3-Net_a and M3-Net_c.

psi = trunk(I)                                   generic map, (B, c, h, w)
phi_n = SCA-A(psi, n) * psi                      Alg. 1, Eq. 1
x_n = CCA-A(phi_n, n)                            Alg. 2, Eq. 2: attribute-specific, c-d
P_n = sigmoid(g_n(x_n))                          Eq. 3: multi-label, M_n classes
phi_bar = SCA-C_n(phi_n, m) * phi_n              Eq. 4
v = CCA-A(phi_bar, n)                            Eq. 5
x_nm = CCA-C_n(v, m)                             Eq. 6: class-specific, c-d
loss = L_M + L_CC + L_CI (+ L_AC + L_AI)         Eq. 7-11 (+ MODC's attribute-level terms)

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

from model.attention import ChannelConditionalAttention, SpatialConditionalAttention, grouped_linear
from model.backbone import build_trunk, trunk_channels
from model.base import Embeddings, RetrievalModel
from model.losses import PrototypeBank, attribute_bce, cosine_triplet, seen_mean
from model.registry import register_model

VARIANTS = ("full", "attribute", "class")


class M3Net(RetrievalModel):
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
        **kwargs,  # other params.yaml keys (lr, lr_decay, ...) belong to the trainer
    ):
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

    # --- the network ------------------------------------------------------------------------

    def generic_features(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """psi: (B, 3, H, W) -> (B, c, L), L = h*w, and (h, w)."""
        psi_bchw = self.trunk(images)
        return psi_bchw.flatten(2), tuple(psi_bchw.shape[2:])

    def attribute_branch(self, psi_bcl: torch.Tensor):
        """Every attribute of every image: alpha_n (B, N, L) (None for m3net_c) and x_n (B, N, c)."""
        B, c, L = psi_bcl.shape
        N = self.num_attributes
        if self.variant == "class":  # P_n from pooled psi: a uniform spatial attention
            return None, psi_bcl.mean(-1)[:, None, :].expand(B, N, c)
        sca, cca = self.spatial_attention_a, self.channel_attention_a
        _, bias_gd = sca.transform_weight()
        p1_b1dl = torch.tanh(sca.linear_part(psi_bcl) + bias_gd[0][None, None, :, None])  # Alg. 1 step 5, (B, 1, d, L)
        p2_b1nd = sca.label_features().expand(B, N, -1)[:, None]  # step 6, (B, 1, N, d)
        alpha_bnl = sca.attention(p1_b1dl, p2_b1nd)[:, 0]  # step 7, (B, N, L)
        q1_bnc = torch.bmm(alpha_bnl, psi_bcl.transpose(1, 2))  # q1(phi_n) = sum_l alpha * psi, (B, N, c)
        q2_bn1d = cca.label_features()[0][None, :, None, :].expand(B, N, 1, -1)  # (B, N, 1, d)
        x_bnc = cca(q1_bnc[:, :, None, :], q2_bn1d)[:, :, 0]  # Eq. 2, (B, N, c)
        return alpha_bnl, x_bnc

    def class_logits(self, x_bnc: torch.Tensor) -> torch.Tensor:
        """g_n (Eq. 3) for every attribute: (B, N, c) -> logits (B, C) over global class ids."""
        hidden_bn1d = F.relu(grouped_linear(x_bnc[:, :, None, :], self.g_w1, self.g_b1, None))
        logits_bnm = grouped_linear(hidden_bn1d, self.g_w2, self.g_b2, None)[:, :, 0]  # (B, N, max M_n)
        return logits_bnm.flatten(1)[:, self.class_slot]

    def class_branch(self, psi_bcl, alpha_brl, attr_br, class_brk, *, return_attention: bool = False):
        """Class-specific x_nm (B, R, K, c) for K classes (ids within attribute) per (image, attribute) row.

        ``attr_br`` (B, R) attribute ids, or None when the rows are all N attributes in order.
        ``alpha_brl`` is the row's SCA-A map (None for m3net_c, whose branch starts from psi).
        """
        B, c, L = psi_bcl.shape
        R, K = class_brk.shape[1], class_brk.shape[2]
        N = self.num_attributes
        sca, cca = self.spatial_attention_c, self.channel_attention_c
        attrs_br = attr_br if attr_br is not None else torch.arange(N, device=psi_bcl.device).expand(B, N)
        # SCA-C_n, Alg. 1 step 5 on phi_n: T_n(alpha * psi) = alpha * (W_n psi) + b_n; one conv, all attributes
        lin_bndl = sca.linear_part(psi_bcl)  # (B, N, d, L)
        if attr_br is not None:
            lin_brdl = lin_bndl.gather(1, attr_br[:, :, None, None].expand(B, R, *lin_bndl.shape[2:]))
        else:
            lin_brdl = lin_bndl
        _, bias_nd = sca.transform_weight()
        if alpha_brl is not None:
            lin_brdl = alpha_brl[:, :, None, :] * lin_brdl
        p1_brdl = torch.tanh(lin_brdl + bias_nd[attrs_br][..., None])  # (B, R, d, L)
        slot_brk = attrs_br[:, :, None] * self.max_classes + class_brk  # flat (attribute, class) slot
        p2_brkd = sca.label_features().flatten(0, 1)[slot_brk]  # step 6, (B, R, K, d)
        alpha_bar_brkl = sca.attention(p1_brdl, p2_brkd)  # step 7, (B, R, K, L)
        weight_brkl = alpha_bar_brkl if alpha_brl is None else alpha_bar_brkl * alpha_brl[:, :, None, :]
        # q1(phi_bar) = sum_l alpha_bar * alpha * psi (Eq. 4 pooled): (B, R*K, L) @ (B, L, c)
        q1_brkc = torch.bmm(weight_brkl.reshape(B, R * K, L), psi_bcl.transpose(1, 2)).view(B, R, K, c)
        if self.variant == "full":  # CCA-A on phi_bar (Eq. 5)
            q2a_brkd = self.channel_attention_a.label_features()[0][attrs_br][:, :, None, :].expand(B, R, K, -1)
            v_brkc = self.channel_attention_a(q1_brkc, q2a_brkd)
        else:
            v_brkc = q1_brkc
        q2c_brkd = cca.label_features().flatten(0, 1)[slot_brk]  # (B, R, K, d)
        x_brkc = cca(v_brkc, q2c_brkd, attr_br)  # CCA-C_n, Eq. 6 (q1 of a vector is the vector)
        return (x_brkc, alpha_bar_brkl) if return_attention else x_brkc

    # --- training ---------------------------------------------------------------------------

    def forward(self, batch: dict) -> dict:
        images, attribute, class_id = batch["images"], batch["attribute"], batch["class_id"]
        B = attribute.shape[0]
        psi_bcl, _ = self.generic_features(images)  # (3B, c, L)
        alpha_bnl, x_bnc = self.attribute_branch(psi_bcl)
        # L_M (Eq. 7) on every image, in every attribute it is annotated in
        logits_bC = self.class_logits(x_bnc)
        loss_m = attribute_bce(logits_bC, batch["targets"], self.w_p, self.class_attr, batch["target_mask"],
                               self.classes_per_attribute)

        attr_r = attribute.repeat(3)  # (3B,) anchors, positives, negatives share the triplet's attribute
        class_r = class_id.repeat(3)  # the anchor's class is applied to the negative too (docs/PROTOCOL.md#m3-net)
        row = torch.arange(3 * B, device=images.device)
        emb_attr = self.project(x_bnc[row, attr_r])  # (3B, D)
        global_id = self.class_offsets[attribute] + class_id  # (B,)
        a, p, n = emb_attr.split(B)
        proto = self.prototypes_attribute(global_id)
        # MODC's prototypical term on x_n, over the triplets whose class prototype was ever updated
        loss_ac = seen_mean(cosine_triplet(a, proto, n, self.margin), self.prototypes_attribute.seen[global_id])
        loss_ai = cosine_triplet(a, p, n, self.margin).mean()  # MODC's instance term on x_n
        zero = loss_m.new_zeros(())
        if self.variant == "attribute":  # class spaces are the attribute space: the same terms
            loss_cc, loss_ci = loss_ac, loss_ai
            total = self.lambdas["m"] * loss_m + self.lambdas["cc"] * loss_cc + self.lambdas["ci"] * loss_ci
        else:
            alpha_r1l = None if alpha_bnl is None else alpha_bnl[row, attr_r][:, None, :]
            x_c = self.class_branch(psi_bcl, alpha_r1l, attr_r[:, None], class_r[:, None, None])[:, 0, 0]
            emb_class = self.project(x_c)  # (3B, D)
            ca, cp, cn = emb_class.split(B)
            loss_cc = seen_mean(cosine_triplet(ca, self.prototypes_class(global_id), cn, self.margin),
                                self.prototypes_class.seen[global_id])  # Eq. 9, updated prototypes only
            loss_ci = cosine_triplet(ca, cp, cn, self.margin).mean()  # Eq. 10
            if self.variant == "class":
                loss_ac = loss_ai = zero
            total = sum(self.lambdas[k] * v for k, v in
                        dict(m=loss_m, cc=loss_cc, ci=loss_ci, ac=loss_ac, ai=loss_ai).items())  # Eq. 11
            if self.training:
                self.prototypes_class.update(global_id.repeat(2), torch.cat([ca, cp]))
        if self.training and self.variant != "class":
            self.prototypes_attribute.update(global_id.repeat(2), torch.cat([a, p]))
        out = {"loss": total}
        for k, v in dict(m=loss_m, cc=loss_cc, ci=loss_ci, ac=loss_ac, ai=loss_ai).items():
            out[f"loss_{k}"] = v.detach()
        return out

    # --- inference --------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16) -> Embeddings:
        psi_bcl, _ = self.generic_features(images)
        B, N = psi_bcl.shape[0], self.num_attributes
        alpha_bnl, x_bnc = self.attribute_branch(psi_bcl)
        probs_bC = torch.sigmoid(self.class_logits(x_bnc))
        emb_attr_bnd = F.normalize(self.project(x_bnc), dim=-1)
        # classes per (image, attribute): P_n > gamma, else the top-1; highest first, at most max_classes
        padded = probs_bC.new_full((B, N * self.max_classes), -1.0)
        padded[:, self.class_slot] = probs_bC
        K = min(max_classes, self.max_classes)
        top_p, top_m = padded.view(B, N, self.max_classes).topk(K, dim=-1)  # (B, N, K)
        keep_bnk = top_p > gamma
        keep_bnk[..., 0] = True
        K = int(keep_bnk.sum(-1).max())  # inference may sync: drop the columns nobody uses
        top_m, keep_bnk = top_m[..., :K], keep_bnk[..., :K]
        if self.variant == "attribute":
            x_bnkd = emb_attr_bnd[:, :, None, :].expand(B, N, K, -1)
        else:
            x_bnkd = F.normalize(self.project(self.class_branch(psi_bcl, alpha_bnl, None, top_m)), dim=-1)
        b, n, k = keep_bnk.nonzero(as_tuple=True)  # row-major: image, attribute, then highest class first
        class_index = torch.stack([b, n, top_m[b, n, k]], dim=1)  # (P, 3)
        return Embeddings(attribute=emb_attr_bnd, probs=probs_bC, class_index=class_index, class_emb=x_bnkd[b, n, k])

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


@register_model("m3net")
def m3net(**kwargs) -> M3Net:
    kwargs.pop("variant", None)
    return M3Net(variant="full", **kwargs)


@register_model("m3net_a")
def m3net_a(**kwargs) -> M3Net:
    kwargs.pop("variant", None)
    return M3Net(variant="attribute", **kwargs)


@register_model("m3net_c")
def m3net_c(**kwargs) -> M3Net:
    kwargs.pop("variant", None)
    return M3Net(variant="class", **kwargs)


@register_model("m3net_eq11")
def m3net_eq11(**kwargs) -> M3Net:
    """M3-Net on the literal Eq. 11 (L_M + L_CC + L_CI): lambda_ac = lambda_ai = 0, enforced."""
    kwargs.pop("variant", None)
    for k in ("lambda_ac", "lambda_ai"):
        if float(kwargs.get(k, 0.0)) != 0.0:
            raise ValueError(f"m3net_eq11 is the literal Eq. 11: {k} must be 0, got {kwargs[k]}")
        kwargs[k] = 0.0
    return M3Net(variant="full", **kwargs)
