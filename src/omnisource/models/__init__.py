"""Model zoo: video models (TSN, SlowOnly, R3D, R(2+1)D), frame backbones and feature-mode heads.

Conventions: video models take ``(B, 3, T, H, W)`` RGB in ``[0, 1]`` and normalise internally;
they expose ``forward_features(x) -> (B, D)``, ``num_features``, ``reset_classifier(n)`` and a
final ``nn.Linear`` named ``fc``.
"""

from .registry import (
    create_backbone,
    create_model,
    is_model,
    list_backbones,
    list_models,
    register_backbone,
    register_model,
)
from . import efficientnet, inflate2plus1, resnet, resnet3d, tsn
from .checkpoint import load_pretrained, load_state_dict_file
from .heads import create_head
from .inflate3d import inflate_from_2d
from .tsn import TSN

_ZOO = (efficientnet, inflate2plus1, resnet, resnet3d, tsn)  # imported for their registrations

__all__ = [
    "create_model",
    "create_backbone",
    "create_head",
    "list_models",
    "list_backbones",
    "is_model",
    "register_model",
    "register_backbone",
    "load_pretrained",
    "load_state_dict_file",
    "inflate_from_2d",
    "TSN",
]
