"""The attribute-blind control: what a model must beat to show that it learned the attribute.

``attribute_blind`` embeds an image by its trunk's average-pooled map, L2-normalised, and uses that
one vector for every attribute: no head, no training, no notion of which attribute is asked. On
the twin profile its trunk is the seed's shared trunk (``features:<backbone>``: its input is the
cached map), so it sees exactly what every model's head of that seed sees; under an end-to-end
profile it is the profile's backbone as built (ImageNet weights where the cache has them). An
attribute-aware model that does not beat it has learned nothing the trunk did not already give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.backbone import build_trunk
from model.base import Embeddings, RetrievalModel
from model.registry import register_model


@register_model("attribute_blind")
class AttributeBlind(RetrievalModel):
    #: the publication and code this model follows (the model card's ``reference``)
    reference = "the suite's control: the shared trunk's pooled map, no head (docs/PROTOCOL.md)"

    def __init__(self, *, classes_per_attribute: list[int], backbone: str = "resnet50_layer3",
                 pretrained: bool = True):
        super().__init__(classes_per_attribute=classes_per_attribute)
        self.trunk = build_trunk(backbone, pretrained=pretrained)

    def forward(self, batch: dict) -> dict:
        raise RuntimeError("attribute_blind is a control: it has no head and is never trained")

    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16,
              ranked: torch.Tensor | None = None) -> Embeddings:
        pooled = F.normalize(self.trunk(images).float().mean(dim=(2, 3)), dim=-1)  # (B, c)
        return Embeddings(attribute=pooled[:, None, :].expand(-1, self.num_attributes, -1).contiguous())
