"""``omnisource score``: run the teacher(s) over every web source (OmniSource §3.2).

Each source has its own teachers (``web[i].teachers``, else ``omni.teacher_runs``; several =
an ensemble averaging probabilities): a 2D teacher for images, a 3D one for videos.
``scores/<source>/teachers.json`` records which teachers scored the source; with
``omni.calibrate``, ``scores/<source>/calibration.json`` holds the out-of-fold teacher
probabilities of the target's training clips (``teacher.calibrate``) that `select` calibrates
its per-class thresholds from.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np

from ..config import Config, ConfigError, source_teachers, to_dict
from ..console import console
from ..data.manifest import atomic_write_text, read_manifest
from ..select.filter import teacher_rows
from ..stamps import config_inputs, file_inputs, stage, teacher_inputs, value_digest
from ..workspace import Workspace
from .calibrate import CALIBRATION, target_crossfit
from .score import Teacher, describe, load_teacher, score_clips, score_in_shards, score_untrimmed


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
        heads = [(t.model, t.cfg.features.frames) for t in teachers]
        if kind != "untrimmed":
            records = score_clips(heads, [feats[r["id"]].astype(np.float32) for r in rows])
            return [{"id": r["id"], **rec} for r, rec in zip(rows, records)]
        return [{"id": r["id"], **score_untrimmed(heads, feats[r["id"]].astype(np.float32), cfg.omni.clip_seconds)}
                for r in rows]

    return score


def scores_key(teachers: list[Teacher], cfg: Config) -> str:
    """What a score depends on besides the rows: the teachers' weights and sampling, the windows."""
    o = cfg.omni
    pixel = cfg.mode == "pixels"  # pixel-mode 2D teachers score 1 fps frames for snippets only
    parts = [cfg.mode, o.clip_seconds, o.score_views if pixel else 1, o.untrimmed if pixel else ""]
    parts += [[t.digest, to_dict(t.cfg.media), t.cfg.features.frames] for t in teachers]
    return json.dumps(parts, sort_keys=True, default=str)


def _scorer(teachers: list[Teacher], cfg: Config, workspace, kind: str):
    if cfg.mode == "features":
        return _feature_scorer(teachers, cfg, workspace, kind)
    from ..train.loop import resolve_device
    from .pixels import pixel_scorer

    return pixel_scorer(teachers, cfg, kind, resolve_device(cfg.train.device))


class ScorerFactory:
    """What a Ray actor of ``score --engine ray`` builds once: the teachers, loaded, and the local
    engine's scoring function over them, giving one record (or None: unscored) per row."""

    def __init__(self, cfg: Config, workspace, kind: str, classes: list[str], dim: int | None, runs: list[str]):
        self.cfg, self.runs = copy.deepcopy(cfg), list(runs)
        self.cfg.train.num_workers = 0  # Ray's actors are the parallelism; no loader processes inside them
        self.workspace, self.kind, self.classes, self.dim = Workspace.of(workspace), kind, classes, dim

    def __call__(self):
        teachers = [load_teacher(self.workspace, run, self.classes, self.dim) for run in self.runs]
        fn = _scorer(teachers, self.cfg, self.workspace, self.kind)

        def one_per_row(rows: list[dict]) -> list[dict | None]:
            by_id = {rec["id"]: rec for rec in fn(rows)}
            return [by_id.get(r["id"]) for r in rows]

        return one_per_row


def teacher_identity(cfg: Config, ws: Workspace) -> dict:
    """What scores depend on besides the rows: the teachers' weights and configs, and how they score."""
    keys = ["mode", "omni.teacher_runs", "omni.clip_seconds"] + (
        ["features.backbone", "features.pretrained", "features.size", "features.frames"] if cfg.mode == "features"
        else ["media", "train.device", "train.amp", "train.amp_dtype", "omni.score_views", "omni.untrimmed"])
    runs = dict.fromkeys(n for src in cfg.web for n in source_teachers(cfg, src))
    return {**config_inputs(cfg, *keys), **teacher_inputs(ws, runs),
            "web kinds": value_digest([(s.name, s.kind, source_teachers(cfg, s)) for s in cfg.web])}


