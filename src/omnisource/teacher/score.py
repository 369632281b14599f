"""Teacher scoring of web data (OmniSource §3.2, step 2).

A teacher is a finished run of the workspace (default: the target-only run). Feature-mode
teachers are heads on cached frame features; pixel-mode teachers are whole networks. Several
teachers form an ensemble by averaging probabilities. Scores go to a table keyed by ``id``:
top-1 and top-5 labels and probabilities, the full probability vector, and for untrimmed
videos the per-second frame probabilities and the per-window (10 s clip) probabilities.
Scoring writes shards and skips finished ones, so a killed run resumes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from ..config import Config, from_dict
from ..data.manifest import ManifestError, atomic_write_bytes
from ..digest import file_hash
from ..train.checkpoint import load_weights, select_checkpoint
from ..transform.untrimmed import clip_windows
from ..workspace import Workspace


@dataclass
class Teacher:
    model: torch.nn.Module
    cfg: Config
    classes: list[str]
    run: Path
    checkpoint: Path | None = None
    digest: str = ""  # of the weights file: scores of other weights are never reused


def describe(t: Teacher) -> dict:
    """What the report says about a teacher."""
    pixel = t.cfg.mode == "pixels"
    return {"run": t.run.name, "mode": t.cfg.mode, "model": t.cfg.model.name if pixel else f"head:{t.cfg.features.head}",
            "kind": ("2d" if hasattr(t.model, "forward_frame_logits") else "3d") if pixel else "features",
            "sampler": f"{t.cfg.media.sampler} {t.cfg.media.num_segments}x{t.cfg.media.frame_interval}" if pixel
            else f"{t.cfg.features.frames} frames",
            "checkpoint": str(t.checkpoint) if t.checkpoint else "", "digest": t.digest}


def load_teacher(workspace, run_name: str, classes: list[str], feature_dim: int | None = None) -> Teacher:
    """The best checkpoint (validation top-1, as `evaluate` scores it) of ``runs/<run_name>``,
    rebuilt from the config it was trained with."""
    from ..models import create_head, create_model

    run = Workspace.of(workspace).run(run_name)
    if not run.is_dir() or not (run / "config.yaml").exists():
        raise FileNotFoundError(f"teacher run {run} has no finished checkpoint; train it first "
                                "(`omnisource run` trains the teachers listed in omni.teachers)")
    ckpt = select_checkpoint(run, "best")
    tcfg = from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    if tcfg.mode == "features":
        if feature_dim is None:
            raise ValueError("a feature-mode teacher needs the feature dimension")
        model = create_head(tcfg.features.head, feature_dim, len(classes), tcfg.features.frames, tcfg.model.dropout)
    else:
        model = create_model(tcfg.model.name, len(classes), pretrained=None, width=tcfg.model.width)
    load_weights(model, ckpt)
    return Teacher(model.eval(), tcfg, classes, run, ckpt, file_hash(ckpt / "model.safetensors", "sha1")[:16])


@torch.no_grad()
def head_probs(head: torch.nn.Module, clips: list[np.ndarray], frames: int, batch: int = 512) -> np.ndarray:
    """Probabilities (N, C) of feature clips (T_i, D), each resampled to ``frames`` TSN-style."""
    from ..data.sampling import tsn_indices

    out = []
    for i in range(0, len(clips), batch):
        part = [c if len(c) == frames else c[tsn_indices(len(c), frames, train=False)] for c in clips[i:i + batch]]
        x = torch.from_numpy(np.stack(part).astype(np.float32))
        out.append(head(x).softmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def untrimmed_scores(head: torch.nn.Module, per_second: np.ndarray, frames: int, clip_seconds: float):
    """Per-frame probabilities (F, C) (each 1 fps frame as a one-frame clip, the 2D teacher) and
    per-window probabilities (K, C) over consecutive ``clip_seconds`` windows."""
    frame_probs = head_probs(head, [f[None] for f in per_second], 1)
    windows = clip_windows(float(len(per_second)), clip_seconds)
    clips = [per_second[int(s):max(int(s) + 1, int(np.ceil(e)))] for s, e in windows]
    return frame_probs, windows, head_probs(head, clips, frames)


def score_clips(heads: list[tuple[torch.nn.Module, int]], clips: list[np.ndarray]) -> list[dict]:
    """Score records of feature clips (T_i, D) by the mean probabilities of ``heads``, each a
    (feature-mode head, frames it was trained on): several heads form an ensemble."""
    if not clips:
        return []
    probs = np.mean([head_probs(h, clips, frames) for h, frames in heads], axis=0)
    return [summarise(p) for p in probs]


def score_untrimmed(heads: list[tuple[torch.nn.Module, int]], per_second: np.ndarray, clip_seconds: float) -> dict:
    """Score record of an untrimmed video from its 1 fps features: per-frame and per-window
    probabilities (ensemble means) and, as its class evidence, its most confident frame."""
    parts = [untrimmed_scores(h, per_second, frames, clip_seconds) for h, frames in heads]
    frame_probs = np.mean([p[0] for p in parts], axis=0)
    clip_probs = np.mean([p[2] for p in parts], axis=0)
    return {**summarise(frame_probs.max(axis=0)), "frame_probs": frame_probs.tolist(),
            "clip_windows": [list(w) for w in parts[0][1]], "clip_probs": clip_probs.tolist()}


def summarise(probs: np.ndarray, k: int = 5) -> dict:
    top = np.argsort(-probs)[:k]
    return {"pred": int(top[0]), "prob": float(probs[top[0]]), "top5_labels": top.tolist(),
            "top5_probs": probs[top].astype(float).tolist(), "probs": probs.astype(float).tolist()}


SCORE_SCHEMA = pa.schema([
    ("id", pa.string()), ("pred", pa.int32()), ("prob", pa.float64()),
    ("top5_labels", pa.list_(pa.int32())), ("top5_probs", pa.list_(pa.float64())),
    ("probs", pa.list_(pa.float64())),
    ("frame_probs", pa.list_(pa.list_(pa.float64()))),
    ("clip_windows", pa.list_(pa.list_(pa.float64()))),
    ("clip_probs", pa.list_(pa.list_(pa.float64()))),
])


def write_scores(records: list[dict], path: Path) -> Path:
    cols = {name: [r.get(name) for r in records] for name in SCORE_SCHEMA.names}
    table = pa.Table.from_pydict(cols, schema=SCORE_SCHEMA)
    return atomic_write_bytes(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_scores(path: Path) -> dict[str, dict]:
    """id -> score record, from one table or a folder of shards."""
    path = Path(path)
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise ManifestError(f"{path}: no teacher scores; run `omnisource score` first")
    out = {}
    for f in files:
        for rec in pq.read_table(f).to_pylist():
            out[rec["id"]] = rec
    return out


def shard_plan(rows: list[dict], out_dir: Path, shard_size: int = 2048, key: str = "") -> list[tuple[Path, list[dict]]]:
    """(shard file, its rows): consecutive runs of ``shard_size`` rows, each file named by its
    position and a digest of its ids and ``key`` (the identity of the teachers and of how they
    score), so a changed manifest or another teacher re-scores."""
    import hashlib

    plan = []
    for start in range(0, len(rows), shard_size):
        part = rows[start:start + shard_size]
        digest = hashlib.sha1("\n".join([key, *(r["id"] for r in part)]).encode()).hexdigest()[:12]
        plan.append((Path(out_dir) / f"part-{start // shard_size:05d}-{digest}.parquet", part))
    return plan


def score_in_shards(rows: list[dict], score_fn, out_dir: Path, shard_size: int = 2048, progress: bool = False,
                    key: str = "", run_shards=None) -> Path:
    """Apply ``score_fn(rows) -> list[record]`` shard by shard (:func:`shard_plan`); existing
    shards are kept, so a killed run resumes, and shards of another plan are deleted.
    ``run_shards(todo)`` (the ray engine) may compute the missing shards instead: given
    [(path, rows)], it yields (path, records) per shard."""
    from ..progress import Progress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = shard_plan(rows, out_dir, shard_size, key)
    todo = [(path, part) for path, part in plan if not path.exists()]
    run_shards = run_shards or (lambda shards: ((path, score_fn(part)) for path, part in shards))
    sizes = {path: len(part) for path, part in todo}
    with Progress(f"score {out_dir.name}", sum(sizes.values()), "rows", progress) as bar:
        for path, records in run_shards(todo):
            write_scores(records, path)
            bar.advance(sizes[path])
    wanted = {path.name for path, _ in plan}
    for stale in out_dir.glob("part-*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    return out_dir
