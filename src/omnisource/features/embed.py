"""Embed the rows of manifests into the workspace's feature cache (``omnisource features``).

Only rows the cache lacks are computed, so calling these again is cheap."""
from __future__ import annotations

import functools
from pathlib import Path

from ..config import Config
from ..console import console
from ..data.manifest import read_manifest
from ..stamps import config_inputs, file_inputs, stage
from ..workspace import Workspace


@functools.lru_cache(maxsize=2)
def _backbone(name: str, pretrained: str):
    from ..models import create_backbone

    return create_backbone(name, pretrained=pretrained or None)


def embed_manifest(cfg: Config, workspace, path: Path, per_second: bool = False,
                   rows: list[dict] | None = None) -> dict[str, str]:
    """Embed the ok rows of the manifest at ``path`` (or the given ``rows`` of it) that the cache
    lacks (and has not recorded as failed); untrimmed videos with ``per_second`` at 1 fps into
    their own cache. Returns the failures {id: reason} and prints one line."""
    from ..train.loop import resolve_device
    from .cache import extract_features, missing_rows

    f = cfg.features
    cache = Workspace.of(workspace).feature_cache(cfg, per_second)
    rows = read_manifest(path).rows if rows is None else rows
    backbone = _backbone(f.backbone, f.pretrained) if missing_rows(rows, cache) else None  # only when needed
    failures = extract_features(rows, backbone, cache, size=f.size, frames=f.frames, batch_size=f.batch_size,
                                shard_size=f.shard_size, workers=f.workers, max_pixels=cfg.media.max_pixels,
                                device=resolve_device(cfg.train.device), progress=console.is_terminal,
                                per_second=per_second)
    failed = sum(r["id"] in failures for r in rows)
    console.print(f"features: {len(rows) - failed} rows of {Path(path).name} cached in {cache}"
                  + (f", {failed} failed to decode" if failed else ""))
    return failures


def embed_web(cfg: Config, workspace, stage: str = "web", sources: list[str] | None = None) -> None:
    """Embed the rows of every web source's ``stage`` manifest that exists (or of ``sources``):
    untrimmed videos one frame per second (own cache), the rest like target videos (T segment
    centres; images: one frame or their pseudo-clip). Snippets of untrimmed videos reuse their
    parent's 1 fps frames."""
    ws = Workspace.of(workspace)
    for src in cfg.web:
        path = ws.web(src.name, stage)
        if not path.exists() or (sources is not None and src.name not in sources):
            continue
        rows = [r for r in read_manifest(path).rows if r["status"] == "ok" and not r.get("frame_indices")]
        embed_manifest(cfg, ws, path, per_second=src.kind == "untrimmed" and stage == "web", rows=rows)


def _embed_inputs(cfg: Config, ws: Workspace) -> dict:
    return {**config_inputs(cfg, "features.backbone", "features.pretrained", "features.size", "features.frames",
                            "media.max_pixels"),
            **file_inputs(ws, [ws.target_manifest()] + [ws.web(s.name) for s in cfg.web if ws.web(s.name).exists()])}


def _embed_outputs(cfg: Config, ws: Workspace) -> list[Path]:
    untrimmed = any(s.kind == "untrimmed" for s in cfg.web)
    return [ws.feature_cache(cfg)] + ([ws.feature_cache(cfg, per_second=True)] if untrimmed else [])


@stage("features", _embed_inputs, _embed_outputs)
def embed_stage(cfg: Config, workspace) -> Path:
    """``omnisource features``: embed the target manifest and the imported web sources."""
    ws = Workspace.of(workspace)
    embed_manifest(cfg, ws, ws.target_manifest())
    embed_web(cfg, ws, "web")
    return ws.feature_cache(cfg)
