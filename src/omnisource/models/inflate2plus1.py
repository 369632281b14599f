"""2D image model -> (2+1)D video model, as stage 2 of Kae & Song (WACV 2020, §3.4).

Every spatial convolution of the stage-1 image network is copied and frozen, and followed by a
temporal convolution (``k_t × 1 × 1``) in a residual branch whose weights start at zero::

    y = S(x) + T(S(x)),   S frozen (copied from stage 1),   T = 0 at initialisation

so at the start the video model computes, frame by frame, exactly what the image model does;
with the TSN consensus (features averaged over time, then the linear ``fc``) its logits are the
image model's logits averaged over frames. Training then learns only the temporal branches and
the other layers (norms, classifier). A temporal branch after a depthwise spatial conv is
depthwise too (EfficientNet); otherwise it maps all channels to all channels (as R(2+1)D).

* :func:`inflate_2plus1` works on the registry's 2D models (TSN over EfficientNet-Lite0 or a
  ResNet, or any TSN-like model): ``(B, 3, T, H, W)`` -> logits; ``forward_stages`` too.
* Feature mode: :class:`FrameAdapter` is the small trainable image encoder on cached frozen
  frame features (two ``Linear + ReLU`` layers, two stages for multi-layer discriminators) and
  :class:`AdapterVideo` its (2+1)D counterpart, the same construction over the T axis.
"""
from __future__ import annotations

import copy
from typing import List

import torch
from torch import nn

from .layers import make_classifier

__all__ = ["TemporalResidual", "VideoFromImage", "inflate_2plus1", "FrameAdapter", "AdapterVideo"]


