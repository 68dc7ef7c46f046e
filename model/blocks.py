"""Building blocks of the ASEN family (ASEN, ASEN_v2, ASEN++, MODC), batched over attribute queries.

ASEN (Ma et al., AAAI 2020, section 3) conditions a CNN feature map on an attribute in two steps:
an attribute-aware spatial attention (ASA) pools the map into one vector per (image, attribute),
and an attribute-aware channel attention (ACA) gates that vector's channels.

Both blocks here take K attribute queries per image at once (``attr_bkd``: (B, K, d)): K = 1 in
training (the triplet's sampled attribute), K = N at inference (every attribute in one pass). The
1x1 conv of ASA is attribute-independent, so it runs once per image, never once per query
(docs: PERFORMANCE.md, "where the head's cost goes").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SpatialAttention(nn.Module):
    """ASA: alpha = softmax over positions of score(tanh(conv(psi)), tanh(FC(a))); out = sum alpha psi.

    ``score="conv"`` (ASEN, AAAI 2020 Eq. 1-2): the product of the two tanh branches goes through a
    1x1 conv to one channel and then a tanh, as in the authors' ``ASENet`` (Maryeon/asen model.py:
    ``conv2 -> tanh -> softmax``): the logits lie in [-1, 1], so over any number of positions the
    largest attention weight is at most e^2 times the smallest (a nearly flat map at 14 x 14).
    ``score="scaled_dot"`` (ASEN_v2, ASEN++): the sum over the inner channels of that product,
    divided by sqrt(inner_dim), with no tanh (``ASENet_V2``, asenpp ``AttnEmbedding.spatial_attn``).
    ``batch_norm`` (ASEN_v2) puts a BN between the 1x1 conv and its tanh. ``attribute_bias``: whether
    the attribute FC has a bias (ASEN's ``mask_fc1`` has none; ASEN_v2's ``attr_transform1`` has one).
    """

    def __init__(self, *, in_channels: int, attr_dim: int, inner_dim: int = 512,
                 score: str = "conv", batch_norm: bool = False, attribute_bias: bool = True):
        super().__init__()
        if score not in ("conv", "scaled_dot"):
            raise ValueError(f"score must be 'conv' or 'scaled_dot', not {score!r}")
        self.score = score
        self.inner_dim = inner_dim
        self.feature_proj = nn.Conv2d(in_channels, inner_dim, kernel_size=1)  # c -> c'
        self.feature_bn = nn.BatchNorm2d(inner_dim) if batch_norm else nn.Identity()
        self.attribute_proj = nn.Linear(attr_dim, inner_dim, bias=attribute_bias)  # d -> c'
        if score == "conv":
            self.score_conv = nn.Conv2d(inner_dim, 1, kernel_size=1)  # c' -> 1

    def logits(self, feat_bchw: torch.Tensor, attr_bkd: torch.Tensor) -> torch.Tensor:
        """(B, c, h, w), (B, K, d) -> (B, K, h*w) attention logits before the softmax."""
        img_bip = torch.tanh(self.feature_bn(self.feature_proj(feat_bchw))).flatten(2)  # (B, c', hw)
        att_bki = torch.tanh(self.attribute_proj(attr_bkd))  # (B, K, c')
        if self.score == "conv":
            # conv1x1(img * att) = sum_i w_i img_i att_i + bias: fold w into the attribute side
            w_i = self.score_conv.weight.view(-1)  # (c',)
            score_bkp = torch.einsum("bip,bki->bkp", img_bip, att_bki * w_i) + self.score_conv.bias
            return torch.tanh(score_bkp)  # ASEN: conv2 -> tanh -> softmax
        return torch.einsum("bip,bki->bkp", img_bip, att_bki) / math.sqrt(self.inner_dim)

    def forward(self, feat_bchw: torch.Tensor, attr_bkd: torch.Tensor):
        """-> pooled (B, K, c), attention (B, K, h, w); softmax over the h*w positions."""
        b, c, h, w = feat_bchw.shape
        attn_bkp = self.logits(feat_bchw, attr_bkd).softmax(dim=-1)  # (B, K, hw)
        # sum over positions of alpha * psi, without materialising alpha * psi
        pooled_bkc = torch.einsum("bkp,bcp->bkc", attn_bkp, feat_bchw.flatten(2))  # (B, K, c)
        return pooled_bkc, attn_bkp.view(b, -1, h, w)


class ChannelAttention(nn.Module):
    """ACA: beta = sigmoid(FC2(relu(FC1([x; relu(FC_a(a))])))); out = beta * x (ASEN Eq. 3-4).

    ``attr_hidden`` is the width of relu(FC_a(a)), ``attribute_bias`` whether FC_a has a bias:
    ASEN's ``mask_fc2`` is a bias-free Linear(N, 1024) (= c), so its ``fc1`` is 2048 -> 512;
    ASEN_v2's and ASEN++'s ``attr_transform2`` is Linear(512, 512) with a bias (fc1 1536 -> 512).
    """

    def __init__(self, *, in_channels: int, attr_dim: int, attr_hidden: int = 512, hidden: int | None = None,
                 attribute_bias: bool = True):
        super().__init__()
        hidden = in_channels // 2 if hidden is None else hidden  # ASEN's reduction rate 2: 1024 -> 512
        self.attribute_proj = nn.Linear(attr_dim, attr_hidden, bias=attribute_bias)
        self.fc1 = nn.Linear(in_channels + attr_hidden, hidden)
        self.fc2 = nn.Linear(hidden, in_channels)

    def gate(self, x_bkc: torch.Tensor, attr_bkd: torch.Tensor) -> torch.Tensor:
        """(B, K, c), (B, K, d) -> (B, K, c) channel weights in (0, 1)."""
        att_bkh = F.relu(self.attribute_proj(attr_bkd))  # (B, K, attr_hidden)
        hid_bkh = F.relu(self.fc1(torch.cat([x_bkc, att_bkh], dim=-1)))  # (B, K, hidden)
        return torch.sigmoid(self.fc2(hid_bkh))

    def forward(self, x_bkc: torch.Tensor, attr_bkd: torch.Tensor) -> torch.Tensor:
        return x_bkc * self.gate(x_bkc, attr_bkd)


class AttributeHead(nn.Module):
    """ASA -> ACA -> optional FC, from a feature map and attribute ids to attribute embeddings.

    ``attribute_input="one_hot"`` (ASEN): the attribute enters as a one-hot vector, each branch has
    its own bias-free FC on it (the authors' ``mask_fc1`` N -> 512 for the spatial branch, ``mask_fc2``
    N -> c for the channel branch, so the channel MLP reads [x; relu(FC(a))] of width 2c and ``fc1``
    is 2048 -> 512 at c = 1024). ``"embedding"`` (ASEN_v2, ASEN++, MODC): a learned 512-d attribute embedding
    (``nn.Embedding``) feeds both branches; it may be shared with another head (ASEN++'s local
    branch shares the global one's, as in the authors' code).
    """

    def __init__(self, *, num_attributes: int, in_channels: int, out_dim: int | None,
                 attribute_input: str = "embedding", attr_dim: int = 512, inner_dim: int = 512,
                 score: str = "scaled_dot", batch_norm: bool = False,
                 attribute_embedding: nn.Embedding | None = None):
        super().__init__()
        self.num_attributes = num_attributes
        self.attribute_input = attribute_input
        if attribute_input == "one_hot":
            d = num_attributes
        elif attribute_input == "embedding":
            self.attribute_embedding = attribute_embedding or nn.Embedding(num_attributes, attr_dim)
            d = self.attribute_embedding.embedding_dim
        else:
            raise ValueError(f"attribute_input must be 'one_hot' or 'embedding', not {attribute_input!r}")
        one_hot = attribute_input == "one_hot"
        self.spatial_attention = SpatialAttention(
            in_channels=in_channels, attr_dim=d, inner_dim=inner_dim, score=score, batch_norm=batch_norm,
            attribute_bias=not one_hot)
        self.channel_attention = ChannelAttention(
            in_channels=in_channels, attr_dim=d, attr_hidden=in_channels if one_hot else attr_dim,
            attribute_bias=not one_hot)
        # ASEN's final FC c -> D; ASEN_v2 has none (out_dim None: the embedding is the gated c-vector)
        self.feature_fc = nn.Linear(in_channels, out_dim) if out_dim is not None else nn.Identity()
        self.out_dim = in_channels if out_dim is None else out_dim

    def attribute_vector(self, attr_bk: torch.Tensor) -> torch.Tensor:
        """(B, K) long -> (B, K, d)."""
        if self.attribute_input == "one_hot":
            return F.one_hot(attr_bk, self.num_attributes).to(self.spatial_attention.attribute_proj.weight.dtype)
        return self.attribute_embedding(attr_bk)

    def forward(self, feat_bchw: torch.Tensor, attr_bk: torch.Tensor):
        """(B, c, h, w), (B, K) long -> embeddings (B, K, D) (not normalised), attention (B, K, h, w)."""
        a_bkd = self.attribute_vector(attr_bk)
        pooled_bkc, attn_bkhw = self.spatial_attention(feat_bchw, a_bkd)
        x_bkc = self.channel_attention(pooled_bkc, a_bkd)
        return self.feature_fc(x_bkc), attn_bkhw


def all_attributes(batch_size: int, num_attributes: int, device) -> torch.Tensor:
    """(B, N) long: every attribute id for every image, for one batched inference pass."""
    return torch.arange(num_attributes, device=device).expand(batch_size, num_attributes)


def split_triplet(x: torch.Tensor):
    """Rows [0:B], [B:2B], [2B:3B] of a (3B, ...) tensor: anchors, positives, negatives."""
    return x.chunk(3, dim=0)
