"""``omnisource fit-motion`` and ``omnisource transform`` (OmniSource §3.4).

fit-motion: homographies between consecutive frames of the target training videos, fitted by a
Gaussian (class-agnostic and per class) and saved to ``motion.npz``.
transform: kept web samples → training rows in the target format: images → pseudo-clips
(rendered when embedded), trimmed videos as they are, untrimmed videos → snippets of k positive
+ m negative 1 fps frames, each frame the filter kept (``omni.untrimmed=frames``), or positive
10 s clips.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..config import Config
from ..data import media, transforms
from ..data.datasets import frame_span
from ..console import console
from ..data.manifest import Manifest, ManifestError, make_id, read_manifest, write_manifest
from ..stamps import config_inputs, file_inputs, stage
from ..teacher.score import read_scores
from ..workspace import Workspace
from .image_to_clip import estimate_homographies, fit_gaussian, load_motion, save_motion
from .untrimmed import frame_rows, positive_frames, select_snippet, window_rows


MIN_PER_CLASS = 10  # homographies a class needs for a fit of its own


def fit_motion(rows: list[dict], classes: list[str], max_pixels: int, frames_per_video: int = 16,
               min_per_class: int = MIN_PER_CLASS) -> tuple[dict, dict]:
    """(fits, counts): key 'agnostic' or a class name -> (μ, Σ) of normalised homographies
    between consecutive frames from the middle of each video; classes with fewer than
    ``min_per_class`` homographies get no fit of their own."""
    from ..progress import track

    per_class: dict[str, list[np.ndarray]] = {}
    for row in track(rows, "fit-motion", unit="videos"):
        try:
            first, num, _ = frame_span(row)
            start = first + max(0, (num - frames_per_video) // 2)
            idx = np.arange(start, min(first + num, start + frames_per_video))
            clip = media.read_frames(row["path"], idx, kind=row["kind"], max_pixels=max_pixels)
        except media.MediaError:
            continue
        hs = estimate_homographies(transforms.resize_short(clip, 160))
        per_class.setdefault(classes[row["label"]], []).extend(hs)
    everything = [h for hs in per_class.values() for h in hs]
    if len(everything) < 2:
        raise RuntimeError("fit-motion: fewer than 2 homographies could be estimated from the target videos")
    fits = {"agnostic": fit_gaussian(np.array(everything))}
    counts = {"agnostic": len(everything)}
    for name, hs in per_class.items():
        if len(hs) >= min_per_class:
            fits[name], counts[name] = fit_gaussian(np.array(hs)), len(hs)
    return fits, counts


@stage("fit-motion", lambda cfg, ws: {**config_inputs(cfg, "media.max_pixels"),
                                      **file_inputs(ws, [ws.target_manifest()])},
       lambda cfg, ws: [ws.motion])
def fit_motion_stage(cfg: Config, workspace) -> Path:
    """Fit N(μ, Σ) on homographies between consecutive frames of target training videos."""
    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    rows = [r for r in manifest.rows if r["split"] == "train" and r["status"] == "ok" and r["kind"] != "image"]
    fits, counts = fit_motion(rows, manifest.classes, cfg.media.max_pixels)
    out = ws.motion
    save_motion(out, fits, counts)
    console.print(f"fit-motion: {counts['agnostic']} homographies from {len(rows)} videos, "
                  f"{len(fits) - 1} per-class fits -> {out}")
    return out


def image_rows(rows: list[dict], spec: str, classes: list[str], motion_path: Path, warp_scale: float,
               seed: int, fitted: set[str] | None = None) -> list[dict]:
    """Still images need nothing; other transforms get derived rows (own ids) that the feature
    stage renders into pseudo-clips. Under ``perspective_class`` a class with no fit of its own
    (not in ``fitted``: too few homographies) warps with the class-agnostic fit, and its rows say so
    in ``motion_note``."""
    if spec == "still":
        return [dict(r, clip_transform="") for r in rows]
    out = []
    for r in rows:
        tag = f"{spec}@{seed}" + (f"x{warp_scale:g}" if spec.startswith("perspective") else "")
        key = classes[r["label"]] if spec == "perspective_class" else "agnostic"
        note = ""
        if spec == "perspective_class" and fitted is not None and key not in fitted:
            key, note = "agnostic", f"class {key} has too few homographies for a fit of its own; class-agnostic fit"
        out.append(dict(r, id=make_id(r["source"], f"{r['path']}#{tag}"), parent_id=r["id"], clip_transform=spec,
                        motion_path=str(motion_path) if spec.startswith("perspective") else "",
                        motion_key=key, motion_note=note,
                        render_seed=int(np.random.default_rng([seed, int(r["id"][:8], 16)]).integers(2**31)),
                        warp_scale=warp_scale))
    return out


def frame_threshold(o, row: dict) -> float:
    """The probability at which a frame (clip) of a kept untrimmed video is positive."""
    return min(o.frame_threshold, row.get("query_floor") or 1.0, row.get("class_threshold") or 1.0)


def untrimmed_rows(rows: list[dict], scores: dict, cfg: Config) -> list[dict]:
    o = cfg.omni
    out = []
    for r in rows:
        rec = scores[r["id"]]
        if o.untrimmed == "frames":
            out += frame_rows(r)
        elif o.untrimmed == "snippet":
            # A video kept by its query's rank floor (select's min_keep), or by a calibrated class
            # threshold below frame_threshold, counts frames from there.
            threshold = frame_threshold(o, r)
            positive = positive_frames(np.array(rec["frame_probs"]), r["label"], threshold)
            n = int(min(o.snippets_per_video, max(1, positive.sum() // o.snippet_pos)))
            rng = np.random.default_rng([o.seed, int(r["id"][:8], 16)])
            seen = set()
            for j in range(n):
                idx = select_snippet(positive, o.snippet_pos, o.snippet_neg, rng)
                if idx is None or tuple(idx) in seen:
                    continue
                seen.add(tuple(idx))
                out.append(dict(r, id=make_id(r["source"], f"{r['path']}#snippet{j}"), parent_id=r["id"],
                                frame_indices=[int(i) for i in idx]))
        else:
            if not rec.get("clip_probs"):
                raise ManifestError(f"{r['path']}: its teacher scores have no clip scores; re-run `omnisource score` "
                                    "(omni.untrimmed=clips keeps the positive clips the teacher found)")
            probs = np.array(rec["clip_probs"])
            threshold = frame_threshold(o, r)
            positive = [tuple(w) for w, p in zip(rec["clip_windows"], probs) if p[r["label"]] >= threshold]
            out += window_rows(r, positive)
    return out


def _warps(cfg: Config) -> bool:
    return cfg.omni.image_to_clip.startswith("perspective") and any(s.kind == "image" for s in cfg.web)


def _transform_inputs(cfg: Config, ws: Workspace) -> dict:
    o = [f"omni.{k}" for k in ("image_to_clip", "warp_scale", "untrimmed", "frame_threshold", "snippet_pos",
                               "snippet_neg", "snippets_per_video", "clip_seconds", "seed")]
    files = [ws.target_manifest()] + [ws.web(s.name, "aux") for s in cfg.web] + \
        [ws.scores(s.name) for s in cfg.web if s.kind == "untrimmed"]
    # The motion fit is made inside this stage; its own inputs (the target set) stand for it.
    return {**config_inputs(cfg, "web", *o, *(["media.max_pixels"] if _warps(cfg) else [])),
            **file_inputs(ws, files)}


@stage("transform", _transform_inputs, lambda cfg, ws: [ws.web(s.name, "train") for s in cfg.web])
def transform_stage(cfg: Config, workspace) -> list[Path]:
    """Turn the kept web samples into target-format training samples
    (``manifests/train_<source>.parquet``)."""
    ws = Workspace.of(workspace)
    classes = read_manifest(ws.target_manifest()).classes
    motion = ws.motion
    if _warps(cfg) and fit_motion_stage.stale(cfg, ws):  # refit when the target set changed
        fit_motion_stage(cfg, ws)
    outs = []
    for src in cfg.web:
        kept = [r for r in read_manifest(ws.web(src.name, "aux")).rows if r["status"] == "ok"]
        if src.kind == "image":
            fitted = set(load_motion(motion)) if cfg.omni.image_to_clip == "perspective_class" else None
            rows = image_rows(kept, cfg.omni.image_to_clip, classes, motion, cfg.omni.warp_scale, cfg.omni.seed,
                              fitted)
            fallback = sorted({classes[r["label"]] for r in rows if r.get("motion_note")})
            if fallback:
                console.print(f"[yellow]transform {src.name}: perspective_class: {len(fallback)} classes have fewer "
                              f"than {MIN_PER_CLASS} homographies and warp with the class-agnostic fit: "
                              f"{', '.join(fallback)} (recorded in the rows' motion_note)[/]", highlight=False)
        elif src.kind == "trimmed":
            rows = kept
        else:
            rows = untrimmed_rows(kept, read_scores(ws.scores(src.name)), cfg)
        out = write_manifest(Manifest(rows, classes), ws.web(src.name, "train"))
        per_class = Counter(classes[r["label"]] for r in rows)
        console.print(f"transform {src.name}: {len(kept)} kept -> {len(rows)} training samples "
                      f"({src.kind}{', ' + cfg.omni.image_to_clip if src.kind == 'image' else ''}"
                      f"{', ' + cfg.omni.untrimmed if src.kind == 'untrimmed' else ''}); "
                      f"classes {dict(per_class)}")
        outs.append(out)
    return outs
