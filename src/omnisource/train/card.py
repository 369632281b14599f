"""Model cards: what inference needs to rebuild and feed a trained model, saved with every
checkpoint (``model.json`` and the safetensors metadata; see ``train.checkpoint``).

A card holds the class names, the mode, the network (feature mode: the head *and* the frozen
backbone that made its features, so inference can re-embed frames; pixel mode: the whole video
model) and the preprocessing of evaluation: frame sampling, short side, centre crop, and the
mean/std that the network applies itself to RGB in [0, 1]::

    {"format": 1, "classes": [...], "mode": "features",
     "model": {"kind": "head", "name": "tsn", "in_dim": 1280, "num_frames": 8, "dropout": 0.5},
     "backbone": {"name": "efficientnet_lite0", "pretrained": "imagenet", "size": 128, "frames": 8},
     "preprocessing": {"sampler": "tsn", "frames": 8, "frame_interval": 1, "resize_short": 128,
                       "crop": 128, "mean": [...], "std": [...], "feature_dtype": "float16"}}

Checkpoints written before cards existed are described by :func:`legacy_card` from their
``config.yaml``, their weights and the class list of the workspace they sit in.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import yaml

from .. import __version__
from ..config import Config, ConfigError, from_dict
from ..digest import file_sha256

CARD_FORMAT = 1


class CardError(ValueError):
    """A checkpoint that does not describe itself and cannot be described; one line."""


def _normalization(module: torch.nn.Module) -> dict:
    from ..models.layers import Normalize

    norm = next((m for m in module.modules() if isinstance(m, Normalize)), None)
    if norm is None:
        return {}
    return {"mean": [round(v, 6) for v in norm.mean.flatten().tolist()],
            "std": [round(v, 6) for v in norm.std.flatten().tolist()]}


@functools.lru_cache(maxsize=8)
def _backbone_normalization(name: str) -> tuple[tuple[str, list[float]], ...]:
    from ..models import create_backbone

    return tuple(_normalization(create_backbone(name)).items())  # built without weights: only its Normalize


def head_spec(head: torch.nn.Module, name: str) -> dict:
    """What ``models.create_head`` needs to rebuild a feature-mode head."""
    spec = {"kind": "head", "name": name, "in_dim": int(head.in_dim), "num_frames": int(head.num_frames),
            "dropout": float(head.drop_rate)}
    if name == "temporal":
        spec["hidden_dim"] = int(head.num_features)
    return spec


def model_card(cfg: Config, classes: list[str], model: torch.nn.Module) -> dict:
    """The card of ``model`` trained under ``cfg`` on ``classes``."""
    card = {"format": CARD_FORMAT, "omnisource": __version__, "classes": list(classes), "mode": cfg.mode}
    if cfg.mode == "features":
        f = cfg.features
        backbone = {"name": f.backbone, "pretrained": f.pretrained, "size": f.size, "frames": f.frames}
        if f.pretrained and f.pretrained.lower() != "imagenet":
            backbone["sha256"] = file_sha256(f.pretrained)
        card["model"] = head_spec(model, f.head)
        card["backbone"] = backbone
        card["preprocessing"] = {"sampler": "tsn", "frames": f.frames, "frame_interval": 1, "resize_short": f.size,
                                 "crop": f.size, **dict(_backbone_normalization(f.backbone)),
                                 "feature_dtype": "float16"}  # the cache stores float16 features
    else:
        m = cfg.media
        card["model"] = {"kind": "video", "name": cfg.model.name, "width": cfg.model.width,
                         "dropout": cfg.model.dropout}
        card["preprocessing"] = {"sampler": m.sampler, "frames": m.num_segments, "frame_interval": m.frame_interval,
                                 "resize_short": m.resize_short, "crop": m.input_size, **_normalization(model)}
    return card


def card_from_text(config_text: str, classes: list[str], model: torch.nn.Module) -> dict | None:
    """The card of a run whose resolved config is ``config_text`` (None without a config)."""
    if not config_text.strip():
        return None
    return model_card(from_dict(yaml.safe_load(config_text)), classes, model)


def read_card(checkpoint: Path) -> dict | None:
    """The card of an epoch folder or weights file (its ``model.json`` or safetensors metadata)."""
    from safetensors import safe_open

    from .checkpoint import CARD_FILE, CARD_KEY

    p = Path(checkpoint)
    side = p / CARD_FILE if p.is_dir() else p.parent / CARD_FILE
    if side.is_file():
        return json.loads(side.read_text())
    weights = p / "model.safetensors" if p.is_dir() else p
    if weights.suffix == ".safetensors" and weights.is_file():
        with safe_open(str(weights), framework="pt") as f:
            text = (f.metadata() or {}).get(CARD_KEY)
        if text:
            return json.loads(text)
    return None


def config_near(weights: Path) -> Config | None:
    """The config a weights file was trained with: its epoch folder's or its run folder's."""
    for cand in (weights.parent / "config.yaml", weights.parent.parent.parent / "config.yaml"):
        if cand.is_file() and cand.read_text().strip():
            try:
                return from_dict(yaml.safe_load(cand.read_text()))
            except (ConfigError, yaml.YAMLError):
                pass
    return None


def _workspace_classes(weights: Path, num_classes: int) -> list[str] | None:
    """Classes of the workspace around ``WS/runs/<name>/checkpoints/epoch_NNN/model.safetensors``:
    the target manifest's, or the weak-label manifest's (pre-training runs), whichever has
    ``num_classes`` classes."""
    from ..data.manifest import ManifestError, read_manifest
    from ..workspace import Workspace

    for root in weights.parents:
        ws = Workspace(root)
        if not ws.manifests_dir.is_dir():
            continue
        for path in (ws.target("prepared"), ws.target("validated"), ws.target("imported"), ws.weak_manifest):
            try:
                classes = read_manifest(path).classes if path.exists() else None
            except ManifestError:
                classes = None
            if classes and len(classes) == num_classes:
                return classes
        return None
    return None


def legacy_card(checkpoint: Path) -> dict:
    """Describe a checkpoint written before cards: its config.yaml (epoch or run folder), the
    shapes of its weights and the classes of the workspace it lies in."""
    from safetensors.torch import load_file

    from ..models import create_head, create_model

    p = Path(checkpoint)
    weights = p / "model.safetensors" if p.is_dir() else p
    how = (f"{weights}: written before checkpoints described themselves (no model.json), and ")
    cfg = config_near(weights)
    if cfg is None:
        raise CardError(how + "no config.yaml next to it; keep it in its run folder (WS/runs/NAME/checkpoints/...) "
                        "and run `omnisource upgrade-checkpoint WS/runs/NAME`")
    state = load_file(str(weights))
    if any(k.startswith(("model.", "discs.")) for k in state):  # DANet: the classifier and its discriminators
        raise CardError(f"{weights}: a domain-adaptation network (train.method=da); predict and export take "
                        "supervised runs")
    fc = state.get("fc.weight")
    if fc is None:
        raise CardError(how + "its weights have no fc classifier to count the classes by")
    classes = _workspace_classes(weights, int(fc.shape[0]))
    if classes is None:
        raise CardError(how + f"no workspace manifest around it has its {fc.shape[0]} classes; run "
                        "`omnisource upgrade-checkpoint RUN` on the run inside its workspace")
    if cfg.mode == "features":
        head = cfg.features.head
        in_dim = int(state["temporal.weight"].shape[1] if head == "temporal" else fc.shape[1])
        kw = {"hidden_dim": int(state["temporal.weight"].shape[0])} if head == "temporal" else {}
        model = create_head(head, in_dim, len(classes), cfg.features.frames, cfg.model.dropout, **kw)
    else:
        model = create_model(cfg.model.name, len(classes), pretrained=None, width=cfg.model.width,
                             dropout=cfg.model.dropout)
    epoch = weights.parent.name[len("epoch_"):]
    return dict(model_card(cfg, classes, model), legacy=True, **({"epoch": int(epoch)} if epoch.isdigit() else {}))


def card_of(checkpoint: Path) -> dict:
    """The card of a checkpoint, from itself or (old checkpoints) from :func:`legacy_card`."""
    card = read_card(checkpoint)
    if card is None:
        return legacy_card(checkpoint)
    if int(card.get("format", 0)) > CARD_FORMAT:
        raise CardError(f"{checkpoint}: model card format {card['format']} is newer than this omnisource "
                        f"({__version__}) reads; upgrade omnisource")
    return card
