"""A Conditional Similarity Network (Veit et al., CVPR 2017) as a fashionbench model, built from
outside the suite: params.yaml's ``models.csn.module: fashionbench_example.csn`` imports this file,
whose ``@register_model("csn")`` makes it buildable by name (examples/mymodel/README.md).

One embedding f = FC(avgpool(CNN(I))) of the whole image; attribute a sees it through a learned
non-negative mask m_a (ReLU of a learned vector): f_a = normalize(m_a * f). Loss: the cosine
triplet of each triplet in its attribute, plus an L1 penalty on the masks (the paper's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.backbone import build_trunk, trunk_channels
from model.base import Embeddings, RetrievalModel
from model.losses import cosine_triplet
from model.registry import register_model


@register_model("csn")
class CSN(RetrievalModel):
    reference = "Veit et al., Conditional Similarity Networks, CVPR 2017; github.com/andreasveit/conditional-similarity-networks"

    def __init__(self, *, classes_per_attribute: list[int], backbone: str = "resnet50_layer3",
                 pretrained: bool = True, embed_dim: int = 64, margin: float = 0.2, mask_l1: float = 5e-4):
        super().__init__(classes_per_attribute=classes_per_attribute)
        self.margin, self.mask_l1, self.embed_dim = float(margin), float(mask_l1), int(embed_dim)
        self.trunk = build_trunk(backbone, pretrained=pretrained)
        self.fc = nn.Linear(trunk_channels(backbone), self.embed_dim)
        self.masks = nn.Parameter(torch.empty(self.num_attributes, self.embed_dim).normal_(0.9, 0.7))

    def attribute_embedding(self, images: torch.Tensor, attr_bk: torch.Tensor) -> torch.Tensor:
        """(B, ...) images (or cached trunk maps), (B, K) attribute ids -> L2-normalised (B, K, D)."""
        f_bd = self.fc(self.trunk(images).float().mean(dim=(2, 3)))
        return F.normalize(f_bd[:, None, :] * F.relu(self.masks)[attr_bk], dim=-1)

    def forward(self, batch: dict) -> dict:
        attr_3b = batch["attribute"].repeat(3)  # every image of a triplet in the triplet's attribute
        a, p, n = self.attribute_embedding(batch["images"], attr_3b[:, None])[:, 0].chunk(3)
        loss_triplet = cosine_triplet(a, p, n, self.margin).mean()
        loss_mask = self.mask_l1 * F.relu(self.masks).abs().sum(dim=1).mean()
        return {"loss": loss_triplet + loss_mask, "loss_triplet": loss_triplet.detach(), "loss_mask": loss_mask.detach()}

    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16,
              ranked: torch.Tensor | None = None) -> Embeddings:
        attr_bn = torch.arange(self.num_attributes, device=images.device).expand(images.shape[0], -1)
        return Embeddings(attribute=self.attribute_embedding(images, attr_bn))
