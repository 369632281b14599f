"""Embed the rows of manifests into the workspace's feature cache (``omnisource features``)."""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..console import console
from ..data.manifest import read_manifest
from ..workspace import Workspace


class EmbedderFactory:
    """What a Ray actor of ``features --engine ray`` builds once: the frozen backbone, and the
    local engine's :func:`~omnisource.features.cache.embed_rows` over it, one (features | None,
    reason) per row."""

    def __init__(self, cfg: Config, per_second: bool):
        self.f, self.max_pixels, self.device, self.per_second = cfg.features, cfg.media.max_pixels, \
            cfg.train.device, per_second

    def __call__(self):
        from ..models import create_backbone
        from ..train.loop import resolve_device
        from .cache import embed_rows

        f = self.f
        backbone = create_backbone(f.backbone, pretrained=f.pretrained or None)
        device = resolve_device(self.device)

        def embed(rows: list[dict]) -> list[tuple]:
            return [(feats, reason) for _, feats, reason in embed_rows(
                rows, backbone, f.size, f.frames, f.batch_size, 0, self.max_pixels, device, self.per_second)]

        return embed


def _ray_embed(cfg: Config, per_second: bool, engine):
    from ..distributed import ray as ray_engine

    factory = EmbedderFactory(cfg, per_second)

    def embed(todo: list[dict]):
        for i, (feats, reason) in ray_engine.map_rows(todo, factory, engine):
            yield i, feats, reason

    return embed


def embed_manifest(cfg: Config, workspace, path: Path, per_second: bool = False, backbone=None,
                   rows: list[dict] | None = None, engine=None) -> dict[str, str]:
    """Embed the ok rows of the manifest at ``path`` (or the given ``rows`` of it) that the cache
    lacks (and has not recorded as failed); untrimmed videos with ``per_second`` at 1 fps into their
    own cache. ``engine`` (distributed.ray.RayOptions) embeds on a Ray cluster into the same
    shards. Returns the failures {id: reason} and prints one line."""
    from ..models import create_backbone
    from ..train.loop import resolve_device
    from .cache import extract_features

    f = cfg.features
    cache = Workspace.of(workspace).feature_cache(cfg, per_second)
    rows = read_manifest(path).rows if rows is None else rows
    if engine is None:
        backbone = backbone or create_backbone(f.backbone, pretrained=f.pretrained or None)
    failures = extract_features(rows, backbone, cache, size=f.size, frames=f.frames, batch_size=f.batch_size,
                                shard_size=f.shard_size, workers=f.workers, max_pixels=cfg.media.max_pixels,
                                device=resolve_device(cfg.train.device), progress=console.is_terminal,
                                per_second=per_second, embed=_ray_embed(cfg, per_second, engine) if engine else None)
    failed = sum(r["id"] in failures for r in rows)
    console.print(f"features: {len(rows) - failed} rows of {Path(path).name} cached in {cache}"
                  + (f" (ray)" if engine else "") + (f", {failed} failed to decode" if failed else ""))
    return failures