class TemporalResidual(nn.Module):
    """``y = S(x) + T(S(x))`` on frames ``(B*T, C, H, W)`` laid out clip-major (TSN's layout);
    ``num_frames`` is set by the enclosing :class:`VideoFromImage` before each forward."""

    def __init__(self, spatial: nn.Conv2d, kernel_t: int = 3):
        super().__init__()
        if kernel_t < 1 or kernel_t % 2 == 0:
            raise ValueError(f"temporal kernel must be odd and positive, got {kernel_t}")
        self.spatial = spatial
        for p in self.spatial.parameters():
            p.requires_grad_(False)
        c = spatial.out_channels
        depthwise = spatial.groups > 1 and spatial.groups == spatial.in_channels == c
        self.temporal = nn.Conv3d(c, c, (kernel_t, 1, 1), padding=(kernel_t // 2, 0, 0),
                                  groups=c if depthwise else 1, bias=False)
        nn.init.zeros_(self.temporal.weight)
        self.num_frames = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.spatial(x)
        n, c, h, w = y.shape
        t = self.num_frames
        if n % t:
            raise ValueError(f"{n} frames do not split into clips of {t}")
        z = y.reshape(n // t, t, c, h, w).transpose(1, 2)  # (B, C, T, H, W)
        z = self.temporal(z).transpose(1, 2).reshape(n, c, h, w)
        return y + z


class VideoFromImage(nn.Module):
    """The (2+1)D video model built from a 2D TSN-like image model (see module docstring)."""

    def __init__(self, image_model: nn.Module, kernel_t: int = 3):
        super().__init__()
        net = copy.deepcopy(image_model)
        for p in net.parameters():
            p.requires_grad_(True)
        self.blocks: List[TemporalResidual] = []
        _wrap_convs(net, kernel_t, self.blocks)
        if not self.blocks:
            raise ValueError(f"{type(image_model).__name__} has no spatial convolution to inflate")
        for m in net.modules():  # 1x1 convs are copied and frozen as well
            if isinstance(m, nn.Conv2d):
                for p in m.parameters():
                    p.requires_grad_(False)
        self.net = net
        self.num_features = net.num_features
        self.stage_dims = getattr(net, "stage_dims", None)

    @property
    def fc(self) -> nn.Module:
        return self.net.fc

    @property
    def dropout(self) -> nn.Module:
        return self.net.dropout

    def _set_frames(self, x: torch.Tensor) -> None:
        t = x.shape[2] if x.dim() == 5 else 1
        for b in self.blocks:
            b.num_frames = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._set_frames(x)
        return self.net(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._set_frames(x)
        return self.net.forward_features(x)

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        self._set_frames(x)
        return self.net.forward_stages(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.net.reset_classifier(num_classes)

    def spatial_parameters(self) -> List[nn.Parameter]:
        return [p for b in self.blocks for p in b.spatial.parameters()]

    def temporal_parameters(self) -> List[nn.Parameter]:
        return [p for b in self.blocks for p in b.temporal.parameters()]


def _wrap_convs(module: nn.Module, kernel_t: int, out: list) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and max(child.kernel_size) > 1:
            wrapped = TemporalResidual(child, kernel_t)
            setattr(module, name, wrapped)
            out.append(wrapped)
        else:
            _wrap_convs(child, kernel_t, out)


def inflate_2plus1(image_model: nn.Module, kernel_t: int = 3) -> VideoFromImage:
    """Stage 2 of Kae & Song: a (2+1)D video model from a trained 2D image model (a copy; the
    image model is left untouched)."""
    return VideoFromImage(image_model, kernel_t)


# ---------------------------------------------------------------------------- registry
from .registry import register_model  # noqa: E402


@register_model("efficientnet_lite0_2plus1d")
def efficientnet_lite0_2plus1d(num_classes: int, imagenet: bool = False, width: float = 1.0, dropout: float = 0.5,
                               kernel_t: int = 3) -> VideoFromImage:
    """A (2+1)D video network from TSN-EfficientNet-Lite0 (Kae & Song §3.4): the (ImageNet)
    spatial convolutions frozen, each followed by a zero-initialised residual temporal conv of
    ``kernel_t`` frames, so it starts as the 2D network averaged over time and learns motion in
    the temporal branches, norms and classifier. A spatio-temporal network that a CPU can train
    from the offline ImageNet weights (a SlowOnly needs torchvision's ResNet weights)."""
    from .tsn import tsn_efficientnet_lite0

    return inflate_2plus1(tsn_efficientnet_lite0(num_classes, imagenet=imagenet, width=width, dropout=dropout),
                          kernel_t)


# ---------------------------------------------------------------------------- feature mode


class FrameAdapter(nn.Module):
    """Feature-mode image model: ``E(x) = ReLU(L2(Dropout(ReLU(L1(x)))))`` on a frozen frame
    feature, ``fc`` on ``E``. Frames ``(N, D)`` -> logits; clips ``(B, T, D)`` -> logits averaged
    over T (the TSN consensus, so a web image and a video are scored the same way)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        self.l1, self.l2 = nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden)
        self.relu = nn.ReLU()
        self.inner_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.fc = make_classifier(hidden, num_classes)
        self.num_features = hidden
        self.stage_dims = [hidden, hidden]

    def frame_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        h1 = self.relu(self.l1(x.float()))
        return [h1, self.relu(self.l2(self.inner_dropout(h1)))]

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Per-stage features; clips are averaged over T (as ``TSN.forward_stages``)."""
        stages = self.frame_stages(x)
        return [s.mean(dim=1) for s in stages] if x.dim() == 3 else stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return self.fc(self.dropout(self.frame_stages(x)[-1])).mean(dim=1)
        return self.fc(self.dropout(self.forward_stages(x)[-1]))


class AdapterVideo(nn.Module):
    """Feature-mode (2+1)D model from a :class:`FrameAdapter`: ``L1`` and ``L2`` (the per-frame,
    "spatial" layers) copied and frozen, each followed by a zero-initialised temporal
    ``Conv1d`` over T in a residual branch; features averaged over T, then ``fc``. At
    initialisation, in eval mode, its logits equal the adapter's logits averaged over frames."""

    def __init__(self, image_model: FrameAdapter, kernel_t: int = 3):
        super().__init__()
        src = copy.deepcopy(image_model)
        self.l1, self.l2, self.fc = src.l1, src.l2, src.fc
        for p in [*self.l1.parameters(), *self.l2.parameters()]:
            p.requires_grad_(False)
        h = src.num_features
        self.t1, self.t2 = (nn.Conv1d(h, h, kernel_t, padding=kernel_t // 2, bias=False) for _ in range(2))
        for t in (self.t1, self.t2):
            nn.init.zeros_(t.weight)
        self.relu, self.inner_dropout, self.dropout = nn.ReLU(), src.inner_dropout, src.dropout
        self.num_features, self.stage_dims = h, [h, h]

    @staticmethod
    def _temporal(conv: nn.Conv1d, y: torch.Tensor) -> torch.Tensor:
        return y + conv(y.transpose(1, 2)).transpose(1, 2)

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        h1 = self._temporal(self.t1, self.relu(self.l1(x.float())))
        h2 = self._temporal(self.t2, self.relu(self.l2(self.inner_dropout(h1))))
        return [h1.mean(dim=1), h2.mean(dim=1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_stages(x)[-1]))
