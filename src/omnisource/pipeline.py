"""Stages of the target-only workflow, each ``stage(cfg, workspace) -> Path`` (DESIGN.md §2).

import → validate → [prepare] → features → train → evaluate. Every stage writes its output
atomically and is skipped by ``run`` when the output is already complete.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console

from .config import Config, dump_config
from .data import importers
from .data.manifest import Manifest, ManifestError, atomic_write_text, read_manifest, write_manifest

console = Console()

TARGET = "manifests/target.parquet"
VALIDATED = "manifests/target.validated.parquet"
PREPARED = "manifests/target.prepared.parquet"


def ws_path(workspace: str | Path, rel: str) -> Path:
    return Path(workspace) / rel


def target_manifest_path(workspace: str | Path) -> Path:
    """The most processed target manifest available (prepared > validated > imported)."""
    for rel in (PREPARED, VALIDATED, TARGET):
        p = ws_path(workspace, rel)
        if p.exists():
            return p
    raise ManifestError(f"{workspace}: no target manifest yet; run `omnisource import` first")


def import_target(cfg: Config, workspace: str | Path) -> Path:
    """Build the target manifest from the configured source, split by group, keep k per class."""
    t = cfg.target
    if not t.root and not t.annotations:
        raise ManifestError("target.root (or target.annotations) is not set in the config")
    loaders = {
        "folders": lambda: importers.from_folders(t.root),
        "csv": lambda: importers.from_csv(t.annotations, t.root or None),
        "mmaction": lambda: importers.from_mmaction(t.annotations, t.root or None),
        "mmaction_frames": lambda: importers.from_mmaction(t.annotations, t.root or None),
        "kinetics": lambda: importers.from_kinetics(t.annotations, t.root),
        "manifest": lambda: read_manifest(t.annotations or t.root),
    }
    manifest = loaders[t.format]()
    if not any(r.get("split") for r in manifest.rows):
        manifest = importers.split_by_group(manifest, t.group_regex, t.val_groups, t.train_groups,
                                            t.val_fraction, t.seed)
    manifest = importers.subsample_per_class(manifest, t.per_class, seed=t.seed)
    out = write_manifest(manifest, ws_path(workspace, TARGET))
    counts = Counter(r["split"] for r in manifest.rows)
    console.print(f"import: {len(manifest)} rows, {len(manifest.classes)} classes, splits {dict(counts)} -> {out}")
    return out


def validate_target(cfg: Config, workspace: str | Path) -> Path:
    from .data.prepare import validate_rows

    manifest = read_manifest(ws_path(workspace, TARGET))
    rows = validate_rows(manifest.rows, max_pixels=cfg.media.max_pixels, progress=console.is_terminal)
    out = write_manifest(Manifest(rows, manifest.classes), ws_path(workspace, VALIDATED))
    bad = [r for r in rows if r["status"] != "ok"]
    console.print(f"validate: {len(rows) - len(bad)} ok, {len(bad)} corrupt -> {out}")
    for r in bad[:10]:
        console.print(f"  corrupt: {r['path']}: {r['reason']}")
    return out


def prepare_target(cfg: Config, workspace: str | Path, short_side: int = 128, gop_seconds: float = 1.0,
                   mode: str = "reencode", workers: int = 0) -> Path:
    from .data.prepare import prepare_media

    src = target_manifest_path(workspace)
    if src.name == Path(PREPARED).name:
        src = ws_path(workspace, VALIDATED) if ws_path(workspace, VALIDATED).exists() else ws_path(workspace, TARGET)
    manifest = read_manifest(src)
    rows = prepare_media(manifest.rows, ws_path(workspace, "media"), short_side=short_side,
                         gop_seconds=gop_seconds, mode=mode, workers=workers, progress=None)
    return write_manifest(Manifest(rows, manifest.classes), ws_path(workspace, PREPARED))


def feature_cache(cfg: Config, workspace: str | Path, per_second: bool = False) -> Path:
    """The feature cache of this config: T segment frames per row, or 1 fps for untrimmed videos.
    Ids are stable hashes of source and path, so several workspaces may share one cache root."""
    from .features.cache import cache_dir_for

    f = cfg.features
    root = Path(f.cache_root) if f.cache_root else Path(workspace) / "features"
    return cache_dir_for(root, f.backbone, f.size, f.frames, per_second)


def features_stage(cfg: Config, workspace: str | Path, manifests: list[Path] | None = None) -> Path:
    """Embed every ok row of the given manifests (default: the target) into the feature cache."""
    from .features.cache import extract_features
    from .models import create_backbone
    from .train.loop import resolve_device

    f = cfg.features
    cache = feature_cache(cfg, workspace)
    backbone = create_backbone(f.backbone, pretrained=f.pretrained or None)
    for path in manifests or [target_manifest_path(workspace)]:
        rows = read_manifest(path).rows
        failures = extract_features(rows, backbone, cache, size=f.size, frames=f.frames, batch_size=f.batch_size,
                                    shard_size=f.shard_size, workers=f.workers, max_pixels=cfg.media.max_pixels,
                                    device=resolve_device(cfg.train.device), progress=console.is_terminal)
        failed = [r for r in rows if r["id"] in failures]
        console.print(f"features: {len(rows) - len(failed)} rows of {path.name} cached in {cache}"
                      + (f", {len(failed)} failed to decode" if failed else ""))
    return cache


def run_dir(cfg: Config, workspace: str | Path) -> Path:
    return Path(workspace) / "runs" / cfg.train.run_name


def _feature_split(cfg: Config, workspace, manifest: Manifest, split: str):
    from .features.cache import stack_features

    rows = [r for r in manifest.rows if r.get("split") == split and r.get("status") == "ok"]
    feats, kept = stack_features(feature_cache(cfg, workspace), rows, cfg.features.frames)
    if len(kept) < len(rows):
        console.print(f"[yellow]{len(rows) - len(kept)} {split} rows have no cached features "
                      f"(failed to decode or `omnisource features` not run); they are left out[/]")
    return feats, np.array([r["label"] for r in kept], dtype=np.int64), kept


def build_model_and_loaders(cfg: Config, workspace, manifest: Manifest):
    """(model, train_loader, val_loader) for the configured mode."""
    import torch

    from .data.datasets import FeatureDataset, VideoClipDataset, make_loader
    from .models import create_head, create_model

    torch.manual_seed(cfg.train.seed)  # the initial weights depend on the seed alone
    num_classes = len(manifest.classes)
    if cfg.mode == "features":
        xtr, ytr, _ = _feature_split(cfg, workspace, manifest, "train")
        xva, yva, _ = _feature_split(cfg, workspace, manifest, "val")
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


def train_stage(cfg: Config, workspace: str | Path, resume: bool = False) -> Path:
    from .train.loop import fit

    manifest = read_manifest(target_manifest_path(workspace))
    model, train, val = build_model_and_loaders(cfg, workspace, manifest)
    out = run_dir(cfg, workspace)
    console.print(f"train: {cfg.mode} mode, {len(train.dataset)} training / "
                  f"{len(val.dataset) if val else 0} validation samples, {len(manifest.classes)} classes -> {out}")
    fit(model, train, val, cfg.train, out, manifest.classes, dump_config(cfg), resume=resume, console=console)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    return out


def evaluate_stage(cfg: Config, workspace: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Evaluate the latest (or given) checkpoint on the validation split; writes metrics.json."""
    from .evaluate.metrics import classification_metrics, metrics_table
    from .train.checkpoint import latest_checkpoint, load_weights
    from .train.loop import predict, resolve_device

    manifest = read_manifest(target_manifest_path(workspace))
    model, _, val = build_model_and_loaders(cfg, workspace, manifest)
    if val is None:
        raise ManifestError("the target manifest has no validation rows")
    out = run_dir(cfg, workspace)
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"{out}: no checkpoint to evaluate; run `omnisource train` first")
    load_weights(model, ckpt)
    device = resolve_device(cfg.train.device)
    scores, labels = predict(model.to(device), val, device, cfg.train.amp)
    metrics = classification_metrics(scores, labels, manifest.classes)
    metrics["checkpoint"] = str(ckpt)
    path = atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    console.print(metrics_table(metrics, title=f"{cfg.train.run_name}: validation"))
    return path
