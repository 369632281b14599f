"""Heads for FEATURE MODE: train on cached per-frame features ``(B, T, D)`` of a frozen 2D
backbone (feature mode, docs/concepts.md), output logits ``(B, C)``. Every head has ``.fc`` (``nn.Linear``),
``num_features`` and ``reset_classifier``; a ``(B, D)`` input is read as ``T = 1``.

* ``"tsn"`` — :class:`TSNHead`: dropout + ``fc`` applied to every frame, logits averaged over T:
  the segmental consensus of TSN (Wang et al. 2016, §3.1) on top of a frozen backbone.
* ``"linear"`` — :class:`LinearHead`: ``fc`` on the time-averaged feature, the "fc-only"
  evaluation of frozen features (Ghadiyaram et al., CVPR 2019, §4; a linear probe). In eval mode
  it equals the TSN head (``fc`` is linear); in training the TSN head draws a dropout mask per
  frame.
* ``"frames"`` — :class:`FrameHead`: the TSN head trained at frame level: in training it
  returns every frame's logits ``(B, T, C)`` and each frame carries its own cross-entropy
  (``train.loop.per_sample_cross_entropy`` averages them over T), as a linear classifier of
  single frames does; in eval it returns ``frame_consensus``, the log of the frames' mean
  softmax, so whatever takes a softmax (predict, evaluate, score, serve, ONNX) gets the
  softmax averaged over frames (TSN's consensus on scores, Wang et al. 2016, §3.1). A web
  image, a replicated still clip, then trains as the single frame it is.
* ``"temporal"`` — :class:`TemporalHead`: a small temporal module, ``Conv1d`` over T (kernel
  ``min(3, num_frames)``, "same" padding) + ReLU, average pooling over T, dropout, ``fc``; it
  sees frame order (TSN and the probe do not).
"""

from __future__ import annotations

import math
from typing import Dict, Type

import torch
from torch import nn

from .layers import make_classifier

__all__ = ["TSNHead", "LinearHead", "FrameHead", "TemporalHead", "create_head", "frame_consensus", "HEADS"]


def _as_btd(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return x.unsqueeze(1)
    if x.dim() != 3:
        raise ValueError(f"heads expect features (B, T, D) or (B, D), got {tuple(x.shape)}")
    return x


class _Head(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, num_frames: int, dropout: float):
        super().__init__()
        self.in_dim, self.num_frames, self.num_classes = int(in_dim), int(num_frames), int(num_classes)
        self.drop_rate = float(dropout)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        ref = next(self.parameters(), None)
        fc = make_classifier(self.num_features, num_classes)
        self.fc = fc if ref is None else fc.to(device=ref.device, dtype=ref.dtype)


class TSNHead(_Head):
    """Per-frame dropout + ``fc``, average of the logits over T."""

    def __init__(self, in_dim: int, num_classes: int, num_frames: int = 8, dropout: float = 0.5):
        super().__init__(in_dim, num_classes, num_frames, dropout)
        self.num_features = self.in_dim
        self.fc = make_classifier(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return _as_btd(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(_as_btd(x))).mean(dim=1)


class LinearHead(TSNHead):
    """``fc`` on the time-averaged feature (linear probe; dropout before ``fc``, 0 for a pure probe)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def frame_consensus(frame_logits: torch.Tensor) -> torch.Tensor:
    """(B, T, C) frame logits -> (B, C) log of the mean over T of the frames' softmax: its
    softmax (and argmax) is the frame-averaged probability."""
    t = frame_logits.shape[1]
    return torch.logsumexp(frame_logits.float().log_softmax(-1), dim=1) - math.log(t)


class FrameHead(TSNHead):
    """Per-frame dropout + ``fc``; training: the frame logits (B, T, C); eval: ``frame_consensus``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.fc(self.dropout(_as_btd(x)))
        return frames if self.training else frame_consensus(frames)


class TemporalHead(_Head):
    """``Conv1d(D, hidden, k)`` over T + ReLU, mean over T, dropout, ``fc(hidden, C)``."""

    def __init__(self, in_dim: int, num_classes: int, num_frames: int = 8, dropout: float = 0.5, hidden_dim: int = 512):
        super().__init__(in_dim, num_classes, num_frames, dropout)
        k = max(1, min(3, int(num_frames)))
        if k % 2 == 0:
            k -= 1
        self.temporal = nn.Conv1d(self.in_dim, hidden_dim, kernel_size=k, padding=k // 2)
        self.relu = nn.ReLU(inplace=True)
        self.num_features = int(hidden_dim)
        self.fc = make_classifier(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_btd(x).transpose(1, 2)  # (B, D, T)
        return self.relu(self.temporal(x)).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


HEADS: Dict[str, Type[_Head]] = {"tsn": TSNHead, "linear": LinearHead, "frames": FrameHead, "temporal": TemporalHead}


def create_head(kind: str, in_dim: int, num_classes: int, num_frames: int, dropout: float = 0.5, **kwargs) -> nn.Module:
    """Head for cached features ``(B, T, D)`` -> logits ``(B, C)``; ``kind`` in ``"tsn"``,
    ``"linear"``, ``"frames"`` (``(B, T, C)`` frame logits in training), ``"temporal"``
    (``hidden_dim=`` for the temporal head)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head kind {kind!r}; available: {', '.join(sorted(HEADS))}")
    return HEADS[kind](in_dim, num_classes, num_frames, dropout, **kwargs)
