"""Small building blocks shared by the model zoo.

Every model of the zoo takes RGB input in ``[0, 1]`` and normalises it itself with a
:class:`Normalize` module as its first operation, so data pipelines never need to know
which statistics a backbone was trained with. The mean/std are *non-persistent* buffers:
they follow ``model.to(device / dtype)`` but are not written to state dicts, which keeps
checkpoints name-for-name compatible with torchvision / lukemelas files.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: ImageNet statistics (torchvision ResNets), RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: TF-lite convention of EfficientNet-Lite: ``(x * 255 - 127) / 128`` == ``(x - 127/255) / (128/255)``.
TFLITE_MEAN = (127.0 / 255.0,) * 3
TFLITE_STD = (128.0 / 255.0,) * 3


class Normalize(nn.Module):
    """``(x - mean) / std`` over the channel dimension (dim 1) of a 4-D or 5-D tensor.

    ``ndim`` is the rank of the input (4 for images ``(N, C, H, W)``, 5 for clips
    ``(B, C, T, H, W)``). Keeps the input dtype and memory format (channels_last /
    channels_last_3d survive the elementwise ops).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], ndim: int = 4):
        super().__init__()
        if ndim < 2:
            raise ValueError("ndim must be >= 2")
        shape = (1, len(mean)) + (1,) * (ndim - 2)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.mean.dim():
            raise ValueError(f"Normalize expects a {self.mean.dim()}-D input, got shape {tuple(x.shape)}")
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return (x.to(dtype) - self.mean.to(dtype)) / self.std.to(dtype)

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.flatten().tolist()]}, std={[round(v, 4) for v in self.std.flatten().tolist()]}"


def scaled_channels(channels: int, width: float) -> int:
    """Channel count after a width multiplier (at least 1)."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(1, int(round(channels * width)))


def make_classifier(in_features: int, num_classes: int, init_std: float = 0.01) -> nn.Module:
    """``nn.Linear(in_features, num_classes)`` (normal(0, init_std) weights, zero bias, as
    mmaction2's heads), or ``nn.Identity()`` when ``num_classes == 0`` (feature extractor)."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if num_classes == 0:
        return nn.Identity()
    fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(fc.weight, 0.0, init_std)
    nn.init.zeros_(fc.bias)
    return fc


def check_clip(x: torch.Tensor, who: str) -> None:
    """Raise a clear error unless ``x`` is a ``(B, 3, T, H, W)`` clip."""
    if x.dim() != 5 or x.shape[1] != 3:
        hint = ""
        if x.dim() == 5 and x.shape[2] == 3:
            hint = " (looks like (B, T, 3, H, W): use x.permute(0, 2, 1, 3, 4))"
        raise ValueError(f"{who} expects a clip of shape (B, 3, T, H, W) in [0, 1], got {tuple(x.shape)}{hint}")


class BasicResidual(nn.Module):
    """Forward of a basic block (He et al. 2016, Fig. 5 left), 2D or 3D: ``conv1 -> bn1 -> relu ->
    conv2 -> bn2``, plus the identity or ``downsample`` shortcut, then ``relu``."""

    expansion = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class BottleneckResidual(nn.Module):
    """Forward of a bottleneck block (He et al. 2016, Fig. 5 right), 2D or 3D: three conv + BN,
    ReLU after the first two, the shortcut added before the last ReLU."""

    expansion = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class StagedResNet(nn.Module):
    """What the 2D and 3D ResNets share: ``_stem`` (defined by each), four stages
    ``layer1..layer4``, global average pooling, dropout and ``fc``; their head and weight init."""

    def _init_head(self, num_features: int, num_classes: int, dropout: float) -> None:
        """Dropout and ``fc`` after the pooled ``num_features`` (no classifier for ``num_classes=0``)."""
        self.num_features = num_features
        self.drop_rate = float(dropout)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.num_classes = num_classes
        self.fc = make_classifier(num_features, num_classes)

    def _init_weights(self) -> None:
        """He (fan-out) init of every conv, every BN the identity (as torchvision)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Globally average-pooled outputs of ``layer1..layer4``: a list of ``(N, D_s)``."""
        x = self._stem(x)
        out = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            out.append(torch.flatten(self.avgpool(x), 1))
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, num_features)``, before dropout / fc."""
        x = self._stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        ref = self.bn1.weight
        self.fc = make_classifier(self.num_features, num_classes).to(device=ref.device, dtype=ref.dtype)
