"""3D ResNets for clips: SlowOnly, R3D and R(2+1)D, plus I3D-style inflation of 2D weights.

Input ``(B, 3, T, H, W)`` RGB in ``[0, 1]`` (ImageNet mean/std normalisation is the first op),
output logits ``(B, num_classes)``. Layer names are those of the 2D ResNet of
:mod:`omnisource.models.resnet` (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc`` ...), so inflating a 2D checkpoint is a name-for-name copy.

Variants (``width`` scales every channel count, ``dropout`` is applied before ``fc``, default 0.5):

* ``slowonly_r50`` / ``slowonly_r101`` — the Slow pathway of SlowFast (Feichtenhofer et al., ICCV
  2019, §3.1 and Table 1), as used by OmniSource (Duan et al. 2020, §4, SlowOnly-4x16 / 8x8):
  stem conv 1x7x7 + max-pool 1x3x3, no temporal downsampling anywhere; bottlenecks of res2/res3
  are purely spatial, bottlenecks of res4/res5 have temporal kernel 3 in their *first* (1x1)
  conv (3x1x1).
* ``slowonly_r18`` — a slim SlowOnly with basic blocks: the first conv of each basic block of
  res4/res5 is 3x3x3, the rest 1x3x3 (mmaction2's ``inflate=(0, 0, 1, 1)`` for basic blocks).
* ``r3d_18`` — R3D (Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
  Recognition", CVPR 2018, §3.1 and Table 1): 3x7x7 stem (stride 1x2x2, no max-pool), every
  block conv 3x3x3, spatio-temporal downsampling (stride 2x2x2) in res3, res4, res5.
* ``r2plus1d_18`` / ``r2plus1d_34`` — R(2+1)D (Tran et al. 2018, §3.5): every t x d x d conv is
  a spatial 1 x d x d conv to ``M`` channels, BN, ReLU, then a temporal t x 1 x 1 conv, with
  ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))`` so that the parameter count matches the
  3D conv. The formula is applied per conv, stem included (3x7x7 from 3 to 64 channels gives
  M = 83; torchvision / VMZ use 45 in the stem and compute conv2's M from the block's input
  width, so their checkpoints do not load shape for shape here).

``stem_pool`` (default: True for SlowOnly, False for R3D / R(2+1)D as in the papers) adds the 2D
ResNet's 1x3x3 max-pool after the stem; only with it is an inflated net spatially identical to
its 2D parent.

Temporal padding: ``temporal_padding="zeros"`` (default; what torchvision / mmaction2 do) or
``"replicate"`` (the clip's first / last frame is repeated in time; spatial padding stays zero).

Inflation of 2D weights (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017, §2.3;
``pretrained="imagenet"`` or a 2D checkpoint file) is :func:`omnisource.models.inflate3d.inflate_from_2d`;
the convs and blocks are in :mod:`omnisource.models.layers3d`.

Memory format: the models work with ``model.to(memory_format=torch.channels_last_3d)`` and
inputs ``x.contiguous(memory_format=torch.channels_last_3d)`` (+15-35 % on CPUs for 3D nets).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from .inflate3d import inflate_from_2d
from .layers import IMAGENET_MEAN, IMAGENET_STD, Normalize, StagedResNet, check_clip, scaled_channels
from .layers3d import BasicBlock3d, Bottleneck3d, Conv2Plus1d, Conv3d, make_conv, r2plus1d_mid_channels

__all__ = [
    "Conv3d",
    "Conv2Plus1d",
    "BasicBlock3d",
    "Bottleneck3d",
    "ResNet3d",
    "make_conv",
    "inflate_from_2d",
    "r2plus1d_mid_channels",
    "slowonly_r18",
    "slowonly_r50",
    "slowonly_r101",
    "r3d_18",
    "r2plus1d_18",
    "r2plus1d_34",
]


class ResNet3d(StagedResNet):
    """Generic 3D ResNet; use the named constructors (``slowonly_r50`` ...) or ``create_model``.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage.
        num_classes: classifier size (``0`` = no classifier).
        width: channel multiplier (base channels ``round(64 * width)``).
        dropout: dropout before ``fc``.
        conv_type: ``"3d"`` or ``"2plus1d"``.
        stem_kernel_t: temporal kernel of the stem conv (1 for SlowOnly, 3 for R3D / R(2+1)D).
        stem_pool: 1x3x3 max-pool (stride 1x2x2) after the stem, as in the 2D ResNet.
        temporal_kernels: per stage, ``(t1, t2)`` temporal kernels of the block convs.
        temporal_strides: per stage, temporal stride of the first block.
        temporal_padding: ``"zeros"`` or ``"replicate"``.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        num_classes: int = 400,
        width: float = 1.0,
        dropout: float = 0.5,
        conv_type: str = "3d",
        stem_kernel_t: int = 1,
        stem_pool: bool = True,
        temporal_kernels: Sequence[Tuple[int, int]] = ((1, 1), (1, 1), (3, 1), (3, 1)),
        temporal_strides: Sequence[int] = (1, 1, 1, 1),
        temporal_padding: str = "zeros",
    ):
        super().__init__()
        if conv_type not in ("3d", "2plus1d"):
            raise ValueError(f"conv_type must be '3d' or '2plus1d', got {conv_type!r}")
        block_cls = {"basic": BasicBlock3d, "bottleneck": Bottleneck3d}[block]
        self.width, self.conv_type, self.temporal_padding = float(width), conv_type, temporal_padding
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, ndim=5)
        base = scaled_channels(64, width)
        self.conv1 = make_conv(conv_type, 3, base, (stem_kernel_t, 7, 7), (1, 2, 2), temporal_padding, True)
        self.bn1 = nn.BatchNorm3d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if stem_pool else nn.Identity()
        self.inplanes = base
        stages = []
        for i, (n, (t1, t2), st) in enumerate(zip(layers, temporal_kernels, temporal_strides)):
            stride = (st, 1 if i == 0 else 2, 1 if i == 0 else 2)
            stages.append(self._make_layer(block_cls, base * 2**i, n, stride, t1, t2, conv_type, temporal_padding))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.stage_dims: List[int] = [base * 2**i * block_cls.expansion for i in range(4)]
        self._init_head(self.stage_dims[-1], num_classes, dropout)
        self._init_weights()

    def _make_layer(self, block_cls, planes, blocks, stride, t1, t2, conv_type, tp) -> nn.Sequential:
        downsample = None
        if stride != (1, 1, 1) or self.inplanes != planes * block_cls.expansion:
            downsample = nn.Sequential(
                Conv3d(self.inplanes, planes * block_cls.expansion, 1, stride=stride),
                nn.BatchNorm3d(planes * block_cls.expansion),
            )
        kw = dict(t1=t1, t2=t2, conv_type=conv_type, temporal_padding=tp)
        layers = [block_cls(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = planes * block_cls.expansion
        layers += [block_cls(self.inplanes, planes, (1, 1, 1), None, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, type(self).__name__)
        x = self.normalize(x)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))



# ---------------------------------------------------------------------------- constructors
def slowonly_r50(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """SlowOnly-R50 (SlowFast §3.1, Table 1 "Slow pathway"; OmniSource §4)."""
    return ResNet3d("bottleneck", (3, 4, 6, 3), num_classes, width, dropout, **kwargs)


def slowonly_r101(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """SlowOnly-R101 (OmniSource's SlowOnly-8x8-R101)."""
    return ResNet3d("bottleneck", (3, 4, 23, 3), num_classes, width, dropout, **kwargs)


def slowonly_r18(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """Slim SlowOnly with basic blocks; 3x3x3 first conv in res4/res5 blocks."""
    kwargs.setdefault("temporal_kernels", ((1, 1), (1, 1), (3, 1), (3, 1)))
    return ResNet3d("basic", (2, 2, 2, 2), num_classes, width, dropout, **kwargs)


def _tran(conv_type: str, layers, num_classes, width, dropout, kwargs) -> ResNet3d:
    kwargs.setdefault("stem_kernel_t", 3)
    kwargs.setdefault("stem_pool", False)
    kwargs.setdefault("temporal_kernels", ((3, 3),) * 4)
    kwargs.setdefault("temporal_strides", (1, 2, 2, 2))
    return ResNet3d("basic", layers, num_classes, width, dropout, conv_type=conv_type, **kwargs)


def r3d_18(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """R3D-18 (Tran et al. 2018, §3.1, Table 1)."""
    return _tran("3d", (2, 2, 2, 2), num_classes, width, dropout, kwargs)


def r2plus1d_18(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """R(2+1)D-18 (Tran et al. 2018, §3.5)."""
    return _tran("2plus1d", (2, 2, 2, 2), num_classes, width, dropout, kwargs)


def r2plus1d_34(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """R(2+1)D-34 (Tran et al. 2018, §3.5; Ghadiyaram et al. 2019 use R(2+1)D-34/101/152)."""
    return _tran("2plus1d", (3, 4, 6, 3), num_classes, width, dropout, kwargs)


# ---------------------------------------------------------------------------- registry
from .registry import register_model  # noqa: E402

_PARENT_2D = {"slowonly_r18": 18, "slowonly_r50": 50, "slowonly_r101": 101, "r3d_18": 18, "r2plus1d_18": 18, "r2plus1d_34": 34}


def _register_3d(name: str, ctor):
    depth = _PARENT_2D[name]

    def entry(num_classes: int, imagenet: bool = False, inflate_mode: str = "average", width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
        model = ctor(num_classes=num_classes, width=width, dropout=dropout, **kwargs)
        if imagenet:
            from .resnet import imagenet_state_dict

            sd = imagenet_state_dict(f"resnet{depth}", width, context=f"create_model('{name}', pretrained='imagenet')")
            inflate_from_2d(model, sd, mode=inflate_mode)
        return model

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"{ctor.__doc__} ``imagenet``: inflate torchvision's ImageNet resnet{depth}."
    register_model(name)(entry)


for _name, _ctor in (
    ("slowonly_r18", slowonly_r18),
    ("slowonly_r50", slowonly_r50),
    ("slowonly_r101", slowonly_r101),
    ("r3d_18", r3d_18),
    ("r2plus1d_18", r2plus1d_18),
    ("r2plus1d_34", r2plus1d_34),
):
    _register_3d(_name, _ctor)
