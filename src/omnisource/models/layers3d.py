"""Convolutions and residual blocks of the 3D ResNets (:mod:`omnisource.models.resnet3d`).

:class:`Conv3d` is ``nn.Conv3d`` with "same" padding and a choice of temporal padding;
:class:`Conv2Plus1d` is the (2+1)D factorisation of Tran et al., "A Closer Look at Spatiotemporal
Convolutions for Action Recognition" (CVPR 2018, §3.5), with the mid-channel count of
:func:`r2plus1d_mid_channels`. Layer names match the 2D ResNet's blocks (``conv1``, ``bn1``, ...)
so that inflating a 2D checkpoint is a name-for-name copy (:mod:`omnisource.models.inflate3d`).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BasicResidual, BottleneckResidual

__all__ = ["Conv3d", "Conv2Plus1d", "BasicBlock3d", "Bottleneck3d", "make_conv", "r2plus1d_mid_channels"]

_T3 = Tuple[int, int, int]


def _triple(v) -> _T3:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)  # type: ignore[return-value]


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` with "same" padding and a choice of temporal padding ("zeros" / "replicate").

    Parameters are those of ``nn.Conv3d`` (``weight``, ``bias``), so state dicts are unchanged.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=False, temporal_padding="zeros"):
        k = _triple(kernel_size)
        if temporal_padding not in ("zeros", "replicate"):
            raise ValueError(f"temporal_padding must be 'zeros' or 'replicate', got {temporal_padding!r}")
        self.temporal_padding = temporal_padding
        self._tpad = k[0] // 2
        pad_t = self._tpad if temporal_padding == "zeros" else 0
        super().__init__(in_channels, out_channels, k, stride=_triple(stride), padding=(pad_t, k[1] // 2, k[2] // 2), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal_padding == "replicate" and self._tpad > 0:
            x = F.pad(x, (0, 0, 0, 0, self._tpad, self._tpad), mode="replicate")
        return super().forward(x)


def r2plus1d_mid_channels(in_channels: int, out_channels: int, t: int = 3, d: int = 3) -> int:
    """Tran et al. 2018 §3.5: ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))``."""
    return max(1, (t * d * d * in_channels * out_channels) // (d * d * in_channels + t * out_channels))


class Conv2Plus1d(nn.Module):
    """(2+1)D conv (Tran et al. 2018 §3.5): ``spatial`` (1 x d x d, stride 1 x s x s) -> ``bn`` ->
    ``relu`` -> ``temporal`` (t x 1 x 1, stride st x 1 x 1). The BN after the temporal conv
    belongs to the enclosing block (``bn1``/``bn2``), as after a plain conv.

    ``followed_by_relu`` records whether the enclosing network applies a ReLU right after this
    conv's BN (used by :func:`inflate_from_2d`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=(3, 3, 3),
        stride=1,
        mid_channels: Optional[int] = None,
        temporal_padding: str = "zeros",
        followed_by_relu: bool = True,
    ):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        st, sh, sw = _triple(stride)
        if mid_channels is None:
            mid_channels = r2plus1d_mid_channels(in_channels, out_channels, kt, kh)
        self.in_channels, self.out_channels, self.mid_channels = in_channels, out_channels, mid_channels
        self.followed_by_relu = followed_by_relu
        self.spatial = Conv3d(in_channels, mid_channels, (1, kh, kw), stride=(1, sh, sw))
        self.bn = nn.BatchNorm3d(mid_channels)
        self.relu = nn.ReLU(inplace=True)
        self.temporal = Conv3d(mid_channels, out_channels, (kt, 1, 1), stride=(st, 1, 1), temporal_padding=temporal_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.relu(self.bn(self.spatial(x))))


def make_conv(conv_type: str, cin: int, cout: int, k: _T3, stride: _T3, tp: str, followed_by_relu: bool) -> nn.Module:
    """A ``t x d x d`` conv: :class:`Conv2Plus1d` for ``conv_type="2plus1d"`` (unless 1x1x1), else :class:`Conv3d`."""
    if conv_type == "2plus1d" and (k[0] > 1 or max(k[1:]) > 1):
        return Conv2Plus1d(cin, cout, k, stride, temporal_padding=tp, followed_by_relu=followed_by_relu)
    return Conv3d(cin, cout, k, stride, temporal_padding=tp)


class BasicBlock3d(BasicResidual):
    """Basic block with convs ``(t1, 3, 3)`` and ``(t2, 3, 3)``; ``conv_type="2plus1d"`` factorises
    both (R(2+1)D). Stride ``(st, s, s)`` on ``conv1``."""

    def __init__(self, inplanes, planes, stride=(1, 1, 1), downsample=None, t1=3, t2=3, conv_type="3d", temporal_padding="zeros"):
        super().__init__()
        self.conv1 = make_conv(conv_type, inplanes, planes, (t1, 3, 3), stride, temporal_padding, True)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = make_conv(conv_type, planes, planes, (t2, 3, 3), (1, 1, 1), temporal_padding, False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample


class Bottleneck3d(BottleneckResidual):
    """Bottleneck ``(t1, 1, 1) -> (t2, 3, 3) -> 1x1x1`` with stride ``(st, s, s)`` on the middle conv
    (SlowOnly: ``t1 = 3`` in res4/res5, ``t2 = 1``)."""

    def __init__(self, inplanes, planes, stride=(1, 1, 1), downsample=None, t1=1, t2=1, conv_type="3d", temporal_padding="zeros"):
        super().__init__()
        tp = temporal_padding
        self.conv1 = make_conv(conv_type, inplanes, planes, (t1, 1, 1), (1, 1, 1), tp, True)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = make_conv(conv_type, planes, planes, (t2, 3, 3), stride, tp, True)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = Conv3d(planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

