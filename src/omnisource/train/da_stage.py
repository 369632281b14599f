"""``omnisource train`` with ``train.method=da``: the two stages of Kae & Song on a workspace.

Sources: the web sources of the config (``omnisource import-web`` first) — ``kind: image``
sources are the web images, ``kind: trimmed`` sources the web videos (their frames in stage 1,
their clips in stage 2); each sample's weak label (query, mapped through ``query_map``) is its
label, and samples whose query names no target class are left out. The target manifest's
training rows are the unlabeled target frames/clips (their labels are never read); its
validation rows evaluate both stages.

Pixel mode trains the configured 2D TSN model (``model.name``, e.g. ``tsn_efficientnet_lite0``)
and inflates it to (2+1)D; feature mode trains a :class:`~omnisource.models.inflate2plus1.FrameAdapter`
on the cached frozen frame features (``omnisource features`` first) and its
:class:`~omnisource.models.inflate2plus1.AdapterVideo`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..config import Config, ConfigError, DAConfig, TrainConfig, dump_config
from ..console import console
from ..data.manifest import ManifestError, atomic_write_text, read_manifest
from ..stamps import config_inputs, file_inputs, teacher_inputs, training_stage
from ..web import query_classes
from ..workspace import Workspace, latest_checkpoint
from .transfer import DANet, fit_da, stage_config


def weak_labelled(rows: list[dict], classes: list[str], query_map: dict[str, str],
                  index: dict[str, int] | None = None) -> list[dict]:
    """Rows whose first mappable weak label names a target class, with ``label`` set to it.
    Queries map to classes as in OmniSource's selection (``query_map`` first, then names that
    match after normalisation: "bouncing ball" -> bouncing_ball, "horse race" -> HorseRace)."""
    from ..select.filter import map_queries

    if index is None:
        index = map_queries(sorted({str(q) for r in rows for q in r.get("weak_labels") or []}), classes, query_map)
    out = []
    for r in rows:
        label = next((index[str(q)] for q in r.get("weak_labels") or [] if index.get(str(q), -1) >= 0), None)
        if label is not None:
            out.append(dict(r, label=label))
    return out


def frames_of(clips: np.ndarray, labels: np.ndarray, ids: list[str]):
    """Clips (N, T, D) -> frames (N*T, 1, D) with labels and ids repeated per frame."""
    n, t = clips.shape[:2]
    return clips.reshape(n * t, 1, -1), np.repeat(labels, t), [i for i in ids for _ in range(t)]


def load_image_model(model: torch.nn.Module, run_dir: Path) -> None:
    """Load the classifier of a stage-1 run's latest checkpoint into ``model``."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no stage-1 checkpoint; run with da.stages=image or both first")
    state = load_file(str(ckpt / "model.safetensors"))
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})


def _feature_loader(x, y, frames, batch, train, seed):
    from ..data.datasets import FeatureDataset, make_loader

    return make_loader(FeatureDataset(x, y, frames, train, seed), batch, train, seed=seed)


