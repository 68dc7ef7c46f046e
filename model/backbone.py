"""Backbones: torchvision ResNets cut after layer3 (stride 16), and a plain CNN for the CPU twins.

ResNet-50 to layer3 gives c = 1024 channels, 14x14 at 224 px (the paper's backbone and the
baselines'). ResNet-18/34 to layer3 give c = 256 and serve ASEN++'s local branch.

``plain8`` (the twin profile's): eight 3x3 conv-BN-ReLU layers in four blocks of widths 16, 32,
64, 128, the first layer of each of the first three blocks with stride 2 (stride 8 overall):
c = 128, 8x8 maps at 64 px. It has no ImageNet weights. On the twins it trains about 5x faster
than ResNet-18 to layer3 and learns further (measured in docs/PROTOCOL.md#shared-trunk).

``features:<name>`` stands for <name>'s output computed beforehand (``benchmark.features``): the
model's trunk is then the identity, and its input the cached (B, c, h, w) map.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

_CHANNELS = {"resnet50_layer3": 1024, "resnet34_layer3": 256, "resnet18_layer3": 256, "plain8": 128}
_PLAIN_WIDTHS = (16, 32, 64, 128)


#: a backbone named ``features:<name>`` is no network: the model's input is <name>'s feature map,
#: computed once by a shared, frozen trunk (the twin profile's ``trunk: shared``)
FEATURES_PREFIX = "features:"


def trunk_channels(name: str) -> int:
    base = name[len(FEATURES_PREFIX):] if name.startswith(FEATURES_PREFIX) else name
    try:
        return _CHANNELS[base]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(_CHANNELS)} "
                       f"(each also as {FEATURES_PREFIX}<name>)") from None


def is_features(name: str) -> bool:
    """True for ``features:<name>``: the model reads cached feature maps, not pixels."""
    return name.startswith(FEATURES_PREFIX)


def build_trunk(name: str, *, pretrained: bool = True) -> nn.Module:
    """The ResNet stem and layers 1-3 as one Sequential: (B, 3, H, W) -> (B, c, H/16, W/16).

    ImageNet weights come from the torchvision cache only; nothing is downloaded. When they are not
    there the trunk starts from random weights, with a loud warning, because retrieval numbers
    from a random trunk are not comparable with the paper's. The trunk's ``imagenet_weights``
    attribute says whether they were loaded (:func:`imagenet_weights` collects it; plain8 has
    none, a ``features:`` trunk is computed elsewhere and carries no such attribute).
    """
    trunk_channels(name)
    if is_features(name):  # the input already is the trunk's (B, c, h, w) map
        return nn.Identity()
    if name == "plain8":
        trunk = plain_cnn(_PLAIN_WIDTHS)
        trunk.imagenet_weights = False
        return trunk
    import torchvision

    arch = name.split("_")[0]
    weights = None
    if pretrained:
        enum = {
            "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
            "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
            "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        }[arch]
        if _in_cache(enum.url):
            weights = enum
        else:
            warnings.warn(
                f"ImageNet weights for {arch} are not in the torchvision cache "
                f"({torch.hub.get_dir()}/checkpoints); starting from RANDOM weights. "
                "Numbers will not be comparable with the paper's.",
                stacklevel=2,
            )
    net = getattr(torchvision.models, arch)(weights=weights)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    trunk.imagenet_weights = weights is not None
    return trunk


def imagenet_weights(model: nn.Module) -> dict[str, bool]:
    """{module path: whether ImageNet weights were loaded} of every trunk built by :func:`build_trunk`
    inside ``model`` (plain8: False); empty when the model reads cached feature maps."""
    return {name: bool(m.imagenet_weights) for name, m in model.named_modules()
            if isinstance(getattr(m, "imagenet_weights", None), bool)}


def plain_cnn(widths: tuple[int, ...]) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers per width; the first of every block but the last has stride 2."""
    layers: list[nn.Module] = []
    c_in = 3
    for b, c in enumerate(widths):
        for j in range(2):
            stride = 2 if j == 0 and b < len(widths) - 1 else 1
            layers += [nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
    return nn.Sequential(*layers)


def _in_cache(url: str) -> bool:
    import os

    fname = os.path.basename(url)
    return os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", fname))
