"""Stages of the target-only workflow, each ``stage(cfg, workspace) -> Path`` (docs/concepts.md).

import → validate → [prepare] → features → train → evaluate. Every stage writes its output
atomically and is skipped by ``run`` when the output is already complete. ``workspace`` is a
path or a :class:`~omnisource.workspace.Workspace`.
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import yaml

from .config import Config, dump_config, from_dict
from .console import console
from .data import importers
from .data.manifest import Manifest, ManifestError, absolute_paths, atomic_write_text, read_manifest, write_manifest
from .stamps import config_inputs, file_digest, file_inputs, stage, training_stage, value_digest
from .train.build import build_model_and_loaders, model_inputs
from .workspace import Workspace


def _import_inputs(cfg: Config, ws: Workspace) -> dict:
    t = cfg.target
    files = [p for p in (t.annotations, t.val_annotations) if p]
    if t.format == "manifest" and not t.annotations:
        files.append(t.root)
    return {**config_inputs(cfg, "target"), **file_inputs(ws, files)}


def _user_manifest(path: str) -> Manifest:
    """A manifest the user wrote: relative paths are relative to its folder."""
    m = read_manifest(path)
    return Manifest(absolute_paths(m.rows, Path(path).parent), m.classes)


@stage("import", _import_inputs, lambda cfg, ws: [ws.target("imported")])
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
        "manifest": lambda a, c: _user_manifest(a or t.root),
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
        if t.val_groups and not any(r["split"] == "val" for r in manifest.rows):
            found = sorted({r["group"] for r in manifest.rows if not r["group"].startswith("file:")})
            console.print(f"[yellow]import: no file name carries target.val_groups {', '.join(t.val_groups)} "
                          f"(groups found: {', '.join(found[:20])}); there is no validation split — set "
                          f"target.val_groups[/]", highlight=False)
    manifest = importers.subsample_per_class(manifest, t.per_class, seed=t.seed)
    importers.check_classes(manifest, f"import of {t.annotations or t.root}")
    out = write_manifest(manifest, ws.target("imported"))
    counts = Counter(r["split"] for r in manifest.rows)
    console.print(f"import: {len(manifest)} rows, {len(manifest.classes)} classes, splits {dict(counts)} -> {out}")
    return out


@stage("validate", lambda cfg, ws, all_rows=False: {
    **config_inputs(cfg, "media.max_pixels", "media.min_size", "media.animated"),
    **file_inputs(ws, [ws.target("imported")]), **({"option --all": "yes"} if all_rows else {})},
       lambda cfg, ws, all_rows=False: [ws.target("validated")])
def validate_target(cfg: Config, workspace, all_rows: bool = False) -> Path:
    """The one validator (clean.validate, rules from the `media` section) over the target rows
    the experiment uses (data.scope; every row with ``all_rows``); the others are kept as they are."""
    from .clean.validate import Rules, counts, validate_rows
    from .data.scope import experiment_rows, map_experiment_rows

    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target("imported"))
    rows, skipped = map_experiment_rows(
        lambda part: validate_rows(part, Rules.from_config(cfg.media), progress=True, label="validate (target)"),
        manifest.rows, all_rows)
    out = write_manifest(Manifest(rows, manifest.classes), ws.target("validated"))
    checked_rows = experiment_rows(rows, all_rows)
    bad = [r for r in checked_rows if r["status"] != "ok"]
    console.print(f"validate: {counts(checked_rows)} -> {out}"
                  + (f" ({skipped} videos the experiment does not use not checked; --all checks them)"
                     if skipped else ""))
    for r in bad[:10]:
        console.print(f"  {r['status']}: {r['path']}: {r['reason']}", highlight=False)
    if checked_rows and len(bad) == len(checked_rows):
        raise ManifestError(f"validate: none of the {len(checked_rows)} target files is usable (first: {bad[0]['path']}: "
                            f"{bad[0]['reason']}); check target.root")
    return out


def _prepare_source(ws: Workspace) -> Path:
    return ws.target("validated") if ws.target("validated").exists() else ws.target("imported")


@stage("prepare", lambda cfg, ws, short_side=128, gop_seconds=1.0, mode="reencode", workers=0, all_rows=False: {
    **config_inputs(cfg, "media.max_pixels"), **file_inputs(ws, [_prepare_source(ws)]),
    "options": value_digest([short_side, gop_seconds, mode] + (["all"] if all_rows else []))},
       lambda cfg, ws, *a, **k: [ws.target("prepared")])
def prepare_target(cfg: Config, workspace, short_side: int = 128, gop_seconds: float = 1.0,
                   mode: str = "reencode", workers: int = 0, all_rows: bool = False) -> Path:
    """Re-encode the target videos the experiment uses (every one with ``all_rows``) once (short
    side, 1 s GOPs) or extract their frames (manifests/target.prepared.parquet), on ``workers``
    processes (0: all cores; not a recorded input: the output is the same)."""
    from .data.prepare import prepare_media
    from .data.scope import map_experiment_rows

    ws = Workspace.of(workspace)
    src = _prepare_source(ws)
    manifest = read_manifest(src)
    rows, _ = map_experiment_rows(lambda part: prepare_media(part, ws.media_dir, short_side=short_side,
                                                             gop_seconds=gop_seconds, mode=mode, workers=workers,
                                                             progress=True),
                                  manifest.rows, all_rows)
    return write_manifest(Manifest(rows, manifest.classes), ws.target("prepared"))


@training_stage(lambda cfg, ws, **k: f"train@{cfg.train.run_name}", lambda cfg, ws, **k: model_inputs(cfg, ws),
                lambda cfg, ws, **k: [ws.run(cfg.train.run_name)])
def train_stage(cfg: Config, workspace, resume: bool = False) -> Path:
    """Train ``runs/<train.run_name>`` on the target set: a head on cached features, or a whole network in
    pixel mode."""
    from .distributed import ddp
    from .train.loop import fit

    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    importers.check_classes(manifest, "train", split="train")
    model, train, val = build_model_and_loaders(cfg, ws, manifest)
    out = ws.run(cfg.train.run_name)
    console.print(f"train: {cfg.mode} mode, {len(train.dataset)} training / "
                  f"{len(val.dataset) if val else 0} validation samples, {len(manifest.classes)} classes -> {out}")
    fit(model, train, val, cfg.train, out, manifest.classes, dump_config(cfg), resume=resume, console=console)
    if ddp.context().is_main:  # under torchrun only rank 0 writes
        atomic_write_text(out / "config.yaml", dump_config(cfg))
    return out


def run_config(cfg: Config, run: Path) -> Config:
    """``cfg`` with the model of the run as it was trained (mode, model, features from its
    config.yaml), so that a run is evaluated with the architecture it has."""
    path = run / "config.yaml"
    if not path.is_file():
        return cfg
    trained = from_dict(yaml.safe_load(path.read_text()))
    out = copy.deepcopy(cfg)
    out.mode, out.model, out.features = trained.mode, trained.model, trained.features
    return out


def _evaluate_inputs(cfg: Config, ws: Workspace, checkpoint=None, epoch: str | int = "best") -> dict:
    from .train.checkpoint import select_checkpoint

    run = ws.run(cfg.train.run_name)
    try:
        ckpt = select_checkpoint(checkpoint or run, epoch)
    except FileNotFoundError:
        ckpt = None
    weights = ckpt / "model.safetensors" if ckpt is not None and ckpt.is_dir() else ckpt
    return {**config_inputs(cfg, "media"), **file_inputs(ws, [ws.target_manifest(), run / "config.yaml"]),
            "checkpoint": file_digest(weights) if weights is not None else "missing"}


@stage(lambda cfg, ws, *a, **k: f"evaluate@{cfg.train.run_name}", _evaluate_inputs,
       lambda cfg, ws, *a, **k: [ws.run(cfg.train.run_name) / "metrics.json", ws.predictions(cfg.train.run_name)])
def evaluate_stage(cfg: Config, workspace, checkpoint: str | Path | None = None, epoch: str | int = "best") -> Path:
    """Evaluate the given checkpoint, else the run's ``epoch`` (best validation top-1 by default,
    ``last`` or N) on the validation split; writes metrics.json and the per-clip scores to
    predictions.npz (so that runs can be compared clip by clip)."""
    from .data.datasets import FeatureDataset
    from .evaluate.metrics import classification_metrics, metrics_table, save_predictions
    from .train.checkpoint import load_weights, select_checkpoint
    from .train.loop import predict, resolve_device

    ws = Workspace.of(workspace)
    out = ws.run(cfg.train.run_name)
    ckpt = select_checkpoint(checkpoint or out, epoch)
    cfg = run_config(cfg, out)
    manifest = read_manifest(ws.target_manifest())
    model, _, val = build_model_and_loaders(cfg, ws, manifest)
    if val is None:
        raise ManifestError("the target manifest has no validation rows")
    load_weights(model, ckpt)
    device = resolve_device(cfg.train.device)
    scores, labels = predict(model.to(device), val, device, cfg.train.amp, cfg.train.amp_dtype)
    metrics = classification_metrics(scores, labels, manifest.classes)
    ds = val.dataset
    ids = ds.ids if isinstance(ds, FeatureDataset) else [r["id"] for r in ds.rows]
    pred = save_predictions(ws.predictions(cfg.train.run_name), ids, labels, scores)
    metrics["checkpoint"] = str(ckpt)
    metrics["epoch"] = int(ckpt.name[len("epoch_"):]) if ckpt.name.startswith("epoch_") else None
    metrics.update(seed=cfg.train.seed, predictions=pred.name)
    path = atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    console.print(metrics_table(metrics, title=f"{cfg.train.run_name}: validation"))
    return path
