"""ASEN++ (Dong et al., IEEE TIP 2021; M3-Net paper ref. [6]): a global and a local ASEN in cascade.

    global branch:  g, alpha = ASEN(CNN_g(I), a)              g (B, D), alpha (B, h, w)
    crop:           box = square box around {alpha_norm > threshold}, alpha_norm = min-max of
                    alpha upsampled to the image; I_loc = crop(I, box) resized to S x S
    local branch:   l = ASEN(CNN_l(I_loc), a)                 l (B, D)
    training, stage 1 ("global"): L = triplet(g)
              stage 2 ("joint"):  L = triplet(g) + 0.1 triplet(l) + 0.1 L_align,
                                  L_align = sum over anchor/positive/negative of mean(1 - cos(g, l))
    test feature:   [sqrt(b) g, sqrt(1 - b) l], b = 0.6, g and l L2-normalised (so unit norm)

Choices where the paper is silent, following the authors' code (Maryeon/asenpp; docs/PROTOCOL.md#asen-asenpp):
- both branches use ASEN_v2's scaled dot-product spatial attention (without BN) and ASEN's
  channel attention and final FC to ``embed_dim``; the learned 512-d attribute embedding is shared
  by the two branches and trained with the global one; the local spatial inner width is
  ``local_inner_dim`` (256);
- the crop box: the attention map is bilinearly upsampled to the input size, min-max normalised
  per image, thresholded (> threshold); the box is the bounding box of all pixels above it (not
  only the largest connected part), made square on its longer side around its centre and shifted
  back inside the image. A flat map (max = min) crops the whole image;
- the crop is taken from the network's input tensor (the authors crop the original-resolution
  picture), with roi_align for all images at once; side S = crop_fraction x input side
  (112 of 224 in the paper, 32 of 64 in the CPU twin);
- on a shared trunk's cached feature maps (backbone ``features:<name>``, the twin profile) there
  are no pixels to crop: the box is cut from the global feature map instead and roi_align
  resamples it to round(crop_fraction x h) cells, the geometry of the pixel crop's map (a 0.5 crop
  of a 7x7 map gives 4x4, as a 56 px crop through the trunk does); the local head is then a
  second ASEN on a zoomed view of the same features, not a second network on a sharper picture.
  A documented deviation of the twin profile only; the paper profile crops pixels;
- the local backbone is ResNet-34 layer3 in the paper; ``local_backbone`` maps the global
  backbone's name to the local one (the twin's ResNet-18 gets a ResNet-18);
- in the joint stage the crop boxes carry no gradient (as the authors', computed from a detached
  map); the alignment term trains both branches; local parameters get lr, global ones
  lr x joint_global_lr_scale (1e-4 and 1e-5 in the paper);
- the trainer (benchmark/train.py, params ``lr_schedule``) decays each stage with its own StepLR,
  as the authors' configs: x0.9 every 3 epochs in stage 1 (modules/config/defaults.py
  SOLVER.STEP_SIZE 3, DECAY_RATE 0.9), x0.9 every epoch in stage 2 (config/<Dataset>/s2.yaml);
  training images are not mirrored (params ``flip: false``: the authors train through
  GlobalTransform, resize + centre crop + normalise); stage 2 starts from stage 1's last epoch
  and, under ``checkpoint: best_val``, the evaluated weights are stage 2's best val epoch (the
  README's ``--resume runs/<Dataset>_s1/checkpoint.pth.tar``, then ``model_best``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.backbone import build_trunk, is_features, trunk_channels
from model.base import Embeddings, RetrievalModel
from model.blocks import AttributeHead, all_attributes, split_triplet
from model.losses import cosine_triplet
from model.registry import register_model


def attention_crop_boxes(attn_bhw: torch.Tensor, height: int, width: int, threshold: float) -> torch.Tensor:
    """(B, h, w) attention -> (B, 4) float boxes [x0, y0, x1, y1] in input pixels (x1, y1 exclusive).

    ASEN++ section III-C: upsample to (height, width), min-max normalise, threshold, take the
    bounding box of the pixels above the threshold, square it on its longer side around its centre
    (integer centre as the authors'), keep it inside the image. Batched: no loop over images.
    """
    attn_bhw = attn_bhw.detach().float()
    up_bhw = F.interpolate(attn_bhw[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    lo_b = up_bhw.flatten(1).amin(1)[:, None, None]
    hi_b = up_bhw.flatten(1).amax(1)[:, None, None]
    norm_bhw = (up_bhw - lo_b) / (hi_b - lo_b).clamp_min(1e-12)  # (B, H, W) in [0, 1]
    mask_bhw = norm_bhw > threshold
    rows_bh, cols_bw = mask_bhw.any(2), mask_bhw.any(1)  # (B, H), (B, W)
    empty_b = ~rows_bh.any(1)
    # first / last True along each axis (argmax of a bool returns the first maximum)
    y0 = rows_bh.int().argmax(1)
    y1 = height - 1 - rows_bh.flip(1).int().argmax(1)
    x0 = cols_bw.int().argmax(1)
    x1 = width - 1 - cols_bw.flip(1).int().argmax(1)
    full = lambda v, fill: torch.where(empty_b, torch.full_like(v, fill), v)  # noqa: E731
    y0, y1, x0, x1 = full(y0, 0), full(y1, height - 1), full(x0, 0), full(x1, width - 1)
    h_b, w_b = y1 - y0 + 1, x1 - x0 + 1
    side_b = torch.maximum(h_b, w_b).clamp_max(min(height, width))
    xc, yc = x0 + w_b // 2, y0 + h_b // 2
    half = side_b // 2
    x = torch.where(xc + half > width, width - side_b, (xc - half).clamp_min(0))
    y = torch.where(yc + half > height, height - side_b, (yc - half).clamp_min(0))
    return torch.stack([x, y, x + side_b, y + side_b], dim=1).to(attn_bhw.dtype)  # (B, 4)


def crop_and_resize(images: torch.Tensor, rows_p: torch.Tensor, boxes_p4: torch.Tensor, side: int) -> torch.Tensor:
    """Crop box p of image rows_p[p] and resize it to side x side: (P, 3, side, side), one batched call.

    Boxes are [x0, y0, x1, y1] in pixels, pixel i spanning [i, i + 1) (roi_align's aligned=True);
    adaptive sampling averages each output cell's area, which anti-aliases the downscale.
    """
    from torchvision.ops import roi_align  # lazily: importing torchvision costs seconds per stage

    rois_p5 = torch.cat([rows_p[:, None].to(boxes_p4.dtype), boxes_p4], dim=1).to(images.dtype)  # (P, 5)
    return roi_align(images, rois_p5, output_size=(side, side), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


@register_model("asenpp")
class ASENpp(RetrievalModel):
    #: the publication and code this model follows (the model card's ``reference``)
    reference = ('Dong et al., "Fine-Grained Fashion Similarity Prediction by Attribute-Specific Embedding Learning", IEEE TIP 2021; '
                 'code: github.com/Maryeon/asenpp')
    phases = ("global", "joint")

    def __init__(self, *, classes_per_attribute: list[int], backbone: str = "resnet50_layer3",
                 pretrained: bool = True, embed_dim: int = 1024, margin: float = 0.2,
                 inner_dim: int = 512, local_inner_dim: int = 256,
                 local_backbone: str = "resnet34_layer3", threshold: float = 0.1,
                 crop_fraction: float = 0.5, beta: float = 0.6, local_weight: float = 0.1,
                 align_weight: float = 0.1, joint_global_lr_scale: float = 0.1):
        super().__init__(classes_per_attribute=classes_per_attribute)
        if is_features(backbone):
            # a shared, frozen trunk's cached maps (the twin profile): the local branch has no
            # trunk of its own either, and crops the global map (roi_align, below)
            local_backbone = backbone
        # params.yaml keys local_backbone by the global backbone: the trainer resolves it to a name
        # (datasets.params_schema.resolve)
        self.margin, self.threshold, self.crop_fraction = float(margin), float(threshold), float(crop_fraction)
        self.beta, self.local_weight, self.align_weight = float(beta), float(local_weight), float(align_weight)
        self.joint_global_lr_scale = float(joint_global_lr_scale)
        self.global_trunk = build_trunk(backbone, pretrained=pretrained)
        self.global_head = AttributeHead(
            num_attributes=self.num_attributes, in_channels=trunk_channels(backbone), out_dim=embed_dim,
            attribute_input="embedding", inner_dim=inner_dim, score="scaled_dot")
        self.local_trunk = build_trunk(local_backbone, pretrained=pretrained)
        self.local_head = AttributeHead(
            num_attributes=self.num_attributes, in_channels=trunk_channels(local_backbone), out_dim=embed_dim,
            attribute_input="embedding", inner_dim=local_inner_dim, score="scaled_dot",
            attribute_embedding=self.global_head.attribute_embedding)
        self.embed_dim = 2 * embed_dim

    # --- the two branches -------------------------------------------------------------------
    def global_branch(self, images: torch.Tensor, attr_bk: torch.Tensor):
        """(B, 3, H, W), (B, K) -> g (B, K, D) not normalised, attention (B, K, h, w)."""
        return self.global_head(self.global_trunk(images), attr_bk)

    def crop(self, images: torch.Tensor, attn_bkhw: torch.Tensor) -> torch.Tensor:
        """Attention-guided crops for every (image, query): (B, K, h, w) -> (B*K, 3, S, S)."""
        b, k = attn_bkhw.shape[:2]
        height, width = images.shape[-2:]
        side = max(1, round(self.crop_fraction * height))
        boxes_p4 = attention_crop_boxes(attn_bkhw.flatten(0, 1), height, width, self.threshold)  # (B*K, 4)
        rows_p = torch.arange(b, device=images.device).repeat_interleave(k)  # (B*K,) image of each box
        return crop_and_resize(images, rows_p, boxes_p4, side)

    def local_branch(self, images: torch.Tensor, attn_bkhw: torch.Tensor, attr_bk: torch.Tensor):
        """-> l (B, K, D) not normalised, from the crops chosen by the global attention."""
        b, k = attr_bk.shape
        crops = self.crop(images, attn_bkhw)  # (B*K, 3, S, S)
        l_p1d, _ = self.local_head(self.local_trunk(crops), attr_bk.reshape(-1, 1))
        return l_p1d.view(b, k, -1)

    # --- training -----------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        images = batch["images"]
        attr_3b1 = batch["attribute"].repeat(3)[:, None]  # (3B, 1)
        g_3bkd, attn_3bkhw = self.global_branch(images, attr_3b1)
        g_3bd = g_3bkd[:, 0]
        loss_global = cosine_triplet(*split_triplet(g_3bd), self.margin).mean()
        out = {"loss_global": loss_global.detach()}
        loss = loss_global
        if self.phase == "joint":
            l_3bd = self.local_branch(images, attn_3bkhw.detach(), attr_3b1)[:, 0]
            loss_local = cosine_triplet(*split_triplet(l_3bd), self.margin).mean()
            # alignment: global and local views of one image agree (sum of 3 means, as the authors')
            loss_align = 3.0 * (1.0 - F.cosine_similarity(g_3bd, l_3bd, dim=-1)).mean()
            loss = loss + self.local_weight * loss_local + self.align_weight * loss_align
            out.update(loss_local=loss_local.detach(), loss_align=loss_align.detach())
        out["loss"] = loss
        return out

    def _global_parameters(self):
        return list(self.global_trunk.parameters()) + list(self.global_head.parameters())

    def _local_parameters(self):
        shared = {id(p) for p in self.global_head.parameters()}
        params = list(self.local_trunk.parameters()) + list(self.local_head.parameters())
        return [p for p in params if id(p) not in shared]

    def param_groups(self, lr: float) -> list[dict]:
        """Stage 1: the global branch at lr. Stage 2: local at lr, global at lr x 0.1."""
        if self.phase == "global":
            return [{"params": self._global_parameters(), "lr": lr}]
        return [{"params": self._local_parameters(), "lr": lr},
                {"params": self._global_parameters(), "lr": lr * self.joint_global_lr_scale}]

    # --- inference ----------------------------------------------------------------------------
    def embed(self, images: torch.Tensor, *, gamma: float = 0.8, max_classes: int = 16,
              ranked: torch.Tensor | None = None) -> Embeddings:
        attr_bn = all_attributes(images.shape[0], self.num_attributes, images.device)  # (B, N)
        g_bnd, attn_bnhw = self.global_branch(images, attr_bn)
        l_bnd = self.local_branch(images, attn_bnhw, attr_bn)
        emb_bn2d = torch.cat([math.sqrt(self.beta) * F.normalize(g_bnd, dim=-1),
                              math.sqrt(1.0 - self.beta) * F.normalize(l_bnd, dim=-1)], dim=-1)  # (B, N, 2D)
        return Embeddings(attribute=emb_bn2d)

    def attention_map(self, images: torch.Tensor, attribute: torch.Tensor, class_id=None):
        _, attn_bkhw = self.global_branch(images, attribute[:, None])
        return attn_bkhw[:, 0]  # (B, h, w)
