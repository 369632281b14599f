"""Joint training of the student on target + auxiliary sources (OmniSource §3.3).

Each iteration takes one target batch of |B_T| samples and, per web source, one batch of
|B_A| = batch_ratio · |B_T| samples drawn with the configured class resampling; the loss is the
weighted sum of their cross-entropies (Eq. 1), with one backward (``loop.train_step``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import Config, WebSourceConfig, dump_config
from ..console import console
from ..data.datasets import FeatureDataset, VideoClipDataset, worker_loader
from ..data.manifest import ManifestError, atomic_write_text, read_manifest
from ..data.resample import ResampledSampler, class_weights, sample_weights
from ..distributed import ddp
from ..stamps import config_inputs, file_inputs, training_stage
from ..workspace import Workspace
from .build import build_model_and_loaders, model_inputs
from .loop import Source, fit, passes_per_epoch


def with_features(rows: list[dict], clip_feats: dict, second_feats: dict) -> list[dict]:
    """The rows ``aux_arrays`` finds features for (snippets by their parent's 1 fps features)."""
    return [r for r in rows if (r["parent_id"] in second_feats if r.get("frame_indices") else r["id"] in clip_feats)]


def aux_arrays(rows: list[dict], clip_feats: dict, second_feats: dict, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, D) features and labels of a source's training rows, from id -> (T_i, D) arrays:
    ``clip_feats`` by row id (images: T_i = 1, replicated; videos: T segment frames), and for
    snippets of untrimmed videos ``second_feats`` (1 fps) by the parent's id, of which the
    snippet's ``frame_indices`` are taken. Rows without features (``with_features``) are left out."""
    from ..data.sampling import tsn_indices

    feats, labels = [], []
    for r in with_features(rows, clip_feats, second_feats):
        if r.get("frame_indices"):
            parent = second_feats[r["parent_id"]]
            a = parent[np.minimum(np.asarray(r["frame_indices"]), len(parent) - 1)]
        else:
            a = clip_feats[r["id"]]
        feats.append(a if len(a) == frames else a[tsn_indices(len(a), frames, train=False)])
        labels.append(r["label"])
    if not feats:
        return np.zeros((0, frames, 0), np.float32), np.zeros(0, np.int64)
    return np.stack(feats), np.asarray(labels, dtype=np.int64)


def teacher_probs(row: dict, scores: dict[str, dict]) -> np.ndarray:
    """(C,) the teacher's class probabilities for one training row, from the score records
    (``teacher.score``) by id: a snippet's, the mean over its 1 fps frames (``frame_indices``)
    of its parent video; a clip window's (``start_s``), its parent's clip of that window; a
    derived pseudo-clip's, its parent image's; any other row's, its own."""
    rec = scores.get(row["id"]) or scores.get(row.get("parent_id") or "")
    if rec is None:
        raise ManifestError(f"{row.get('path', row['id'])}: no teacher score for this training sample; "
                            "re-run `omnisource score` (omni.soft_targets needs them)")
    if row.get("frame_indices"):
        frames = np.asarray(rec["frame_probs"], np.float64)
        return frames[np.minimum(np.asarray(row["frame_indices"]), len(frames) - 1)].mean(0)
    if row.get("start_s") is not None and rec.get("clip_windows"):
        windows = [tuple(map(float, w)) for w in rec["clip_windows"]]
        window = (float(row["start_s"]), float(row["end_s"]))
        if window in windows:
            return np.asarray(rec["clip_probs"][windows.index(window)], np.float64)
    return np.asarray(rec["probs"], np.float64)


def distill_targets(probs: np.ndarray, labels: np.ndarray, weight: float, temperature: float = 1.0) -> np.ndarray:
    """(N, C) training targets of kept web samples: (1 − weight) · one-hot(label) + weight · q,
    q the teacher's probabilities ``probs`` (N, C) sharpened to p^(1/T) and renormalised
    (Hinton et al. 2015, on probabilities: the teacher's logits are not kept). weight 0 is the
    hard pseudo-label of OmniSource §3.2."""
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, None)
    q = np.exp(np.log(probs) / temperature)
    q /= q.sum(1, keepdims=True)
    onehot = np.eye(probs.shape[1])[np.asarray(labels, np.int64)]
    return ((1 - weight) * onehot + weight * q).astype(np.float32)


def soft_labels(cfg: Config, rows: list[dict], scores: dict[str, dict], labels: np.ndarray) -> np.ndarray | None:
    """``distill_targets`` of a source's training rows (those ``aux_arrays`` kept, in order)
    under ``omni.soft_targets`` / ``omni.soft_temperature``; None when soft targets are off."""
    o = cfg.omni
    if o.soft_targets <= 0 or not len(rows):
        return None
    return distill_targets(np.stack([teacher_probs(r, scores) for r in rows]), labels, o.soft_targets,
                           o.soft_temperature)


