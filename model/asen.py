"""ASEN: Attribute-Specific Embedding Network (Ma et al., AAAI 2020; M3-Net paper ref. [19]).

One network, N attribute-specific embedding spaces. For image I and attribute a (section 3):
    psi = CNN(I)                                    (B, c, h, w), ResNet-50 to layer3, c = 1024
    ASA (section 3.2, Eq. 1-2): alpha = softmax_p( tanh( conv1x1( tanh(conv1x1(psi)) * tanh(FC(onehot(a))) ) ) )
                                 x = sum_p alpha_p psi_p                      (B, c)
    ACA (section 3.3, Eq. 3-4): beta = sigmoid(FC(relu(FC([x; relu(FC(onehot(a)))]))))
                                 x = beta * x                                 (B, c)
    f = normalize(FC(x))                             (B, D), D = embed_dim (1024)
Loss (section 3.4, Eq. 5): triplet ranking on cosine similarities, margin 0.2, the triplet
compared in its sampled attribute.

Sizes and choices from the authors' code (Maryeon/asen, model.py ``ASENet``; docs/PROTOCOL.md#asen):
- the tanh after the one-channel 1x1 conv (``conv2 -> tanh -> softmax``): the logits lie in
  [-1, 1], so the softmax over the 14 x 14 positions is nearly flat (max / min weight <= e^2);
- the attribute FCs on the one-hot vector have no bias: ``mask_fc1`` N -> 512 (spatial branch,
  ``inner_dim``), ``mask_fc2`` N -> 1024 = c (channel branch); the channel MLP is then
  ``fc1`` 2c -> c / 2 (2048 -> 512) and ``fc2`` c / 2 -> c; the spatial inner width is ``inner_dim``;
- the loss is averaged over the B triplets of the batch (MarginRankingLoss's mean).
Schedule (the trainer's, params.yaml ``models.asen.lr_schedule``; main.py's defaults): Adam, lr 1e-4,
StepLR(step_size 1, gamma 0.985), 200 epochs (``train.profiles.paper.epochs.asen``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.backbone import build_trunk, trunk_channels
from model.base import Embeddings, RetrievalModel
from model.blocks import AttributeHead, all_attributes, split_triplet
from model.losses import cosine_triplet
from model.registry import register_model


@register_model("asen")
class ASEN(RetrievalModel):
    #: the publication and code this model follows (the model card's ``reference``)
    reference = ('Ma et al., "Fine-Grained Fashion Similarity Learning by Attribute-Specific Embedding Network", AAAI 2020; '
                 'code: github.com/Maryeon/asen (ASENet)')
    # ASEN: one-hot attribute, 1x1-conv attention score, final FC to embed_dim
    attribute_input = "one_hot"
    attention_score = "conv"
    spatial_batch_norm = False
    final_fc = True

    def __init__(self, *, classes_per_attribute: list[int], backbone: str = "resnet50_layer3",
                 pretrained: bool = True, embed_dim: int = 1024, margin: float = 0.2,
                 inner_dim: int = 512):
        super().__init__(classes_per_attribute=classes_per_attribute)
        self.margin = float(margin)
        self.trunk = build_trunk(backbone, pretrained=pretrained)
        self.head = AttributeHead(
            num_attributes=self.num_attributes, in_channels=trunk_channels(backbone),
            out_dim=embed_dim if self.final_fc else None, attribute_input=self.attribute_input,
            inner_dim=inner_dim, score=self.attention_score, batch_norm=self.spatial_batch_norm)
        self.embed_dim = self.head.out_dim

    def attribute_embedding(self, images: torch.Tensor, attr_bk: torch.Tensor):
        """(B, 3, H, W), (B, K) attribute ids -> L2-normalised (B, K, D), attention (B, K, h, w)."""
        feat_bchw = self.trunk(images)
        emb_bkd, attn_bkhw = self.head(feat_bchw, attr_bk)
        return F.normalize(emb_bkd, dim=-1), attn_bkhw

    def forward(self, batch: dict) -> dict:
        attr_3b = batch["attribute"].repeat(3)  # (3B,): every image of a triplet in its attribute
        emb_3bd, _ = self.attribute_embedding(batch["images"], attr_3b[:, None])
        anchor_bd, positive_bd, negative_bd = split_triplet(emb_3bd[:, 0])
        loss_triplet = cosine_triplet(anchor_bd, positive_bd, negative_bd, self.margin).mean()  # Eq. 5
        return {"loss": loss_triplet, "loss_triplet": loss_triplet.detach()}

    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16,
              ranked: torch.Tensor | None = None) -> Embeddings:
        attr_bn = all_attributes(images.shape[0], self.num_attributes, images.device)  # (B, N)
        emb_bnd, _ = self.attribute_embedding(images, attr_bn)
        return Embeddings(attribute=emb_bnd)

    def attention_map(self, images: torch.Tensor, attribute: torch.Tensor, class_id=None):
        _, attn_bkhw = self.attribute_embedding(images, attribute[:, None])
        return attn_bkhw[:, 0]  # (B, h, w)
