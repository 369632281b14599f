"""Frame backbones from timm (optional extra ``omnisource[timm]``): ``timm/<timm_model_name>``.

The timm model is created with ``num_classes=0`` (pooled features), and its own
``pretrained_cfg`` mean/std become the first op, so it takes RGB in ``[0, 1]`` like every
backbone of the zoo.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from .layers import IMAGENET_MEAN, IMAGENET_STD, Normalize

__all__ = ["TimmBackbone", "import_timm"]


def import_timm(context: str):
    try:
        import timm  # noqa: F401
    except Exception as e:
        raise RuntimeError(
            f"{context} needs timm (pip install 'omnisource[timm]'); import failed: {type(e).__name__}: {e}"
        ) from None
    return timm


class TimmBackbone(nn.Module):
    """``timm.create_model(name, num_classes=0)`` behind the zoo's backbone interface."""

    def __init__(self, timm_name: str, pretrained: bool = False, **kwargs):
        super().__init__()
        timm = import_timm(f"backbone 'timm/{timm_name}'")
        self.timm_name = timm_name
        self.model = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, **kwargs)
        cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        if len(mean) != 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        self.normalize = Normalize(tuple(mean), tuple(std), ndim=4)
        self.num_features = int(self.model.num_features)
        self.stage_dims = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Pooled intermediate features via timm's ``forward_intermediates`` (timm >= 1.0, most
        CNNs / ViTs); the last entry is the pooled final feature."""
        fn = getattr(self.model, "forward_intermediates", None)
        if fn is None:
            raise NotImplementedError(f"timm model {self.timm_name} has no forward_intermediates")
        feats = fn(self.normalize(x), intermediates_only=True)
        out = []
        for f in feats:
            out.append(f.mean(dim=(2, 3)) if f.dim() == 4 else f.mean(dim=1))
        out.append(self.forward_features(x))
        return out