@stage("score", lambda cfg, ws, engine=None: {  # the engine changes no score
    **teacher_identity(cfg, ws), **file_inputs(ws, [ws.target_manifest()] + [ws.web(s.name) for s in cfg.web]),
    **({"calibration": value_digest(["crossfit", cfg.omni.calibrate_folds])} if cfg.omni.calibrate != "none" else {})},
       lambda cfg, ws, engine=None: [ws.scores(s.name) for s in cfg.web])
def score_stage(cfg: Config, workspace, engine=None) -> list[Path]:
    """Score every web source with its teachers (``web[i].teachers``, else ``omni.teacher_runs``)
    into ``scores/<source>/`` (resumable by shard); ``engine`` (distributed.ray.RayOptions) runs
    the missing shards as a Ray Data pipeline instead, into the same shards."""
    ws = Workspace.of(workspace)
    classes = read_manifest(ws.target_manifest()).classes
    dim = _feature_dim(ws.feature_cache(cfg)) if cfg.mode == "features" else None
    # Loaded here with either engine, so a missing teacher fails before any (cluster) work starts.
    loaded: dict[str, Teacher] = {}
    for name in dict.fromkeys(n for src in cfg.web for n in source_teachers(cfg, src)):
        loaded[name] = load_teacher(ws, name, classes, dim)
        if loaded[name].cfg.mode != cfg.mode:
            raise ConfigError(f"teacher run {name} was trained in {loaded[name].cfg.mode} mode; "
                              f"this experiment scores in {cfg.mode} mode")
    identity = teacher_identity(cfg, ws)
    crossfits: dict[tuple, dict] = {}  # teacher names -> out-of-fold record (omni.calibrate)
    outs = []
    for src in cfg.web:
        names = source_teachers(cfg, src)
        teachers = [loaded[n] for n in names]
        ok = [r for r in read_manifest(ws.web(src.name)).rows if r["status"] == "ok"]
        rows = teacher_rows(ok, classes, src.query_map, cfg.omni.filter)
        if len(rows) < len(ok):
            console.print(f"score {src.name}: {len(ok) - len(rows)} samples of queries that name no class left out "
                          f"(omni.filter={cfg.omni.filter} drops them anyway)")
        run_shards = None
        if engine is not None:
            from ..distributed import ray as ray_engine

            factory = ScorerFactory(cfg, ws, src.kind, classes, dim, names)
            run_shards = functools.partial(ray_engine.map_shards, factory=factory, opts=engine)
        shard = 2048 if cfg.mode == "features" else (32 if src.kind == "untrimmed" else 256)
        out = score_in_shards(rows, _scorer(teachers, cfg, ws, src.kind), ws.scores(src.name), shard_size=shard,
                              progress=True, key=scores_key(teachers, cfg), run_shards=run_shards)
        atomic_write_text(out / "teacher.json", json.dumps({"key": value_digest(identity), **identity}, indent=1))
        atomic_write_text(ws.scores_info(src.name), json.dumps(
            {"source": src.name, "kind": src.kind, "teachers": [describe(t) for t in teachers],
             "clip_seconds": cfg.omni.clip_seconds, "views": cfg.omni.score_views if cfg.mode == "pixels" else 1},
            indent=2))
        if cfg.omni.calibrate != "none":
            if tuple(names) not in crossfits:
                crossfits[tuple(names)] = target_crossfit(teachers, ws, cfg.omni.calibrate_folds)
            record = crossfits[tuple(names)]
            atomic_write_text(out / CALIBRATION, json.dumps(record))
            console.print(f"score {src.name}: out-of-fold teacher probabilities of the target's training clips, "
                          + (f"{record['folds']} folds" if record["folds"] else record["reason"]))
        elif (out / CALIBRATION).exists():  # of other teachers or settings: never read as current
            (out / CALIBRATION).unlink()
        console.print(f"score {src.name}: {len(rows)} rows by {', '.join(names)}{' (ray)' if engine else ''} -> {out}")
        outs.append(out)
    return outs