def train_feature_da(data: dict, classes: list[str], cfg: TrainConfig, da: DAConfig, out: Path,
                     stages: tuple[str, ...] = ("image", "video"), resume: bool = False, console=None) -> dict:
    """Both stages on arrays. ``data``: ``image`` / ``video``: (x, y, ids) with x (N, T, D) (images
    T = 1); ``target``: unlabeled clips (N, T, D); ``val``: (clips, labels). Returns
    {stage: fit result}; runs go to ``out / da.image_run`` and ``out / da.video_run``."""
    from ..models.inflate2plus1 import AdapterVideo, FrameAdapter

    if "video" in stages and (data.get("video") is None or not len(data["video"][1])):
        # Checked before stage 1 trains, not after.
        raise ManifestError("stage 2 needs web videos, and none has a weak label naming a target class "
                            "(da.stages=image trains the image model only)")
    xv, yv = data["val"]
    frames = xv.shape[1]
    val = _feature_loader(xv, yv, frames, 256, False, 0)
    dim = xv.shape[-1]
    torch.manual_seed(cfg.seed)
    image_model = FrameAdapter(dim, len(classes), da.adapter_dim, dropout=0.5)
    results = {}
    b = cfg.batch_size
    if "image" in stages:
        loaders, ids = {}, {}
        if data.get("image") is not None and len(data["image"][1]):
            x, y, i = data["image"]
            loaders["image"], ids["image"] = _feature_loader(x[:, :1], y, 1, b, True, cfg.seed), i
        if data.get("video") is not None and len(data["video"][1]):
            x, y, i = frames_of(*data["video"])
            loaders["frame"], ids["frame"] = _feature_loader(x, y, 1, b, True, cfg.seed), i
        tx = data["target"].reshape(-1, 1, dim)
        loaders["target"] = _feature_loader(tx, np.full(len(tx), -1), 1, b, True, cfg.seed)
        net = DANet(image_model, da, loaders)
        results["image"] = fit_da(net, loaders, ids, val, cfg, da, Path(out) / da.image_run, classes,
                                  resume=resume, console=console)
    else:
        load_image_model(image_model, Path(out) / da.image_run)
    if "video" in stages:
        x, y, i = data["video"]
        torch.manual_seed(cfg.seed + 1)
        loaders = {"frame": _feature_loader(x, y, frames, b, True, cfg.seed),
                   "target": _feature_loader(data["target"], np.full(len(data["target"]), -1), frames, b, True,
                                             cfg.seed)}
        net = DANet(AdapterVideo(image_model, da.temporal_kernel), da, loaders)
        results["video"] = fit_da(net, loaders, {"frame": i}, val, stage_config(cfg, da, "video"), da,
                                  Path(out) / da.video_run, classes, resume=resume, console=console)
    return results


