"""``omnisource score``: run the teacher(s) over every web source (OmniSource §3.2).

Each source has its own teachers (``web[i].teachers``, else ``omni.teacher_runs``; several =
an ensemble averaging probabilities): a 2D teacher for images, a 3D one for videos.
``scores/<source>/teachers.json`` records which teachers scored the source.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import Config, ConfigError, source_teachers, to_dict
from ..console import console
from ..data.manifest import atomic_write_text, read_manifest
from ..stamps import config_inputs, file_inputs, stage, teacher_inputs, value_digest
from ..workspace import Workspace
from .score import Teacher, describe, head_probs, load_teacher, score_in_shards, summarise, untrimmed_scores


def _feature_dim(cache: Path) -> int:
    from ..features.cache import cached_ids, load_features

    index = cached_ids(cache)
    if not index:
        raise FileNotFoundError(f"{cache}: the feature cache is empty; run `omnisource features` first")
    rid = next(iter(index))
    return int(load_features(cache, [rid])[rid].shape[-1])


def _feature_scorer(teachers: list[Teacher], cfg: Config, workspace, kind: str):
    from ..features.cache import load_features

    cache = Workspace.of(workspace).feature_cache(cfg, per_second=kind == "untrimmed")

    def score(rows: list[dict]) -> list[dict]:
        feats = load_features(cache, [r["id"] for r in rows])
        rows = [r for r in rows if r["id"] in feats]
        if kind != "untrimmed":
            probs = np.mean([head_probs(t.model, [feats[r["id"]].astype(np.float32) for r in rows],
                                        t.cfg.features.frames) for t in teachers], axis=0)
            return [{"id": r["id"], **summarise(p)} for r, p in zip(rows, probs)]
        out = []
        for r in rows:
            per_second = feats[r["id"]].astype(np.float32)
            parts = [untrimmed_scores(t.model, per_second, t.cfg.features.frames, cfg.omni.clip_seconds)
                     for t in teachers]
            frame_probs = np.mean([p[0] for p in parts], axis=0)
            clip_probs = np.mean([p[2] for p in parts], axis=0)
            # A video's class evidence is its most confident frame (a long video mixes content).
            out.append({"id": r["id"], **summarise(frame_probs.max(axis=0)),
                        "frame_probs": frame_probs.tolist(), "clip_windows": [list(w) for w in parts[0][1]],
                        "clip_probs": clip_probs.tolist()})
        return out

    return score


def scores_key(teachers: list[Teacher], cfg: Config) -> str:
    """What a score depends on besides the rows: the teachers' weights and sampling, the windows."""
    o = cfg.omni
    pixel = cfg.mode == "pixels"  # pixel-mode 2D teachers score 1 fps frames for snippets only
    parts = [cfg.mode, o.clip_seconds, o.score_views if pixel else 1, o.untrimmed if pixel else ""]
    parts += [[t.digest, to_dict(t.cfg.media), t.cfg.features.frames] for t in teachers]
    return json.dumps(parts, sort_keys=True, default=str)


def teacher_identity(cfg: Config, ws: Workspace) -> dict:
    """What scores depend on besides the rows: the teachers' weights and configs, and how they score."""
    keys = ["mode", "omni.teacher_runs", "omni.clip_seconds"] + (
        ["features.backbone", "features.pretrained", "features.size", "features.frames"] if cfg.mode == "features"
        else ["media", "train.device", "train.amp", "train.amp_dtype", "omni.score_views", "omni.untrimmed"])
    runs = dict.fromkeys(n for src in cfg.web for n in source_teachers(cfg, src))
    return {**config_inputs(cfg, *keys), **teacher_inputs(ws, runs),
            "web kinds": value_digest([(s.name, s.kind, source_teachers(cfg, s)) for s in cfg.web])}


@stage("score", lambda cfg, ws: {**teacher_identity(cfg, ws),
                                 **file_inputs(ws, [ws.target_manifest()] + [ws.web(s.name) for s in cfg.web])},
       lambda cfg, ws: [ws.scores(s.name) for s in cfg.web])
def score_stage(cfg: Config, workspace) -> list[Path]:
    """Score every web source with its teachers (``web[i].teachers``, else ``omni.teacher_runs``)."""
    from ..train.loop import resolve_device
    from .pixels import pixel_scorer

    ws = Workspace.of(workspace)
    classes = read_manifest(ws.target_manifest()).classes
    dim = _feature_dim(ws.feature_cache(cfg)) if cfg.mode == "features" else None
    loaded: dict[str, Teacher] = {}
    for name in dict.fromkeys(n for src in cfg.web for n in source_teachers(cfg, src)):  # all, before any work
        loaded[name] = load_teacher(ws, name, classes, dim)
        if loaded[name].cfg.mode != cfg.mode:
            raise ConfigError(f"teacher run {name} was trained in {loaded[name].cfg.mode} mode; "
                              f"this experiment scores in {cfg.mode} mode")
    identity = teacher_identity(cfg, ws)
    outs = []
    for src in cfg.web:
        names = source_teachers(cfg, src)
        teachers = [loaded[n] for n in names]
        rows = [r for r in read_manifest(ws.web(src.name)).rows if r["status"] == "ok"]
        if cfg.mode == "features":
            fn, shard = _feature_scorer(teachers, cfg, ws, src.kind), 2048
        else:
            fn, shard = pixel_scorer(teachers, cfg, src.kind, resolve_device(cfg.train.device)), \
                (32 if src.kind == "untrimmed" else 256)
        out = score_in_shards(rows, fn, ws.scores(src.name), shard_size=shard, progress=console.is_terminal,
                              key=scores_key(teachers, cfg))
        atomic_write_text(out / "teacher.json", json.dumps({"key": value_digest(identity), **identity}, indent=1))
        atomic_write_text(ws.scores_info(src.name), json.dumps(
            {"source": src.name, "kind": src.kind, "teachers": [describe(t) for t in teachers],
             "clip_seconds": cfg.omni.clip_seconds, "views": cfg.omni.score_views if cfg.mode == "pixels" else 1},
            indent=2))
        console.print(f"score {src.name}: {len(rows)} rows by {', '.join(names)} -> {out}")
        outs.append(out)
    return outs
