"""Joint training of the student on target + auxiliary sources (OmniSource §3.3).

Each iteration takes one target batch of |B_T| samples and, per web source, one batch of
|B_A| = batch_ratio · |B_T| samples drawn with the configured class resampling; the loss is the
weighted sum of their cross-entropies (Eq. 1), with one backward (``loop.train_step``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from ..config import Config, WebSourceConfig, dump_config
from ..console import console
from ..data.datasets import FeatureDataset, VideoClipDataset, worker_loader
from ..data.manifest import ManifestError, atomic_write_text, read_manifest
from ..data.resample import ResampledSampler, sample_weights
from ..stamps import config_inputs, file_inputs, training_stage
from ..workspace import Workspace
from .build import build_model_and_loaders, model_inputs
from .loop import Source, fit


def aux_features(cfg: Config, workspace, src: WebSourceConfig, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, D) features and labels of a source's training rows. Snippets of untrimmed videos
    gather their frames from the 1 fps cache of the parent video."""
    from ..features.cache import load_features, stack_features

    f, ws = cfg.features, Workspace.of(workspace)
    snippets = [r for r in rows if r.get("frame_indices")]
    others = [r for r in rows if not r.get("frame_indices")]
    feats, labels = [], []
    if others:
        x, kept = stack_features(ws.feature_cache(cfg), others, f.frames)
        feats += list(x)
        labels += [r["label"] for r in kept]
    if snippets:
        per_second = load_features(ws.feature_cache(cfg, per_second=True),
                                   sorted({r["parent_id"] for r in snippets}))
        from ..data.sampling import tsn_indices

        for r in snippets:
            parent = per_second.get(r["parent_id"])
            if parent is None:
                continue
            snip = parent[np.minimum(np.asarray(r["frame_indices"]), len(parent) - 1)]
            feats.append(snip[tsn_indices(len(snip), f.frames, train=False)])
            labels.append(r["label"])
    if not feats:
        return np.zeros((0, f.frames, 0), np.float32), np.zeros(0, np.int64)
    return np.stack(feats), np.asarray(labels, dtype=np.int64)


def aux_loader(dataset, labels: np.ndarray, num_classes: int, batch: int, steps: int, cfg: Config,
               num_workers: int = 0) -> DataLoader:
    o = cfg.omni
    weights = None if o.resample == "none" else sample_weights(labels, num_classes, o.resample, o.resample_clip,
                                                               o.resample_power)
    sampler = ResampledSampler(weights, steps * batch, seed=cfg.train.seed + 17, size=len(labels))
    return worker_loader(dataset, batch_size=batch, sampler=sampler, drop_last=True, num_workers=num_workers)


def _student_inputs(cfg: Config, ws: Workspace, sources: list[str] | None = None, **_) -> dict:
    used = [s for s in cfg.web if sources is None or s.name in sources]
    return {**model_inputs(cfg, ws), **config_inputs(cfg, "web", "omni.resample", "omni.resample_clip",
                                                      "omni.resample_power", "omni.cross_mixup"),
            **file_inputs(ws, [ws.web(s.name, "train") for s in used])}


@training_stage(lambda cfg, ws, *a, **k: f"student@{cfg.omni.student_run}", _student_inputs,
                lambda cfg, ws, *a, **k: [ws.run(cfg.omni.student_run)])
def student_stage(cfg: Config, workspace, resume: bool = False, sources: list[str] | None = None) -> Path:
    """Train ``omni.student_run`` on the target plus the transformed web sources."""
    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    classes = manifest.classes
    model, train, val = build_model_and_loaders(cfg, ws, manifest)
    steps = len(train)
    aux = []
    for src in cfg.web:
        if sources is not None and src.name not in sources:
            continue
        path = ws.web(src.name, "train")
        if not path.exists():
            raise ManifestError(f"{path} is missing: run `omnisource transform` first")
        rows = [r for r in read_manifest(path).rows if r["status"] == "ok" and r.get("label") is not None]
        batch = max(1, round(src.batch_ratio * cfg.train.batch_size))
        if cfg.mode == "features":
            from ..features.embed import embed_web

            # Rows the transform derived (pseudo-clips) are new to the cache; embed what is missing.
            embed_web(cfg, ws, "train", sources=[src.name])
            if src.kind == "untrimmed":
                embed_web(cfg, ws, "web", sources=[src.name])  # the 1 fps frames snippets are cut from
            x, y = aux_features(cfg, ws, src, rows)
            if len(y) < len(rows):
                console.print(f"[yellow]student: {len(rows) - len(y)} of {len(rows)} training samples of {src.name} "
                              "have no features (failed to decode); left out[/]")
            dataset = FeatureDataset(x, y, cfg.features.frames, train=True, seed=cfg.train.seed)
        else:
            dataset = VideoClipDataset(rows, cfg.media, True, cfg.train.seed)
            y = np.array([r["label"] for r in dataset.rows], dtype=np.int64)
        if len(y) == 0:
            console.print(f"[yellow]student: web source {src.name} has no training samples; skipped[/]")
            continue
        aux.append(Source(src.name, aux_loader(dataset, y, len(classes), batch, steps, cfg,
                                               cfg.train.num_workers if cfg.mode == "pixels" else 0), src.weight))
        console.print(f"student: {src.name}: {len(y)} samples, batch {batch} per iteration, "
                      f"resampling {cfg.omni.resample}")
    if not aux:
        raise ManifestError("student: no web source has a training sample, so the student would be the target-only "
                            "model under another name; see ws/selection/*.json (omni.filter, omni.threshold)")
    out = ws.run(cfg.omni.student_run)
    fit(model, train, val, cfg.train, out, classes, dump_config(cfg), aux=aux, resume=resume, console=console,
        cross_mixup=cfg.omni.cross_mixup)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    return out