def aux_features(cfg: Config, workspace, src: WebSourceConfig, rows: list[dict]) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray | None]:
    """``aux_arrays`` of a source's training rows, read from the workspace's feature caches, and
    their ``soft_labels`` from the source's teacher scores (None when soft targets are off)."""
    from ..features.cache import load_features
    from ..teacher.score import read_scores

    ws = Workspace.of(workspace)
    snippets = [r["parent_id"] for r in rows if r.get("frame_indices")]
    clips = load_features(ws.feature_cache(cfg), [r["id"] for r in rows if not r.get("frame_indices")])
    seconds = load_features(ws.feature_cache(cfg, per_second=True), sorted(set(snippets))) if snippets else {}
    rows = with_features(rows, clips, seconds)
    x, y = aux_arrays(rows, clips, seconds, cfg.features.frames)
    scores = read_scores(ws.scores(src.name)) if cfg.omni.soft_targets > 0 else {}
    return x, y, soft_labels(cfg, rows, scores, y)


def aux_loader(dataset, labels: np.ndarray, num_classes: int, batch: int, steps: int, cfg: Config,
               num_workers: int = 0, name: str = "web") -> DataLoader:
    """``steps`` batches of ``batch`` resampled draws per epoch; under torchrun this rank's share of
    each (``batch`` is the global auxiliary batch, like train.batch_size)."""
    o = cfg.omni
    weights = None if o.resample == "none" else sample_weights(labels, num_classes, o.resample, o.resample_clip,
                                                               o.resample_power)
    ctx = ddp.context()
    local = ddp.local_batch(batch, ctx, f"the {name} batch (batch_ratio x train.batch_size)")
    sampler = ResampledSampler(weights, steps * local, seed=cfg.train.seed + 17, rank=ctx.rank,
                               world_size=ctx.world_size, size=len(labels))
    return worker_loader(dataset, batch_size=local, sampler=sampler, drop_last=True, num_workers=num_workers)


def prior_offset(labels: np.ndarray, num_classes: int, target_labels: np.ndarray, cfg: Config) -> np.ndarray:
    """log π_aux − log π_target (C,): π_aux the class distribution a web source's sampler draws
    (its kept labels after ``omni.resample``), smoothed by one sample per class; π_target that of
    the labeled target set, smoothed likewise.

    Added to the logits inside the source's loss (logit adjustment, Menon et al., ICLR 2021), it
    lets a source that covers few classes, or covers them unevenly, teach what its classes look
    like without moving the student's class prior towards them: web images exist for four of
    six classes here, and a raw crawl may keep images of one class only.
    """
    o = cfg.omni
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    mass = class_weights(counts, o.resample, o.resample_clip, o.resample_power)
    aux = (mass * counts.sum() + 1) / (counts.sum() + num_classes)
    tc = np.bincount(np.asarray(target_labels, np.int64), minlength=num_classes).astype(np.float64)
    target = (tc + 1) / (tc.sum() + num_classes)
    return np.log(aux) - np.log(target)


def aux_source(cfg: Config, src: WebSourceConfig, dataset, labels: np.ndarray, num_classes: int,
               steps: int, num_workers: int = 0, target_labels: np.ndarray | None = None) -> Source:
    """A web source's batches for joint training: |B_A| = batch_ratio · |B_T| per iteration,
    ``steps`` iterations per epoch (``epoch_steps``), its loss weighted by ``src.loss_weight()``, and
    with ``omni.prior_correction`` its logits offset by ``prior_offset`` against ``target_labels``."""
    batch = max(1, round(src.batch_ratio * cfg.train.batch_size))
    offset = None
    if cfg.omni.prior_correction and target_labels is not None:
        offset = torch.as_tensor(prior_offset(labels, num_classes, target_labels, cfg), dtype=torch.float32)
    return Source(src.name, aux_loader(dataset, labels, num_classes, batch, steps, cfg, num_workers, src.name),
                  src.loss_weight(), offset)


def align_offset(x: np.ndarray, y: np.ndarray, target_x: np.ndarray, target_y: np.ndarray,
                 num_classes: int) -> np.ndarray:
    """(D,) offset of a web source's frame features from the target's: the source's mean minus
    the target's class means mixed in the source's class proportions (classes the target lacks
    left out). Web photos and crawled frames sit apart from the target's video frames in a
    frozen backbone's space; a linear head would learn that offset as evidence for the classes
    the source covers. Subtracting it keeps the class signal, since both means follow one mix."""
    present = np.array([np.any(target_y == c) for c in range(num_classes)])
    keep = present[y]
    if not keep.any():
        return np.zeros(x.shape[-1], np.float32)
    x, y = x[keep].astype(np.float64), y[keep]
    means = np.stack([target_x[target_y == c].astype(np.float64).mean((0, 1)) if present[c]
                      else np.zeros(x.shape[-1]) for c in range(num_classes)])
    mix = np.bincount(y, minlength=num_classes) / len(y)
    return (x.mean((0, 1)) - mix @ means).astype(np.float32)


