"""MODC: fine-grained fashion representation learning by online deep clustering (Jiao et al., ECCV
2022; M3-Net paper ref. [14]).

Attribute-specific embeddings x_n = normalize(FC(ACA(ASA(psi, n), n)))  (B, D), D = 2048 in the
paper, live in N spaces; each space is split into class clusters by one prototype per class
(global class id = class_offsets[n] + m), an EMA of the normalised embeddings of the training
images of that class (model/losses.py PrototypeBank, renormalised after each update).
Losses, cosine similarity s, margin zeta (0.4, docs/PROTOCOL.md#modc):
    L_proto = max(0, zeta + s(x_a, x_neg) - s(x_a, prototype[m]))   prototypical triplet
    L_inst  = max(0, zeta + s(x_a, x_neg) - s(x_a, x_pos))           instance triplet
    L = lambda_proto L_proto + lambda_instance L_inst
Inference: each (image, attribute n) is assigned the class of its nearest prototype in space n;
that gives the class level of the multi-granularity ranking, whose class space is the
attribute space itself (class_emb = x_n).

Choices where the paper is silent (docs/PROTOCOL.md#modc):
- the head is ASEN_v2's (512-d attribute embedding, BN + scaled dot-product spatial attention,
  channel attention) followed by an FC to ``embed_dim``, on the shared layer3 trunk (the paper's
  2048-d comes from that FC here, not from ResNet's layer4);
- prototypes are updated after the loss of the step is computed, with every (image, class) pair of
  the batch in the triplet's attribute (all three images, every positive class in the multi-hot
  targets), so a multi-label image pulls each of its class prototypes;
- a prototype that has never been updated (still its random start) is left out of L_proto and
  of the nearest-prototype assignment (in an attribute none of whose prototypes was updated, all
  of them compete);
- ``probs`` is None: MODC has no classifier, its class level is the hard nearest-prototype
  assignment, which no gamma changes (the evaluator keeps every class_index row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.backbone import build_trunk, trunk_channels
from model.base import Embeddings, RetrievalModel
from model.blocks import AttributeHead, all_attributes, split_triplet
from model.losses import PrototypeBank, cosine_triplet, seen_mean
from model.registry import register_model


@register_model("modc")
class MODC(RetrievalModel):
    #: the publication and code this model follows (the model card's ``reference``)
    reference = ('Jiao et al., "Fine-Grained Fashion Representation Learning by Online Deep Clustering", ECCV 2022; '
                 'no public code (docs/PROTOCOL.md)')
    has_class_level = True

    def __init__(self, *, classes_per_attribute: list[int], backbone: str = "resnet50_layer3",
                 pretrained: bool = True, embed_dim: int = 2048, margin: float = 0.4,
                 inner_dim: int = 512, prototype_momentum: float = 0.9, lambda_proto: float = 1.0,
                 lambda_instance: float = 1.0):
        super().__init__(classes_per_attribute=classes_per_attribute)
        self.margin = float(margin)
        self.lambda_proto, self.lambda_instance = float(lambda_proto), float(lambda_instance)
        self.trunk = build_trunk(backbone, pretrained=pretrained)
        self.head = AttributeHead(
            num_attributes=self.num_attributes, in_channels=trunk_channels(backbone), out_dim=embed_dim,
            attribute_input="embedding", inner_dim=inner_dim, score="scaled_dot", batch_norm=True)
        self.embed_dim = embed_dim
        self.prototypes = PrototypeBank(self.num_classes, embed_dim, momentum=prototype_momentum)  # (C, D)
        # attribute of each global class id: (C,)
        attr_of_class = torch.repeat_interleave(
            torch.arange(self.num_attributes), torch.tensor(self.classes_per_attribute))
        self.register_buffer("attribute_of_class", attr_of_class, persistent=False)

    def attribute_embedding(self, images: torch.Tensor, attr_bk: torch.Tensor):
        """(B, 3, H, W), (B, K) -> L2-normalised x (B, K, D), attention (B, K, h, w)."""
        emb_bkd, attn_bkhw = self.head(self.trunk(images), attr_bk)
        return F.normalize(emb_bkd, dim=-1), attn_bkhw

    def forward(self, batch: dict) -> dict:
        attribute_b = batch["attribute"]
        attr_3b = attribute_b.repeat(3)  # (3B,)
        x_3bd = self.attribute_embedding(batch["images"], attr_3b[:, None])[0][:, 0]
        anchor_bd, positive_bd, negative_bd = split_triplet(x_3bd)
        class_gid_b = self.class_offsets[attribute_b] + batch["class_id"]  # (B,) global class ids
        # prototypical triplet: the anchor's own class prototype is the positive
        proto_bd = self.prototypes.get(class_gid_b)
        loss_proto = seen_mean(cosine_triplet(anchor_bd, proto_bd, negative_bd, self.margin),
                               self.prototypes.seen[class_gid_b])
        loss_instance = cosine_triplet(anchor_bd, positive_bd, negative_bd, self.margin).mean()
        if self.training:
            self._update_prototypes(x_3bd, attr_3b, batch.get("targets"), class_gid_b)
        loss = self.lambda_proto * loss_proto + self.lambda_instance * loss_instance
        return {"loss": loss, "loss_proto": loss_proto.detach(), "loss_instance": loss_instance.detach()}

    @torch.no_grad()
    def _update_prototypes(self, x_3bd, attr_3b, targets_3bc, class_gid_b) -> None:
        """Online clustering step: EMA of each class's member embeddings into its prototype."""
        if targets_3bc is None:  # only the sampled class is known: anchors and positives have it
            ids = class_gid_b.repeat(2)
            self.prototypes.update(ids, x_3bd[: 2 * class_gid_b.shape[0]])
            return
        # (image, class) pairs: a positive label in a class of the triplet's attribute
        in_attr_3bc = self.attribute_of_class[None, :] == attr_3b[:, None]  # (3B, C)
        row_p, gid_p = ((targets_3bc > 0) & in_attr_3bc).nonzero(as_tuple=True)
        self.prototypes.update(gid_p, x_3bd[row_p])

    def nearest_prototype(self, x_bnd: torch.Tensor) -> torch.Tensor:
        """(B, N, D) normalised -> (B, N) class id within each attribute of the nearest prototype."""
        sim_bnc = x_bnd @ self.prototypes.prototypes.t().to(x_bnd.dtype)  # (B, N, C) cosine
        own_nc = self.attribute_of_class[None, :] == torch.arange(self.num_attributes, device=x_bnd.device)[:, None]
        # a prototype never updated (a class absent from training) is still its random start, no
        # class centre: it cannot be assigned, unless none of attribute n's prototypes was updated
        seen_nc = own_nc & self.prototypes.seen[None, :]
        allowed_nc = torch.where(seen_nc.any(-1, keepdim=True), seen_nc, own_nc)
        sim_bnc = sim_bnc.masked_fill(~allowed_nc, float("-inf"))  # only attribute n's classes compete
        return sim_bnc.argmax(-1) - self.class_offsets[None, :]

    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16,
              ranked: torch.Tensor | None = None) -> Embeddings:
        b = images.shape[0]
        attr_bn = all_attributes(b, self.num_attributes, images.device)
        x_bnd, _ = self.attribute_embedding(images, attr_bn)
        class_bn = self.nearest_prototype(x_bnd)  # (B, N)
        rows_bn = torch.arange(b, device=images.device)[:, None].expand_as(class_bn)
        class_index_p3 = torch.stack([rows_bn, attr_bn, class_bn], dim=-1).reshape(-1, 3)  # (B*N, 3)
        return Embeddings(attribute=x_bnd, probs=None, class_index=class_index_p3,
                          class_emb=x_bnd.reshape(-1, x_bnd.shape[-1]))

    def attention_map(self, images: torch.Tensor, attribute: torch.Tensor, class_id=None):
        return self.attribute_embedding(images, attribute[:, None])[1][:, 0]  # (B, h, w)
