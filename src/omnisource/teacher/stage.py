"""``omnisource score``: run the teacher(s) over every web source (OmniSource §3.2)."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np

from ..config import Config
from ..console import console
from ..data.manifest import atomic_write_text, read_manifest
from ..select.filter import teacher_rows
from ..stamps import config_inputs, file_inputs, stage, teacher_inputs, value_digest
from ..workspace import Workspace
from .score import Teacher, load_teacher, score_clips, score_in_shards, score_untrimmed, summarise


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


class _SecondFrames:
    """One frame per second of an untrimmed video, decoded in a loader worker; a file that
    fails gives (None, reason) and stays unscored (select records it as corrupt)."""

    def __init__(self, rows: list[dict], media_cfg):
        self.rows, self.cfg = rows, media_cfg

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        from ..data import media, sampling, transforms
        from ..data.datasets import frame_span

        r = self.rows[i]
        try:
            first, num, fps = frame_span(r)
            frames = media.read_frames(r["path"], sampling.one_fps_indices(num, fps) + first, kind=r["kind"],
                                       max_pixels=self.cfg.max_pixels)
        except (media.MediaError, ValueError, OSError) as err:
            return i, None, str(err) or type(err).__name__
        clip = transforms.center_crop(transforms.resize_short(frames, self.cfg.resize_short), self.cfg.input_size)
        return i, transforms.to_tensor(clip).permute(1, 0, 2, 3).unsqueeze(2), ""  # (F, 3, 1, H, W)


def _pixel_scorer(teachers: list[Teacher], cfg: Config, kind: str):
    import torch
    from ..data.datasets import VideoClipDataset, make_loader, worker_loader
    from ..progress import track
    from ..train.loop import predict, resolve_device

    device = resolve_device(cfg.train.device)

    def score(rows: list[dict]) -> list[dict]:
        if kind != "untrimmed":
            loader = make_loader(VideoClipDataset(rows, cfg.media, False), cfg.train.batch_size, False,
                                 cfg.train.num_workers)
            probs = np.mean([predict(t.model.to(device), loader, device, label=f"score: teacher {t.run.name}")[0]
                             for t in teachers], axis=0)
            return [{"id": r["id"], **summarise(p)} for r, p in zip(loader.dataset.rows, probs)]
        out = []
        loader = worker_loader(_SecondFrames(rows, cfg.media), batch_size=None, num_workers=cfg.train.num_workers)
        for i, x, reason in track(loader, "score: untrimmed videos", len(rows), "videos"):
            if x is None:
                console.print(f"[yellow]score: {rows[i]['path']}: {reason}; left unscored[/]")
                continue
            with torch.no_grad():
                x = x.to(device)
                frame_probs = np.mean([t.model.to(device).eval()(x).softmax(-1).cpu().numpy() for t in teachers], 0)
            out.append({"id": rows[i]["id"], **summarise(frame_probs.max(axis=0)), "frame_probs": frame_probs.tolist()})
        return out

    return score


def _scorer(teachers: list[Teacher], cfg: Config, workspace, kind: str):
    return _feature_scorer(teachers, cfg, workspace, kind) if cfg.mode == "features" \
        else _pixel_scorer(teachers, cfg, kind)


class ScorerFactory:
    """What a Ray actor of ``score --engine ray`` builds once: the teachers, loaded, and the local
    engine's scoring function over them, giving one record (or None: unscored) per row."""

    def __init__(self, cfg: Config, workspace, kind: str, classes: list[str], dim: int | None):
        self.cfg = copy.deepcopy(cfg)
        self.cfg.train.num_workers = 0  # Ray's actors are the parallelism; no loader processes inside them
        self.workspace, self.kind, self.classes, self.dim = Workspace.of(workspace), kind, classes, dim

    def __call__(self):
        teachers = [load_teacher(self.workspace, run, self.classes, self.dim) for run in self.cfg.omni.teacher_runs]
        fn = _scorer(teachers, self.cfg, self.workspace, self.kind)

        def one_per_row(rows: list[dict]) -> list[dict | None]:
            by_id = {rec["id"]: rec for rec in fn(rows)}
            return [by_id.get(r["id"]) for r in rows]

        return one_per_row


def teacher_identity(cfg: Config, ws: Workspace) -> dict:
    """What scores depend on besides the rows: the teachers' weights and configs, and how they score."""
    keys = ["mode", "omni.teacher_runs", "omni.clip_seconds"] + (
        ["features.backbone", "features.pretrained", "features.size", "features.frames"] if cfg.mode == "features"
        else ["media", "train.device", "train.amp"])
    return {**config_inputs(cfg, *keys), **teacher_inputs(ws, cfg.omni.teacher_runs),
            "web kinds": value_digest([(s.name, s.kind) for s in cfg.web])}


@stage("score", lambda cfg, ws, engine=None: {  # the engine changes no score
    **teacher_identity(cfg, ws), **file_inputs(ws, [ws.target_manifest()] + [ws.web(s.name) for s in cfg.web])},
       lambda cfg, ws, engine=None: [ws.scores(s.name) for s in cfg.web])
def score_stage(cfg: Config, workspace, engine=None) -> list[Path]:
    """Score every web sample with the teacher run(s) of ``omni.teacher_runs`` into ``scores/<source>/``
    (resumable by shard); ``engine`` (distributed.ray.RayOptions) runs the missing shards as a Ray
    Data pipeline instead, into the same shards."""
    ws = Workspace.of(workspace)
    classes = read_manifest(ws.target_manifest()).classes
    dim = _feature_dim(ws.feature_cache(cfg)) if cfg.mode == "features" else None
    # Loaded here with either engine, so a missing teacher fails before any cluster work starts.
    teachers = [load_teacher(ws, run, classes, dim) for run in cfg.omni.teacher_runs]
    identity = teacher_identity(cfg, ws)
    key = value_digest(identity)
    outs = []
    for src in cfg.web:
        ok = [r for r in read_manifest(ws.web(src.name)).rows if r["status"] == "ok"]
        rows = teacher_rows(ok, classes, src.query_map, cfg.omni.filter)
        if len(rows) < len(ok):
            console.print(f"score {src.name}: {len(ok) - len(rows)} samples of queries that name no class left out "
                          f"(omni.filter={cfg.omni.filter} drops them anyway)")
        run_shards = None
        if engine is not None:
            from ..distributed import ray as ray_engine

            factory = ScorerFactory(cfg, ws, src.kind, classes, dim)
            run_shards = functools.partial(ray_engine.map_shards, factory=factory, opts=engine)
        out = score_in_shards(rows, _scorer(teachers, cfg, ws, src.kind), ws.scores(src.name),
                              progress=True, key=key, run_shards=run_shards)
        atomic_write_text(out / "teacher.json", json.dumps({"key": key, **identity}, indent=1))
        console.print(f"score {src.name}: {len(rows)} rows by {', '.join(cfg.omni.teacher_runs)}"
                      f"{' (ray)' if engine else ''} -> {out}")
        outs.append(out)
    return outs