def feature_source(cfg: Config, src: WebSourceConfig, x: np.ndarray, y: np.ndarray, target_x: np.ndarray,
                   target_y: np.ndarray, num_classes: int, steps: int, soft: np.ndarray | None = None) -> Source:
    """A feature-mode web source: its (N, T, D) features, shifted by ``align_offset`` unless
    ``omni.align`` is none, as an ``aux_source`` with the target's prior for the correction.
    ``soft`` (N, C): the samples' training targets (``soft_labels``) in place of one-hot ``y``;
    the class resampling, prior and alignment still go by ``y``."""
    if cfg.omni.align != "none" and len(y):
        x = x - align_offset(x, y, target_x, target_y, num_classes)
    dataset = FeatureDataset(x, y if soft is None else soft, cfg.features.frames, train=True, seed=cfg.train.seed)
    return aux_source(cfg, src, dataset, y, num_classes, steps, target_labels=target_y)


def epoch_steps(cfg: Config, train_loader) -> int:
    """Iterations per epoch of ``fit`` (one or more passes over the target set)."""
    return passes_per_epoch(cfg.train, len(train_loader)) * len(train_loader)


def _student_inputs(cfg: Config, ws: Workspace, sources: list[str] | None = None, **_) -> dict:
    used = [s for s in cfg.web if sources is None or s.name in sources]
    # The weights as used: a source's unset weight follows WEB_WEIGHT, which the "web" section omits.
    weights = {"config web loss weights": ",".join(f"{s.name}={s.loss_weight()!r}" for s in used)}
    return {**model_inputs(cfg, ws), **weights, **config_inputs(cfg, "web", "omni.resample", "omni.resample_clip",
                                                      "omni.resample_power", "omni.cross_mixup",
                                                      "omni.prior_correction", "omni.align",
                                                      "omni.soft_targets", "omni.soft_temperature"),
            **file_inputs(ws, [ws.web(s.name, "train") for s in used]
                          + ([ws.scores(s.name) for s in used] if cfg.omni.soft_targets > 0 else []))}


@training_stage(lambda cfg, ws, *a, **k: f"student@{cfg.omni.student_run}", _student_inputs,
                lambda cfg, ws, *a, **k: [ws.run(cfg.omni.student_run)])
def student_stage(cfg: Config, workspace, resume: bool = False, sources: list[str] | None = None) -> Path:
    """Train ``omni.student_run`` on the target plus the transformed web sources."""
    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    classes = manifest.classes
    model, train, val = build_model_and_loaders(cfg, ws, manifest)
    steps = epoch_steps(cfg, train)
    target_labels = np.array([r["label"] for r in manifest.rows if r.get("split") == "train" and r["status"] == "ok"])
    aux = []
    for src in cfg.web:
        if sources is not None and src.name not in sources:
            continue
        path = ws.web(src.name, "train")
        if not path.exists():
            raise ManifestError(f"{path} is missing: run `omnisource transform` first")
        rows = [r for r in read_manifest(path).rows if r["status"] == "ok" and r.get("label") is not None]
        if cfg.mode == "features":
            from ..features.embed import embed_web

            # Rows the transform derived (pseudo-clips) are new to the cache; embed what is missing
            # (under torchrun one process fills the cache, the others wait for it).
            if ddp.context().is_main:
                embed_web(cfg, ws, "train", sources=[src.name])
                if src.kind == "untrimmed":
                    embed_web(cfg, ws, "web", sources=[src.name])  # the 1 fps frames snippets are cut from
            ddp.barrier()
            x, y, soft = aux_features(cfg, ws, src, rows)
            if len(y) < len(rows):
                console.print(f"[yellow]student: {len(rows) - len(y)} of {len(rows)} training samples of {src.name} "
                              "have no features (failed to decode); left out[/]")
        else:
            dataset = VideoClipDataset(rows, cfg.media, True, cfg.train.seed)
            y = np.array([r["label"] for r in dataset.rows], dtype=np.int64)
        if len(y) == 0:
            console.print(f"[yellow]student: web source {src.name} has no training samples; skipped[/]")
            continue
        if cfg.mode == "features":
            aux.append(feature_source(cfg, src, x, y, train.dataset.features, train.dataset.labels, len(classes),
                                      steps, soft))
        else:
            aux.append(aux_source(cfg, src, dataset, y, len(classes), steps, cfg.train.num_workers, target_labels))
        console.print(f"student: {src.name}: {len(y)} samples, batch {ddp.describe_batch(aux[-1].loader.batch_size)} "
                      f"per iteration, resampling {cfg.omni.resample}")
    if not aux:
        raise ManifestError("student: no web source has a training sample, so the student would be the target-only "
                            "model under another name; see ws/selection/*.json (omni.filter, omni.threshold)")
    out = ws.run(cfg.omni.student_run)
    fit(model, train, val, cfg.train, out, classes, dump_config(cfg), aux=aux, resume=resume, console=console,
        cross_mixup=cfg.omni.cross_mixup)
    if ddp.context().is_main:
        atomic_write_text(out / "config.yaml", dump_config(cfg))
    return out
