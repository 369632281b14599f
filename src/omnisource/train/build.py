"""The model and loaders of a training run on the target set, in feature or pixel mode."""
from __future__ import annotations

import numpy as np

from ..config import Config
from ..console import console
from ..data.manifest import Manifest, ManifestError
from ..stamps import config_inputs, file_inputs
from ..workspace import Workspace


def model_inputs(cfg: Config, ws: Workspace) -> dict:
    """What a training run on the target set is made from (its stamp's inputs): the training,
    model and feature (or media) sections and the target manifest."""
    keys = ["mode", "model", "train"] + (["features.backbone", "features.pretrained", "features.size",
                                          "features.frames", "features.head"] if cfg.mode == "features" else ["media"])
    return {**config_inputs(cfg, *keys), **file_inputs(ws, [ws.target_manifest()])}


def feature_split(cfg: Config, workspace, manifest: Manifest, split: str):
    """(features (N, T, D), labels, rows) of the ok rows of ``split`` that have cached features."""
    from ..features.cache import stack_features

    rows = [r for r in manifest.rows if r.get("split") == split and r.get("status") == "ok"]
    feats, kept = stack_features(Workspace.of(workspace).feature_cache(cfg), rows, cfg.features.frames)
    if len(kept) < len(rows):
        console.print(f"[yellow]{len(rows) - len(kept)} {split} rows have no cached features "
                      f"(failed to decode or `omnisource features` not run); they are left out[/]")
    return feats, np.array([r["label"] for r in kept], dtype=np.int64), kept


def build_model_and_loaders(cfg: Config, workspace, manifest: Manifest):
    """(model, train_loader, val_loader) for the configured mode."""
    import torch

    from ..data.datasets import FeatureDataset, VideoClipDataset, make_loader
    from ..models import create_head, create_model

    torch.manual_seed(cfg.train.seed)  # the initial weights depend on the seed alone
    num_classes = len(manifest.classes)
    if cfg.mode == "features":
        xtr, ytr, _ = feature_split(cfg, workspace, manifest, "train")
        xva, yva, _ = feature_split(cfg, workspace, manifest, "val")
        if len(xtr) == 0:
            raise ManifestError("no training rows with cached features: run `omnisource features` first")
        model = create_head(cfg.features.head, xtr.shape[-1], num_classes, cfg.features.frames, cfg.model.dropout)
        train = make_loader(FeatureDataset(xtr, ytr, cfg.features.frames, True, cfg.train.seed),
                            cfg.train.batch_size, True)
        val = make_loader(FeatureDataset(xva, yva, cfg.features.frames), 256, False) if len(xva) else None
        return model, train, val
    rows = {s: [r for r in manifest.rows if r.get("split") == s and r.get("status") == "ok"] for s in ("train", "val")}
    model = create_model(cfg.model.name, num_classes, pretrained=cfg.model.pretrained or None,
                         dropout=cfg.model.dropout, width=cfg.model.width)
    train = make_loader(VideoClipDataset(rows["train"], cfg.media, True, cfg.train.seed), cfg.train.batch_size,
                        True, cfg.train.num_workers)
    val = make_loader(VideoClipDataset(rows["val"], cfg.media, False, cfg.train.seed), cfg.train.batch_size,
                      False, cfg.train.num_workers) if rows["val"] else None
    return model, train, val
