"""Stages of the target-only workflow, each ``stage(cfg, workspace) -> Path`` (DESIGN.md §2).

import → validate → [prepare] → features → train → evaluate. Every stage writes its output
atomically and is skipped by ``run`` when the output is already complete. ``workspace`` is a
path or a :class:`~omnisource.workspace.Workspace`.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .config import Config, dump_config
from .console import console
from .data import importers
from .data.manifest import Manifest, ManifestError, atomic_write_text, read_manifest, write_manifest
from .train.build import build_model_and_loaders
from .workspace import Workspace


def import_target(cfg: Config, workspace) -> Path:
    """Build the target manifest from the configured source, split by group, keep k per class."""
    ws = Workspace.of(workspace)
    t = cfg.target
    if not t.root and not t.annotations:
        raise ManifestError("target.root (or target.annotations) is not set in the config")
    loaders = {
        "folders": lambda a, c: importers.from_folders(a or t.root, classes=c),
        "csv": lambda a, c: importers.from_csv(a, t.root or None, classes=c),
        "mmaction": lambda a, c: importers.from_mmaction(a, t.root or None, classes=c),
        "mmaction_frames": lambda a, c: importers.from_mmaction(a, t.root or None, classes=c),
        "kinetics": lambda a, c: importers.from_kinetics(a, t.root, classes=c),
        "manifest": lambda a, c: read_manifest(a or t.root),
    }
    manifest = loaders[t.format](t.annotations, None)
    if t.val_annotations:  # a separate validation list (Kinetics' validate.csv), in the same class order
        val = loaders[t.format](t.val_annotations, manifest.classes)
        if val.classes and val.classes != manifest.classes:
            raise ManifestError(f"target.val_annotations: classes {val.classes[:5]}... differ from the training "
                                f"list's {manifest.classes[:5]}...")
        manifest.rows = [dict(r, split="train") for r in manifest.rows] + [dict(r, split="val") for r in val.rows]
    if not any(r.get("split") for r in manifest.rows):
        manifest = importers.split_by_group(manifest, t.group_regex, t.val_groups, t.train_groups,
                                            t.val_fraction, t.seed)
    manifest = importers.subsample_per_class(manifest, t.per_class, seed=t.seed)
    importers.check_classes(manifest, f"import of {t.annotations or t.root}")
    out = write_manifest(manifest, ws.target("imported"))
    counts = Counter(r["split"] for r in manifest.rows)
    console.print(f"import: {len(manifest)} rows, {len(manifest.classes)} classes, splits {dict(counts)} -> {out}")
    return out


def validate_target(cfg: Config, workspace) -> Path:
    """The one validator (clean.validate, rules from the `media` section) over the target rows."""
    from .clean.validate import Rules, counts, validate_rows

    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target("imported"))
    rows = validate_rows(manifest.rows, Rules.from_config(cfg.media), progress=console.is_terminal)
    out = write_manifest(Manifest(rows, manifest.classes), ws.target("validated"))
    bad = [r for r in rows if r["status"] != "ok"]
    console.print(f"validate: {counts(rows)} -> {out}")
    for r in bad[:10]:
        console.print(f"  {r['status']}: {r['path']}: {r['reason']}", highlight=False)
    return out


def prepare_target(cfg: Config, workspace, short_side: int = 128, gop_seconds: float = 1.0,
                   mode: str = "reencode") -> Path:
    from .data.prepare import prepare_media

    ws = Workspace.of(workspace)
    src = ws.target("validated") if ws.target("validated").exists() else ws.target("imported")
    manifest = read_manifest(src)
    rows = prepare_media(manifest.rows, ws.media_dir, short_side=short_side,
                         gop_seconds=gop_seconds, mode=mode, progress=console.is_terminal)
    return write_manifest(Manifest(rows, manifest.classes), ws.target("prepared"))


def features_stage(cfg: Config, workspace, manifests: list[Path] | None = None) -> Path:
    """Embed every ok row of the given manifests (default: the target) into the feature cache."""
    from .features.embed import embed_manifest
    from .models import create_backbone

    ws = Workspace.of(workspace)
    f = cfg.features
    backbone = create_backbone(f.backbone, pretrained=f.pretrained or None)
    for path in manifests or [ws.target_manifest()]:
        embed_manifest(cfg, ws, path, backbone=backbone)
    return ws.feature_cache(cfg)


def train_stage(cfg: Config, workspace, resume: bool = False) -> Path:
    from .train.loop import fit

    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    importers.check_classes(manifest, "train", split="train")
    model, train, val = build_model_and_loaders(cfg, ws, manifest)
    out = ws.run(cfg.train.run_name)
    console.print(f"train: {cfg.mode} mode, {len(train.dataset)} training / "
                  f"{len(val.dataset) if val else 0} validation samples, {len(manifest.classes)} classes -> {out}")
    fit(model, train, val, cfg.train, out, manifest.classes, dump_config(cfg), resume=resume, console=console)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    return out


def evaluate_stage(cfg: Config, workspace, checkpoint: str | Path | None = None) -> Path:
    """Evaluate the latest (or given) checkpoint on the validation split; writes metrics.json."""
    from .evaluate.metrics import classification_metrics, metrics_table
    from .train.checkpoint import latest_checkpoint, load_weights
    from .train.loop import predict, resolve_device

    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    model, _, val = build_model_and_loaders(cfg, ws, manifest)
    if val is None:
        raise ManifestError("the target manifest has no validation rows")
    out = ws.run(cfg.train.run_name)
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"{out}: no checkpoint to evaluate; run `omnisource train` first")
    load_weights(model, ckpt)
    device = resolve_device(cfg.train.device)
    scores, labels = predict(model.to(device), val, device, cfg.train.amp, cfg.train.amp_dtype)
    metrics = classification_metrics(scores, labels, manifest.classes)
    metrics["checkpoint"] = str(ckpt)
    path = atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    console.print(metrics_table(metrics, title=f"{cfg.train.run_name}: validation"))
    return path
