"""Embed the rows of manifests into the workspace's feature cache (``omnisource features``)."""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..console import console
from ..data.manifest import read_manifest
from ..workspace import Workspace


def embed_manifest(cfg: Config, workspace, path: Path, per_second: bool = False, backbone=None,
                   rows: list[dict] | None = None) -> dict[str, str]:
    """Embed the ok rows of the manifest at ``path`` (or the given ``rows`` of it) that the cache
    lacks (and has not recorded as failed); untrimmed videos with ``per_second`` at 1 fps into their own cache. Returns the
    failures {id: reason} and prints one line."""
    from ..models import create_backbone
    from ..train.loop import resolve_device
    from .cache import extract_features

    f = cfg.features
    cache = Workspace.of(workspace).feature_cache(cfg, per_second)
    rows = read_manifest(path).rows if rows is None else rows
    backbone = backbone or create_backbone(f.backbone, pretrained=f.pretrained or None)
    failures = extract_features(rows, backbone, cache, size=f.size, frames=f.frames, batch_size=f.batch_size,
                                shard_size=f.shard_size, workers=f.workers, max_pixels=cfg.media.max_pixels,
                                device=resolve_device(cfg.train.device), progress=console.is_terminal,
                                per_second=per_second)
    failed = sum(r["id"] in failures for r in rows)
    console.print(f"features: {len(rows) - failed} rows of {Path(path).name} cached in {cache}"
                  + (f", {failed} failed to decode" if failed else ""))
    return failures
