"""Temporal Segment Networks (Wang et al., "Temporal Segment Networks: Towards Good Practices for
Deep Action Recognition", ECCV 2016, §3.1 segmental consensus, §3.2 dropout before the
classifier). OmniSource (Duan et al. 2020, §4) reports TSN-R50 70.6 -> 73.6 on Kinetics-400.

A 2D backbone is applied to each of the T frames (snippets) of ``(B, 3, T, H, W)``; the
segmental consensus is the **average**. We average the pooled per-frame *features* over T, then
apply dropout and ``fc`` (as mmaction2's ``TSNHead``). Because ``fc`` is linear this is exactly
the average of the per-frame logits of the paper's formulation whenever dropout is inactive
(eval mode); in training the only difference is that one dropout mask is shared by the frames
of a clip. :meth:`TSN.forward_frame_logits` gives the per-frame logits (frame-level teachers).

A 4-D input ``(B, 3, H, W)`` is treated as a one-frame clip, so the same model scores web
images (OmniSource uses 2D teachers for images).

Memory format: ``model.to(memory_format=torch.channels_last)`` applies to the 2D backbone
(the frames are reshaped to ``(B*T, 3, H, W)``).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from .layers import make_classifier

__all__ = ["TSN"]


class TSN(nn.Module):
    """TSN over any frame backbone ``(N, 3, H, W) in [0, 1] -> (N, D)`` having ``num_features``.

    Args:
        backbone: the 2D frame encoder (normalises its input itself).
        num_classes: classifier size (``0`` = no classifier).
        dropout: dropout ratio before ``fc`` (the TSN paper uses a high ratio, 0.8 for RGB;
            mmaction2's TSN-R50 0.4; default 0.5).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.stage_dims: Optional[List[int]] = getattr(backbone, "stage_dims", None)
        self.drop_rate = float(dropout)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.num_classes = num_classes
        self.fc = make_classifier(self.num_features, num_classes)

    @staticmethod
    def _frames(x: torch.Tensor):
        if x.dim() == 4:  # a batch of images = one-frame clips
            x = x.unsqueeze(2)
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"TSN expects (B, 3, T, H, W) or (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(b * t, c, h, w), b, t

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled per-frame backbone features ``(B, T, D)``."""
        frames, b, t = self._frames(x)
        return self.backbone(frames).reshape(b, t, -1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Consensus features ``(B, D)``: per-frame features averaged over T (before dropout / fc)."""
        return self.frame_features(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))

    def forward_frame_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, T, C)`` (no dropout); their mean over T is ``forward`` in eval mode."""
        return self.fc(self.frame_features(x))

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Per-stage pooled backbone features, averaged over T: list of ``(B, D_s)``."""
        frames, b, t = self._frames(x)
        return [s.reshape(b, t, -1).mean(dim=1) for s in self.backbone.forward_stages(frames)]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        ref = next(self.backbone.parameters())
        self.fc = make_classifier(self.num_features, num_classes).to(device=ref.device, dtype=ref.dtype)


# ---------------------------------------------------------------------------- registry
from .registry import register_model  # noqa: E402


def _tsn_resnet(depth: int, num_classes: int, imagenet: bool, width: float, dropout: float, **kwargs) -> TSN:
    from .resnet import _resnet, imagenet_state_dict

    backbone = _resnet(depth, num_classes=0, width=width, **kwargs)
    model = TSN(backbone, num_classes, dropout=dropout)
    if imagenet:
        sd = imagenet_state_dict(f"resnet{depth}", width, context=f"create_model('tsn_resnet{depth}', pretrained='imagenet')")
        fc = {k[3:]: sd.pop(k) for k in list(sd) if k.startswith("fc.")}
        backbone.load_state_dict(sd, strict=True)
        _maybe_keep_imagenet_fc(model, fc)
    return model


def _maybe_keep_imagenet_fc(model: TSN, fc: dict) -> None:
    """With ``num_classes == 1000`` keep the ImageNet classifier (an ImageNet image/frame classifier)."""
    if isinstance(model.fc, nn.Linear) and fc and fc["weight"].shape == model.fc.weight.shape:
        model.fc.load_state_dict(fc)


@register_model("tsn_efficientnet_lite0")
def tsn_efficientnet_lite0(
    num_classes: int, imagenet: bool = False, width: float = 1.0, dropout: float = 0.5, drop_connect_rate: float = 0.2
) -> TSN:
    """TSN over EfficientNet-Lite0 (1280-d features, TF-lite input normalisation).

    ``width`` is accepted for a uniform call signature and must be 1 (Lite0 has no width knob).
    """
    from .efficientnet import EfficientNetLiteBackbone, load_imagenet

    if float(width) != 1.0:
        raise ValueError(f"tsn_efficientnet_lite0 has a fixed width; got width={width} (use tsn_resnet18 for small widths)")

    backbone = EfficientNetLiteBackbone("efficientnet-lite0", drop_connect_rate=drop_connect_rate)
    model = TSN(backbone, num_classes, dropout=dropout)
    if imagenet:
        _maybe_keep_imagenet_fc(model, load_imagenet(backbone))
    return model


def _register_tsn_resnet(depth: int, doc: str) -> None:
    def entry(num_classes: int, imagenet: bool = False, width: float = 1.0, dropout: float = 0.5, **kwargs) -> TSN:
        return _tsn_resnet(depth, num_classes, imagenet, width, dropout, **kwargs)

    entry.__name__ = entry.__qualname__ = f"tsn_resnet{depth}"
    entry.__doc__ = doc
    register_model(f"tsn_resnet{depth}")(entry)


for _depth, _doc in ((18, "TSN-R18."), (34, "TSN-R34."), (50, "TSN-R50, the OmniSource TSN baseline (§4)."),
                     (101, "TSN-R101.")):
    _register_tsn_resnet(_depth, _doc)