def _sources(cfg: Config, workspace, classes: list[str]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {"image": [], "video": []}
    for src in cfg.web:
        if src.kind == "untrimmed":
            console.print(f"[yellow]da: web source {src.name} is untrimmed; domain adaptation uses image and "
                          f"trimmed sources only, skipped[/]")
            continue
        path = Workspace.of(workspace).web(src.name)
        if not path.exists():
            raise ManifestError(f"{path} is missing: run `omnisource import-web` first")
        rows = [r for r in read_manifest(path).rows if r["status"] == "ok"]
        index = query_classes(Workspace.of(workspace), src, classes,
                              [str(q) for r in rows for q in r.get("weak_labels") or []], "da")
        kept = weak_labelled(rows, classes, src.query_map, index)
        console.print(f"da: web source {src.name}: {len(kept)} of {len(rows)} samples have a weak label "
                      f"naming a target class")
        found["image" if src.kind == "image" else "video"] += kept
    if not found["image"] and not found["video"]:
        raise ManifestError("train.method=da needs web sources (image or trimmed) whose queries name target classes")
    return found


def _feature_data(cfg: Config, workspace, manifest, web: dict[str, list[dict]]) -> dict:
    from ..features.cache import stack_features

    cache, t = Workspace.of(workspace).feature_cache(cfg), cfg.features.frames
    data = {}
    for name, rows in web.items():
        x, kept = stack_features(cache, rows, t) if rows else (np.zeros((0, t, 0), np.float16), [])
        data[name] = (x.astype(np.float32), np.array([r["label"] for r in kept], np.int64), [r["id"] for r in kept])
    for split in ("train", "val"):
        rows = [r for r in manifest.rows if r.get("split") == split and r.get("status") == "ok"]
        x, kept = stack_features(cache, rows, t)
        if not kept:
            raise ManifestError(f"no {split} target rows with cached features: run `omnisource features` first")
        data["target" if split == "train" else "val"] = x.astype(np.float32) if split == "train" else \
            (x.astype(np.float32), np.array([r["label"] for r in kept], np.int64))
    if not any(len(data[n][1]) for n in ("image", "video")):
        raise ManifestError("no web sample has cached features: run `omnisource features` first")
    return data


def _pixel_runs(cfg: Config, workspace, manifest, web: dict, stages: tuple[str, ...], resume: bool) -> dict:
    from ..data.datasets import VideoClipDataset, make_loader
    from ..models import create_model
    from ..models.inflate2plus1 import inflate_2plus1

    classes, t, da, out = manifest.classes, cfg.train, cfg.da, Workspace.of(workspace).runs_dir
    rows = {s: [r for r in manifest.rows if r.get("split") == s and r.get("status") == "ok"] for s in ("train", "val")}
    if not rows["train"]:
        raise ManifestError("the target manifest has no training rows to use as unlabeled target frames")
    torch.manual_seed(t.seed)
    model = create_model(cfg.model.name, len(classes), pretrained=cfg.model.pretrained or None,
                         dropout=cfg.model.dropout, width=cfg.model.width)
    if not all(hasattr(model, a) for a in ("forward_stages", "dropout", "fc")):
        raise ConfigError(f"model.name={cfg.model.name}: domain adaptation needs a 2D TSN model (tsn_*)")
    val = make_loader(VideoClipDataset(rows["val"], cfg.media, False, t.seed), t.batch_size, False,
                      t.num_workers) if rows["val"] else None

    target = [dict(r, label=None) for r in rows["train"]]  # the target labels are never read
    if "video" in stages and not web["video"]:
        raise ManifestError("stage 2 needs a trimmed web video source (da.stages=image trains the image model only)")

    def loader(rs, media):
        return make_loader(VideoClipDataset(rs, media, True, t.seed), t.batch_size, True, t.num_workers, seed=t.seed)

    results = {}
    if "image" in stages:
        one = replace(cfg.media, num_segments=1, sampler="tsn")
        loaders, ids = {"target": loader(target, one)}, {}
        for name, key in (("image", "image"), ("frame", "video")):
            if web[key]:
                loaders[name] = loader(web[key], one)
                ids[name] = [r["id"] for r in loaders[name].dataset.rows]
        results["image"] = fit_da(DANet(model, da, loaders), loaders, ids, val, t, da, out / da.image_run, classes,
                                  dump_config(cfg), resume, console)
    else:
        load_image_model(model, out / da.image_run)
    if "video" in stages:
        loaders = {"frame": loader(web["video"], cfg.media), "target": loader(target, cfg.media)}
        ids = {"frame": [r["id"] for r in loaders["frame"].dataset.rows]}
        net = DANet(inflate_2plus1(model, da.temporal_kernel), da, loaders)
        results["video"] = fit_da(net, loaders, ids, val, stage_config(t, da, "video"), da, out / da.video_run,
                                  classes, dump_config(cfg), resume, console)
    return results


def _da_stages(cfg: Config) -> tuple[str, ...]:
    return ("image", "video") if cfg.da.stages == "both" else (cfg.da.stages,)


def _da_inputs(cfg: Config, ws: Workspace, **_) -> dict:
    from .build import model_inputs

    loaded = [cfg.da.image_run] if _da_stages(cfg) == ("video",) else []  # stage 2 alone starts from stage 1
    for name in loaded:
        if latest_checkpoint(ws.run(name)) is None:
            raise FileNotFoundError(f"{ws.run(name)}: no stage-1 checkpoint; run with da.stages=image or both first")
    return {**model_inputs(cfg, ws), **config_inputs(cfg, "da", "web"), **teacher_inputs(ws, loaded),
            **file_inputs(ws, [ws.web(s.name) for s in cfg.web if s.kind != "untrimmed"] + [ws.queries])}


def single_process() -> None:
    """Refuse torchrun (before the stage touches its run folders): the attention weights each web
    sample against the whole target batch (top-T of its similarities) and da_step bypasses the
    module's forward, so both need work before a sharded batch trains the same model."""
    from ..distributed import ddp

    if ddp.context().enabled:
        raise ConfigError("train.method=da does not run under torchrun yet: run it as one process")


@training_stage("da", _da_inputs, lambda cfg, ws, **k: [ws.run(cfg.da.image_run if s == "image" else cfg.da.video_run)
                                                        for s in _da_stages(cfg)])
def da_stage(cfg: Config, workspace, resume: bool = False) -> Path:
    """Run the configured DA stages (``da.stages``); returns the last run folder."""
    single_process()
    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    web = _sources(cfg, ws, manifest.classes)
    stages = _da_stages(cfg)
    console.print(f"da: {cfg.mode} mode, stages {', '.join(stages)}; web images {len(web['image'])}, "
                  f"web videos {len(web['video'])}")
    if cfg.mode == "features":
        data = _feature_data(cfg, ws, manifest, web)
        train_feature_da(data, manifest.classes, cfg.train, cfg.da, ws.runs_dir, stages, resume, console)
    else:
        _pixel_runs(cfg, ws, manifest, web, stages, resume)
    run = ws.run(cfg.da.video_run if "video" in stages else cfg.da.image_run)
    atomic_write_text(run / "config.yaml", dump_config(cfg))
    return run
