"""Stages of weakly-supervised pre-training, each ``stage(cfg, workspace) -> Path``:

* ``weak_labels_stage`` (``omnisource weak-labels``): the pre-training set. One sample per web
  image or trimmed video, one per selected clip of an untrimmed video (``weak.budget_*``,
  ``weak.prefer``, ``weak.clip_position``); labelled by ``weak.labels``: the tags themselves
  (``weak``, Ghadiyaram et al. 2019 §3) or, from the teacher's clip-level scores of
  ``omnisource score``, a baseline or Sub-Pseudo Labels (omnisource.select.spl); optionally cut
  to ``weak.budget_samples`` by tail-preserving subsampling. Writes ``manifests/weak.parquet``
  and its label map ``manifests/weak.labelmap.json``.
* ``pretrain_stage`` (``omnisource pretrain``): train on it, one tag drawn per video and epoch,
  classes resampled ∝ N_c^``weak.resample_power``.
* ``transfer_stage`` (``omnisource finetune`` / ``probe``): any checkpoint onto the target.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..config import Config, ConfigError, dump_config
from ..console import console
from ..data.manifest import Manifest, ManifestError, atomic_write_text, make_id, read_manifest, write_manifest
from ..distributed import ddp
from ..stamps import config_inputs, file_digest, file_inputs, stage, training_stage
from ..train.build import model_inputs
from ..workspace import Workspace
from . import labels as wl


def _duration(row: dict) -> float:
    if row.get("num_frames") and row.get("fps"):
        return float(row["num_frames"]) / float(row["fps"])
    from ..data import media

    info = media.probe(row["path"], row["kind"])
    return info.num_frames / max(info.fps, 1e-6)


def _overlap_teacher(rec: dict, start: float, end: float) -> int | None:
    """Teacher class of a clip: the scored window (``clip_windows``) it overlaps most."""
    windows, probs = rec.get("clip_windows") or [], rec.get("clip_probs") or []
    if not windows:
        return None
    overlap = [min(end, b) - max(start, a) for a, b in windows]
    return int(np.argmax(probs[int(np.argmax(overlap))]))


def web_samples(cfg: Config, workspace, classes: list[str]) -> list[dict]:
    """Samples of the configured web sources: image / trimmed rows as they are, untrimmed videos
    as clip rows (``start_s``/``end_s``, ``parent_id``) under the clip budget; each with
    ``query_class`` (from the source's query map, −1 = none) and ``teacher_pred`` (None when the
    source has no teacher scores)."""
    from ..teacher.score import read_scores
    from ..web import query_classes

    ws = Workspace.of(workspace)
    names = cfg.weak.sources or [s.name for s in cfg.web]
    known = {s.name: s for s in cfg.web}
    for n in names:
        if n not in known:
            raise ConfigError(f"weak.sources: {n!r} is not a configured web source ({', '.join(known) or 'none'})")
    if not names:
        raise ConfigError("weak: no web sources configured (add a `web:` entry)")
    w = cfg.weak
    out, untrimmed = [], []
    for name in names:
        src = known[name]
        rows = [r for r in read_manifest(ws.web(name)).rows
                if r["status"] == "ok" and r.get("weak_labels")]
        sdir = ws.scores(name)
        scores = read_scores(sdir) if sdir.exists() else {}
        qmap = query_classes(ws, src, classes, [r["weak_labels"][0] for r in rows], "weak-labels",
                             quiet=w.labels == "weak")  # tags as labels need no target class
        for r in rows:
            r = dict(r, query_class=qmap[r["weak_labels"][0]], split="web", label=None)
            rec = scores.get(r["id"])
            if src.kind == "untrimmed":
                untrimmed.append((r, rec))
            else:
                out.append(dict(r, teacher_pred=None if rec is None else int(rec["pred"])))
    if untrimmed:
        durations = [_duration(r) for r, _ in untrimmed]
        for i, start, end in wl.select_clips(durations, cfg.omni.clip_seconds, w.budget_videos, w.budget_minutes,
                                             w.prefer, w.clip_position, w.clips_per_video, w.seed):
            r, rec = untrimmed[i]
            out.append(dict(r, id=make_id(r["source"], r["path"], start, end), parent_id=r["id"], start_s=start,
                            end_s=end, teacher_pred=None if rec is None else _overlap_teacher(rec, start, end)))
    return out


def _weak_label_inputs(cfg: Config, ws: Workspace) -> dict:
    names = cfg.weak.sources or [s.name for s in cfg.web]
    return {**config_inputs(cfg, "weak", "web", "omni.clip_seconds"),
            **file_inputs(ws, [ws.target_manifest(), ws.queries] + [p for n in names for p in (ws.web(n), ws.scores(n))])}


@stage("weak-labels", _weak_label_inputs, lambda cfg, ws: [ws.weak_manifest, ws.weak_label_map])
def weak_labels_stage(cfg: Config, workspace) -> Path:
    """Write ``manifests/weak.parquet`` (one labelled row per pre-training sample) and its label map."""
    from ..select import spl

    ws = Workspace.of(workspace)
    classes = read_manifest(ws.target_manifest()).classes
    rows = web_samples(cfg, ws, classes)
    method = cfg.weak.labels
    if not rows:
        raise ManifestError("weak-labels: the web sources hold no usable sample (status ok, with a weak label)")
    if method == "weak":
        names = wl.tag_vocabulary([r["weak_labels"] for r in rows])
        ids = wl.encode_tags([r["weak_labels"] for r in rows], names)
        labels = np.array([t[0] for t in ids], dtype=np.int64)
        doc = {"method": "weak", "num_classes": len(names), "samples_cover_ratio": 1.0,
               "classes": [{"label": i, "name": n} for i, n in enumerate(names)]}
    else:
        usable = [r for r in rows if r["query_class"] >= 0 and r["teacher_pred"] is not None]
        if len(usable) < len(rows):
            console.print(f"[yellow]weak-labels: {len(rows) - len(usable)} samples left out (query names no target "
                          "class, or no teacher score: run `omnisource score`)[/]")
        rows = usable
        if not rows:
            raise ManifestError("weak-labels: no web sample has both a target-class query and a teacher score")
        weak = np.array([r["query_class"] for r in rows], dtype=np.int64)
        teacher = np.array([r["teacher_pred"] for r in rows], dtype=np.int64)
        res = spl.make_labels(method, weak, teacher, len(classes), cfg.weak.k)
        labels = res.labels
        noise = spl.noise_ratio(spl.confusion(weak, teacher, len(classes)))
        path = spl.save_label_map(ws.weak_label_map, res, method, classes, {"noise_ratio": noise})
        doc = json.loads(path.read_text())
    keep = np.flatnonzero(labels >= 0)
    if cfg.weak.budget_samples:
        keep = keep[wl.tail_preserving_subsample(labels[keep], cfg.weak.budget_samples, cfg.weak.seed)]
    out_rows = [dict(rows[i], label=int(labels[i]), source="weak") for i in keep]
    for r in out_rows:
        r.pop("query_class", None)
    doc.update(samples=len(out_rows), of=len(rows))
    atomic_write_text(ws.weak_label_map, json.dumps(doc, indent=2))
    out = write_manifest(Manifest(out_rows, [c["name"] for c in doc["classes"]]), ws.weak_manifest)
    console.print(f"weak-labels ({method}): {len(out_rows)} of {len(rows)} samples, {doc['num_classes']} classes"
                  + (f", noise ratio {doc['noise_ratio']:.3f}" if "noise_ratio" in doc else "") + f" -> {out}")
    return out


class TagDrawDataset(Dataset):
    """Wraps a dataset of (x, y, i): y is one of the sample's tags, drawn anew each epoch (Ghadiyaram et al. §3)."""

    def __init__(self, base: Dataset, tag_ids: list[list[int]], seed: int):
        self.base, self.tag_ids, self.seed = base, tag_ids, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.drawn = wl.draw_tags(self.tag_ids, self.seed, epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, _, j = self.base[i]
        return x, int(self.drawn[j]), j


def _pretrain_inputs(cfg: Config, ws: Workspace, **_) -> dict:
    keys = ["mode", "model", "train", "weak.resample_power", "weak.seed"] + (
        ["features.backbone", "features.pretrained", "features.size", "features.frames", "features.head"]
        if cfg.mode == "features" else ["media"])
    return {**config_inputs(cfg, *keys), **file_inputs(ws, [ws.weak_manifest, ws.weak_label_map])}


@training_stage(lambda cfg, ws, **k: f"pretrain@{cfg.weak.pretrain_run}", _pretrain_inputs,
                lambda cfg, ws, **k: [ws.run(cfg.weak.pretrain_run)])
def pretrain_stage(cfg: Config, workspace, resume: bool = False) -> Path:
    """Train ``runs/<weak.pretrain_run>`` on ``manifests/weak.parquet`` (feature mode: the
    configured head on cached features, whose body — e.g. ``features.head=temporal`` — is what
    fine-tuning keeps; pixel mode: ``model.name``)."""
    from ..data.datasets import FeatureDataset, VideoClipDataset, worker_loader
    from ..data.resample import ResampledSampler
    from ..features.cache import stack_features
    from ..models import create_head, create_model
    from ..features.embed import embed_manifest
    from ..train.loop import fit

    ws = Workspace.of(workspace)
    path = ws.weak_manifest
    manifest = read_manifest(path)
    rows = [r for r in manifest.rows if r["status"] == "ok" and r.get("label") is not None]
    if not rows:
        raise ManifestError(f"{path}: no labelled rows; run `omnisource weak-labels` first")
    names = manifest.classes
    doc = json.loads(ws.weak_label_map.read_text())
    multi = doc.get("method") == "weak"
    if cfg.mode == "features":
        if cfg.features.head != "temporal":
            console.print(f"[yellow]pretrain: features.head={cfg.features.head} has no trainable body; only the "
                          "classifier is learnt (use features.head=temporal to pre-train a body)[/]")
        if ddp.context().is_main:  # one process fills the cache, the others wait for it
            embed_manifest(cfg, ws, path)
        ddp.barrier()
        x, rows = stack_features(ws.feature_cache(cfg), rows, cfg.features.frames)
        if not rows:
            raise ManifestError(f"{path}: no row has cached features (all failed to decode?)")
        y = np.array([r["label"] for r in rows], dtype=np.int64)
        base = FeatureDataset(x, y, cfg.features.frames, True, cfg.train.seed)
        model = create_head(cfg.features.head, x.shape[-1], len(names), cfg.features.frames, cfg.model.dropout)
    else:
        base = VideoClipDataset(rows, cfg.media, True, cfg.train.seed)
        rows = base.rows
        model = create_model(cfg.model.name, len(names), pretrained=cfg.model.pretrained or None,
                             dropout=cfg.model.dropout, width=cfg.model.width)
    tag_ids = wl.encode_tags([[t for t in r["weak_labels"] if t in names] or [names[r["label"]]] for r in rows],
                             names) if multi else [[int(r["label"])] for r in rows]
    dataset = TagDrawDataset(base, tag_ids, cfg.weak.seed)
    weights = wl.tag_sample_weights(tag_ids, len(names), cfg.weak.resample_power)
    ctx = ddp.context()
    batch = min(cfg.train.batch_size, max(ctx.world_size, len(dataset) // ctx.world_size * ctx.world_size))
    local = ddp.local_batch(batch, ctx)  # this rank's share of each global batch
    sampler = ResampledSampler(weights, max(1, len(dataset) // batch) * local, seed=cfg.train.seed + 23,
                               rank=ctx.rank, world_size=ctx.world_size)
    loader = worker_loader(dataset, batch_size=local, sampler=sampler, drop_last=True,
                           num_workers=cfg.train.num_workers if cfg.mode == "pixels" else 0)
    out = ws.run(cfg.weak.pretrain_run)
    console.print(f"pretrain: {len(dataset)} samples, {len(names)} classes ({doc.get('method')}), "
                  f"resampling ∝ N^{cfg.weak.resample_power} -> {out}")
    fit(model, loader, None, cfg.train, out, names, dump_config(cfg), resume=resume, console=console)
    if ctx.is_main:
        atomic_write_text(out / "config.yaml", dump_config(cfg))
    return out


def resolve_checkpoint(path: str | Path, epoch: str | int = "best") -> tuple[Path, Config | None]:
    """(weights file, config it was trained with if known) for a run folder (its ``epoch``), an
    epoch folder or a file."""
    from ..train.card import config_near
    from ..train.checkpoint import select_checkpoint

    ckpt = select_checkpoint(path, epoch)
    file = ckpt / "model.safetensors" if ckpt.is_dir() else ckpt
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors (give a run folder, an epoch folder or a weights file)")
    return file, config_near(file)


def _transfer_run(cfg: Config, how: str) -> str:
    return cfg.weak.finetune_run if how == "finetune" else cfg.weak.probe_run


def _transfer_inputs(cfg: Config, ws: Workspace, how: str, checkpoint=None, **_) -> dict:
    file, _trained = resolve_checkpoint(checkpoint or ws.run(cfg.weak.pretrain_run))
    return {**model_inputs(cfg, ws), **config_inputs(cfg, "weak.body_lr_scale"), "checkpoint": file_digest(file)}


@training_stage(lambda cfg, ws, how, *a, **k: f"{how}@{_transfer_run(cfg, how)}", _transfer_inputs,
                lambda cfg, ws, how, *a, **k: [ws.run(_transfer_run(cfg, how))])
def transfer_stage(cfg: Config, workspace, how: str, checkpoint: str | Path | None = None, resume: bool = False) -> Path:
    """Fine-tune (new classifier, body at ``weak.body_lr_scale`` × lr) or linear-probe (frozen body and
    BatchNorm) a checkpoint on the target; default checkpoint: ``runs/<weak.pretrain_run>``.
    Writes ``runs/<weak.finetune_run | weak.probe_run>/metrics.json``."""
    from ..evaluate.metrics import metrics_table
    from ..models import load_pretrained
    from ..train.build import build_model_and_loaders
    from ..train.probe import transfer

    ws = Workspace.of(workspace)
    file, trained = resolve_checkpoint(checkpoint or ws.run(cfg.weak.pretrain_run))
    run_cfg = copy.deepcopy(cfg)
    if trained is not None:  # rebuild the architecture the checkpoint was trained with
        run_cfg.features.head, run_cfg.model.name = trained.features.head, trained.model.name
        run_cfg.model.width = trained.model.width
    if cfg.mode == "pixels":
        run_cfg.model.pretrained = str(file)
    manifest = read_manifest(ws.target_manifest())
    model, train, val = build_model_and_loaders(run_cfg, ws, manifest)
    if cfg.mode == "features":
        load_pretrained(model, file)
    out = ws.run(_transfer_run(cfg, how))
    console.print(f"{how}: {file} -> {out}")
    metrics = transfer(model, how, train, val, cfg.train, out, manifest.classes, cfg.weak.body_lr_scale,
                       console=console, config_text=dump_config(run_cfg), resume=resume)
    if not ddp.context().is_main:
        return out
    atomic_write_text(out / "config.yaml", dump_config(run_cfg))
    if metrics:
        metrics["checkpoint"] = str(file)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
        console.print(metrics_table(metrics, title=f"{how} of {file.parent.name}: validation"))
    return out
