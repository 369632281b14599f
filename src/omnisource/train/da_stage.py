"""``omnisource train`` with ``train.method=da``: the two stages of Kae & Song on a workspace.

Sources: the web sources of the config (``omnisource import-web`` first) — ``kind: image``
sources are the web images, ``kind: trimmed`` sources and the ``da.chunk_seconds`` chunks of
``kind: untrimmed`` sources the web videos (their frames in stage 1, their clips in stage 2);
each sample's weak label (query, mapped through ``query_map``) is its label, and samples whose
query names no target class are left out. The target manifest's
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
    image_model = FrameAdapter(dim, len(classes), da.adapter_dim, dropout=da.dropout)
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


def video_chunks(rows: list[dict], seconds: float) -> list[dict]:
    """Untrimmed web videos cut into consecutive ``seconds`` chunks (Kae & Song §3.4: the video
    model trains on web video chunks), each a row with ``start_s``/``end_s`` and ``parent_id``."""
    from ..data.media import MediaError
    from ..transform.untrimmed import window_rows, windows_of

    out = []
    for r in rows:
        try:
            out += window_rows(r, windows_of(r, seconds))
        except (MediaError, ValueError, OSError) as err:
            console.print(f"[yellow]da: {r['path']}: {err}; left out[/]")
    return out


def _sources(cfg: Config, workspace, classes: list[str]) -> dict[str, list[dict]]:
    """Weakly-labelled web rows: ``image`` (web images) and ``video`` (trimmed web videos, and the
    ``da.chunk_seconds`` chunks of untrimmed ones; their frames in stage 1, their clips in stage 2)."""
    found: dict[str, list[dict]] = {"image": [], "video": []}
    for src in cfg.web:
        path = Workspace.of(workspace).web(src.name)
        if not path.exists():
            raise ManifestError(f"{path} is missing: run `omnisource import-web` first")
        rows = [r for r in read_manifest(path).rows if r["status"] == "ok"]
        index = query_classes(Workspace.of(workspace), src, classes,
                              [str(q) for r in rows for q in r.get("weak_labels") or []], "da")
        kept = weak_labelled(rows, classes, src.query_map, index)
        chunks = video_chunks(kept, cfg.da.chunk_seconds) if src.kind == "untrimmed" else kept
        console.print(f"da: web source {src.name}: {len(kept)} of {len(rows)} samples have a weak label "
                      f"naming a target class" + (f", cut into {len(chunks)} chunks of {cfg.da.chunk_seconds:g} s"
                                                  if src.kind == "untrimmed" else ""))
        found["image" if src.kind == "image" else "video"] += chunks
    if not found["image"] and not found["video"]:
        raise ManifestError("train.method=da needs web sources whose queries name target classes")
    return found


def chunk_features(per_second: dict[str, np.ndarray], chunks: list[dict], frames: int):
    """(N, T, D) features of chunk rows from the 1 fps cache of their videos (T seconds of the
    chunk, evenly spaced) and the chunks that had them."""
    from ..data.sampling import tsn_indices

    feats, kept = [], []
    for r in chunks:
        parent = per_second.get(r["parent_id"])
        if parent is None or not len(parent):
            continue
        lo = min(int(r["start_s"]), len(parent) - 1)
        part = parent[lo:max(lo + 1, min(len(parent), int(np.ceil(r["end_s"]))))]
        feats.append(part[tsn_indices(len(part), frames, train=False)])
        kept.append(r)
    return (np.stack(feats) if feats else np.zeros((0, frames, 0), np.float32)), kept


def _feature_data(cfg: Config, workspace, manifest, web: dict[str, list[dict]]) -> dict:
    from ..features.cache import load_features, stack_features

    ws = Workspace.of(workspace)
    cache, t = ws.feature_cache(cfg), cfg.features.frames
    data = {}
    for name, rows in web.items():
        chunks = [r for r in rows if r.get("parent_id") and r.get("start_s") is not None]
        whole = [r for r in rows if not (r.get("parent_id") and r.get("start_s") is not None)]
        x, kept = stack_features(cache, whole, t) if whole else (np.zeros((0, t, 0), np.float16), [])
        ids = [r["id"] for r in kept]
        if chunks:
            per_second = load_features(ws.feature_cache(cfg, per_second=True), sorted({r["parent_id"] for r in chunks}))
            xc, kc = chunk_features(per_second, chunks, t)
            x, kept = (np.concatenate([x.astype(np.float32), xc]) if len(kept) else xc), kept + kc
            ids += [r["parent_id"] for r in kc]  # logged under its video's id (the web manifest's), chunks pooled
        data[name] = (x.astype(np.float32), np.array([r["label"] for r in kept], np.int64), ids)
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


def _log_id(row: dict) -> str:
    """The id a sample has in the attention log: a chunk is logged under its video."""
    return row["parent_id"] if row.get("parent_id") and row.get("start_s") is not None else row["id"]


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
    batchnorm_note(model)
    val = make_loader(VideoClipDataset(rows["val"], cfg.media, False, t.seed), t.batch_size, False,
                      t.num_workers) if rows["val"] else None

    target = [dict(r, label=None) for r in rows["train"]]  # the target labels are never read
    if "video" in stages and not web["video"]:
        raise ManifestError("stage 2 needs a trimmed or untrimmed web video source "
                            "(da.stages=image trains the image model only)")

    def loader(rs, media):
        return make_loader(VideoClipDataset(rs, media, True, t.seed), t.batch_size, True, t.num_workers, seed=t.seed)

    results = {}
    if "image" in stages:
        one = replace(cfg.media, num_segments=1, sampler="tsn")
        loaders, ids = {"target": loader(target, one)}, {}
        for name, key in (("image", "image"), ("frame", "video")):
            if web[key]:
                loaders[name] = loader(web[key], one)
                ids[name] = [_log_id(r) for r in loaders[name].dataset.rows]
        results["image"] = fit_da(DANet(model, da, loaders), loaders, ids, val, t, da, out / da.image_run, classes,
                                  dump_config(cfg), resume, console)
    else:
        load_image_model(model, out / da.image_run)
    if "video" in stages:
        loaders = {"frame": loader(web["video"], cfg.media), "target": loader(target, cfg.media)}
        ids = {"frame": [_log_id(r) for r in loaders["frame"].dataset.rows]}
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
            **file_inputs(ws, [ws.web(s.name) for s in cfg.web] + [ws.queries])}  # untrimmed ones: chunks in stage 2


def batchnorm_note(model: torch.nn.Module) -> None:
    """Under torchrun, say that a pixel-mode network's BatchNorm layers normalise each process's
    share of a branch's batch, as ``train`` does (SyncBatchNorm, which would use the global batch,
    runs on CUDA only); everything else of a step is the one-process step's (transfer.DANet)."""
    from ..distributed import ddp

    if ddp.context().enabled and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        console.print(f"da: BatchNorm statistics are those of each process's share of a batch "
                      f"({ddp.context().world_size} processes), as in `train` under torchrun")


@training_stage("da", _da_inputs, lambda cfg, ws, **k: [ws.run(cfg.da.image_run if s == "image" else cfg.da.video_run)
                                                        for s in _da_stages(cfg)])
def da_stage(cfg: Config, workspace, resume: bool = False) -> Path:
    """Run the configured DA stages (``da.stages``); returns the last run folder."""
    from ..distributed import ddp

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
    if ddp.context().is_main:  # under torchrun only rank 0 writes
        atomic_write_text(run / "config.yaml", dump_config(cfg))
    return run
