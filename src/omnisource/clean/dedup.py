"""De-duplication of web data (OmniSource, "Cleaning"; docs/methods.md): exact copies, and near-copies of the
evaluation set, which would otherwise leak test frames into training.

1. **Exact** (:mod:`omnisource.clean.exact`): byte-identical files (SHA-256), against the evaluation set
   (``dup_kind="exact-eval"``) and among the web files (``"exact"``, the first in manifest order stays).
2. **Near-duplicates of the evaluation set** (:mod:`omnisource.clean.near`): per-frame features of a
   frozen ImageNet CNN, whitening fitted on the evaluation features, cosine similarity, nearest neighbour
   by faiss (:mod:`omnisource.clean.similarity`), against a threshold measured on crops of the
   evaluation frames. A web row whose best frame reaches it becomes ``status=duplicate`` with ``dup_of``
   (the evaluation row id), ``dup_time_s`` (where in that video) and ``similarity``; every checked row
   keeps its best ``similarity`` for inspection.

This module is the stage: it clears a previous run's flags, chains the two, and rewrites every web
manifest in place with a ``.dedup.json`` report beside it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from ..data.manifest import Manifest, ManifestError, atomic_write_text, read_manifest, write_manifest
from .exact import exact_duplicates, file_sha256
from .near import DedupOptions, EvalIndex, embed_eval, eval_views, five_crops, load_or_embed_eval, near_duplicates
from .similarity import NearestNeighbours, Whitening, crop_threshold, fit_whitening, search_batches

__all__ = ["DUP_COLUMNS", "DedupOptions", "auto_views", "EvalIndex", "NearestNeighbours", "Whitening", "crop_threshold",
           "dedup_rows", "dedup_stage", "embed_eval", "eval_views", "exact_duplicates", "file_sha256",
           "fit_whitening", "five_crops", "load_or_embed_eval", "near_duplicates", "search_batches",
           "summary_line"]

DUP_COLUMNS = ("dup_of", "dup_kind", "dup_time_s", "dup_web_time_s", "dup_frames", "similarity")


def _reset(row: dict) -> dict:
    """A row as it was before a previous dedup run flagged it (so that re-runs are idempotent)."""
    row = dict(row)
    if row.get("status") == "duplicate" and row.get("dup_kind"):
        row.update(status="ok", reason="")
    for col in DUP_COLUMNS:
        row[col] = None
    return row


def auto_views(row_lists: Sequence[list[dict]]) -> str:
    """``eval_views="auto"``: three views per evaluation frame when web images are checked (a crop
    of a frame needs its side views), else the centre view alone (3x fewer vectors to embed)."""
    images = any(r.get("kind") == "image" and r.get("status") == "ok" for rows in row_lists for r in rows)
    return "three" if images else "center"


def dedup_rows(rows: list[dict], eval_rows: Sequence[dict], backbone=None, cache_dir: str | Path | None = None,
               opts: DedupOptions | None = None, exact_only: bool = False, eval_cache: Path | None = None,
               backbone_name: str = "", workers: int = 0, device="cpu",
               progress: bool = False, seconds_dir: Path | None = None) -> tuple[list[dict], dict]:
    """Exact then near-duplicate flags on ``rows`` (a re-run first clears the previous flags)."""
    opts = opts or DedupOptions()
    rows = exact_duplicates([_reset(r) for r in rows], eval_rows)
    exact = sum(r.get("dup_kind") in ("exact", "exact-eval") for r in rows)
    report = {"exact": exact, "near": 0, "checked": sum(r.get("status") == "ok" for r in rows), "threshold": None}
    if exact_only or not eval_rows:
        return rows, report
    if backbone is None or cache_dir is None:
        raise ValueError("near-duplicate search needs a backbone and a feature cache folder")
    if opts.eval_views == "auto":
        opts = replace(opts, eval_views=auto_views([rows]))
    index = load_or_embed_eval(eval_rows, backbone, opts, eval_cache, backbone_name, device, progress)
    if len(index.features) < 2:
        raise ValueError(f"only {len(index.features)} evaluation frames decoded: cannot fit the whitening")
    rows, near = near_duplicates(rows, index, backbone, Path(cache_dir), opts, workers, device, progress, seconds_dir)
    report.update(near)
    report["exact"] = exact
    report["eval_unreadable"] = len(index.failures)
    return rows, report


def summary_line(path: Path, report: dict) -> str:
    return (f"dedup: {path.name}: {report['exact']} exact duplicates, {report['near']} near-duplicates "
            f"of the evaluation set (threshold {report['threshold']}) of {report['checked']} rows")


def dedup_stage(cfg, workspace: str | Path, sources: Sequence[str] | None = None, eval_manifest: str | Path | None = None,
                eval_splits: Sequence[str] | None = None, threshold: float | None = None, size: int | None = None,
                eval_fps: float | None = None, web_frames: int = 8, exact_max: int = 50_000, search_batch: int = 8192,
                exact_only: bool = False, progress: bool = False, min_frames: int | None = None,
                eval_views: str | None = None) -> list[tuple[Path, dict]]:
    """De-duplicate every web manifest of the workspace in place against its evaluation split(s)."""
    from ..clean.validate import web_manifests
    from ..workspace import Workspace

    ws = Workspace.of(workspace)
    paths = web_manifests(ws, sources)
    splits = set(eval_splits or ("val", "test"))
    eval_path = Path(eval_manifest) if eval_manifest else None
    if eval_path is None:
        try:
            eval_path = ws.target_manifest()
        except ManifestError:  # no target yet: exact duplicates only
            eval_path = None
    eval_rows = []
    if eval_path is not None:
        eval_rows = [r for r in read_manifest(eval_path).rows if r.get("split") in splits and r.get("status") == "ok"]
    if not eval_rows and not exact_only:
        where = eval_path or f"{ws} (no target manifest)"
        raise ValueError(f"no evaluation rows (splits {sorted(splits)}) in {where}; pass --eval or --exact-only (under `run`: clean.dedup=false skips the dedup, or give the target a validation split)")
    f = cfg.features
    base = DedupOptions()
    opts = DedupOptions(size=size or f.size, eval_fps=base.eval_fps if eval_fps is None else eval_fps,
                        eval_views=eval_views or base.eval_views, web_frames=web_frames, threshold=threshold,
                        min_frames=base.min_frames if min_frames is None else min_frames,
                        exact_max=exact_max, search_batch=search_batch, batch_size=f.batch_size,
                        max_pixels=cfg.media.max_pixels)
    if opts.min_frames < 1 or not opts.eval_fps > 0:
        raise ValueError(f"min_frames must be >= 1 and eval_fps > 0, got {opts.min_frames} and {opts.eval_fps}")
    backbone, device = None, "cpu"
    if not exact_only:
        from ..models import create_backbone
        from ..train.loop import resolve_device

        backbone = create_backbone(f.backbone, pretrained=f.pretrained or None)
        device = resolve_device(cfg.train.device)
    root = ws.features_root(cfg)
    cache_dir = ws.feature_cache(cfg, size=opts.size, frames=opts.web_frames)
    seconds_dir = ws.feature_cache(cfg, per_second=True, size=opts.size)  # shared with untrimmed scoring
    manifests = {path: read_manifest(path) for path in paths}
    if opts.eval_views == "auto":  # one index for every manifest of the stage
        opts = replace(opts, eval_views=auto_views([m.rows for m in manifests.values()]))
    results = []
    for path in paths:
        manifest = manifests[path]
        rows, report = dedup_rows(manifest.rows, eval_rows, backbone, cache_dir, opts, exact_only, root,
                                  f"{f.backbone}:{f.pretrained}", f.workers, device, progress, seconds_dir)
        report.update(manifest=str(path), eval_manifest=str(eval_path) if eval_path else None,
                      options=asdict(opts))
        write_manifest(Manifest(rows, manifest.classes), path)
        atomic_write_text(path.with_suffix(".dedup.json"), json.dumps(report, indent=2) + "\n")
        results.append((path, report))
    return results
