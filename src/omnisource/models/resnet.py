"""2D ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §3.3 and
Table 1), with torchvision-compatible parameter names.

The layout is torchvision's "ResNet v1.5" (stride of a downsampling bottleneck on its 3x3
conv, projection shortcut ``downsample.0`` conv + ``downsample.1`` BN), so a torchvision
checkpoint file (``resnet18-f37072fd.pth`` ...) loads by path, name for name. The 3D ResNets of
:mod:`omnisource.models.resnet3d` reuse the same names, so inflating (I3D §2.3) is a
name-for-name copy.

Differences from torchvision, on purpose:

* ``width`` multiplies every channel count (base channels ``64 * width``); ``width=0.125`` or
  ``0.25`` makes CPU-fast test networks. ImageNet weights exist only for ``width=1``.
* input is RGB in ``[0, 1]``; the ImageNet mean/std normalisation is the first op
  (non-persistent buffers, not in the state dict).
* ``num_classes=0`` gives a feature extractor (``fc`` is an ``nn.Identity``).
* ``forward_features`` (pooled ``(N, D)``) and ``forward_stages`` (pooled output of each of
  ``layer1..layer4``, used by multi-layer domain discriminators) are exposed.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Type, Union

import torch
from torch import nn

from .layers import (IMAGENET_MEAN, IMAGENET_STD, BasicResidual, BottleneckResidual, Normalize, StagedResNet,
                     scaled_channels)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "RESNET_LAYERS",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "imagenet_state_dict",
]

#: depth -> (block kind, blocks per stage) (He et al. 2016, Table 1)
RESNET_LAYERS: Dict[int, tuple] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(BasicResidual):
    """Two 3x3 convs + identity / projection shortcut (He et al. 2016, Fig. 5 left)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride


class Bottleneck(BottleneckResidual):
    """1x1 - 3x3 - 1x1 bottleneck (He et al. 2016, Fig. 5 right), stride on the 3x3 (v1.5)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride


class ResNet(StagedResNet):
    """2D ResNet on RGB images in ``[0, 1]``: ``(N, 3, H, W) -> (N, num_classes)``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck` (or ``"basic"`` / ``"bottleneck"``).
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: classifier size; ``0`` = no classifier (``forward`` returns features).
        width: channel multiplier (base channels ``round(64 * width)``).
        dropout: dropout before ``fc`` (0 = none, torchvision's default).
        zero_init_residual: zero-init the last BN of each block (Goyal et al. 2017).
    """

    def __init__(
        self,
        block: Union[str, Type[nn.Module]],
        layers,
        num_classes: int = 1000,
        width: float = 1.0,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if isinstance(block, str):
            block = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        self.width = float(width)
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, ndim=4)
        base = scaled_channels(64, width)
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.stage_dims: List[int] = [base * m * block.expansion for m in (1, 2, 4, 8)]
        self._init_head(self.stage_dims[-1], num_classes, dropout)
        self._init_weights()
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    # ------------------------------------------------------------------ forward
    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


def _resnet(depth: int, num_classes: int = 1000, width: float = 1.0, **kwargs) -> ResNet:
    kind, layers = RESNET_LAYERS[depth]
    model = ResNet(kind, layers, num_classes=num_classes, width=width, **kwargs)
    model.arch = f"resnet{depth}"
    return model


def resnet18(num_classes: int = 1000, width: float = 1.0, **kwargs) -> ResNet:
    return _resnet(18, num_classes, width, **kwargs)


def resnet34(num_classes: int = 1000, width: float = 1.0, **kwargs) -> ResNet:
    return _resnet(34, num_classes, width, **kwargs)


def resnet50(num_classes: int = 1000, width: float = 1.0, **kwargs) -> ResNet:
    return _resnet(50, num_classes, width, **kwargs)


def resnet101(num_classes: int = 1000, width: float = 1.0, **kwargs) -> ResNet:
    return _resnet(101, num_classes, width, **kwargs)


def imagenet_state_dict(arch: str, width: float = 1.0, context: str = "") -> Dict[str, torch.Tensor]:
    """torchvision's ImageNet ``IMAGENET1K_V1`` state dict for ``arch`` (``"resnet18"`` ...).

    Needs torchvision and either a network or the file already in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``). Raises a one-line ``RuntimeError`` otherwise.
    """
    prefix = f"{context}: " if context else ""
    hint = "or pass pretrained=<path to a local .pth/.safetensors>"
    if float(width) != 1.0:
        raise ValueError(f"{prefix}ImageNet weights exist only for width=1 (got width={width}); {hint}")
    try:
        from torchvision.models import get_model_weights
    except Exception:  # ImportError, or a torchvision built for another torch
        raise RuntimeError(f"{prefix}ImageNet weights for {arch} need torchvision and a network, {hint}") from None
    try:
        weights = get_model_weights(arch).IMAGENET1K_V1
        return weights.get_state_dict(progress=False)
    except Exception as e:  # no network, no cache
        raise RuntimeError(
            f"{prefix}ImageNet weights for {arch} need torchvision and a network ({type(e).__name__}: {e}), {hint}"
        ) from e


# ---------------------------------------------------------------------------- registry
from .registry import register_backbone  # noqa: E402


def _resnet_backbone(depth: int, imagenet: bool, width: float, **kwargs) -> ResNet:
    model = _resnet(depth, num_classes=0, width=width, **kwargs)
    if imagenet:
        sd = imagenet_state_dict(f"resnet{depth}", width, context=f"create_backbone('resnet{depth}', pretrained='imagenet')")
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        model.load_state_dict(sd, strict=True)
    return model


def _register_backbone(depth: int) -> None:
    def entry(imagenet: bool = False, width: float = 1.0, **kwargs) -> ResNet:
        return _resnet_backbone(depth, imagenet, width, **kwargs)

    entry.__name__ = entry.__qualname__ = f"resnet{depth}_backbone"
    entry.__doc__ = f"ResNet-{depth} frame encoder (no classifier); ``imagenet``: torchvision's ImageNet weights."
    register_backbone(f"resnet{depth}")(entry)


for _depth in RESNET_LAYERS:
    _register_backbone(_depth)
