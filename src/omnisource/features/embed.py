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


class EmbedderFactory:
    """What a Ray actor of ``features --engine ray`` builds once: the frozen backbone, and the
    local engine's :func:`~omnisource.features.cache.embed_rows` over it, one (features | None,
    reason) per row."""

    def __init__(self, cfg: Config, per_second: bool):
        self.f, self.max_pixels, self.device, self.per_second = cfg.features, cfg.media.max_pixels, \
            cfg.train.device, per_second

    def __call__(self):
        from ..train.loop import resolve_device
        from .cache import embed_rows

        f = self.f
        backbone = _backbone(f.backbone, f.pretrained)
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


@functools.lru_cache(maxsize=2)
def _backbone(name: str, pretrained: str):
    from ..models import create_backbone

    return create_backbone(name, pretrained=pretrained or None)


def embed_manifest(cfg: Config, workspace, path: Path, per_second: bool = False,
                   rows: list[dict] | None = None, engine=None) -> dict[str, str]:
    """Embed the ok rows of the manifest at ``path`` (or the given ``rows`` of it) that the cache
    lacks (and has not recorded as failed); untrimmed videos with ``per_second`` at 1 fps into
    their own cache. ``engine`` (distributed.ray.RayOptions) embeds on a Ray cluster into the same
    shards. Returns the failures {id: reason} and prints one line."""
    from ..train.loop import resolve_device
    from .cache import extract_features, missing_rows

    f = cfg.features
    cache = Workspace.of(workspace).feature_cache(cfg, per_second)
    rows = read_manifest(path).rows if rows is None else rows
    # the backbone only when there is something to embed here (a Ray engine loads it in its actors)
    backbone = _backbone(f.backbone, f.pretrained) if engine is None and missing_rows(rows, cache) else None
    failures = extract_features(rows, backbone, cache, size=f.size, frames=f.frames, batch_size=f.batch_size,
                                shard_size=f.shard_size, workers=f.workers, max_pixels=cfg.media.max_pixels,
                                device=resolve_device(cfg.train.device), progress=console.is_terminal,
                                per_second=per_second, embed=_ray_embed(cfg, per_second, engine) if engine else None)
    failed = sum(r["id"] in failures for r in rows)
    console.print(f"features: {len(rows) - failed} rows of {Path(path).name} cached in {cache}"
                  + (f" (ray)" if engine else "") + (f", {failed} failed to decode" if failed else ""))
    return failures


def embed_web(cfg: Config, workspace, stage: str = "web", sources: list[str] | None = None, engine=None) -> None:
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
        embed_manifest(cfg, ws, path, per_second=src.kind == "untrimmed" and stage == "web", rows=rows, engine=engine)


def _embed_inputs(cfg: Config, ws: Workspace, engine=None) -> dict:  # the engine changes no output
    return {**config_inputs(cfg, "features.backbone", "features.pretrained", "features.size", "features.frames",
                            "media.max_pixels"),
            **file_inputs(ws, [ws.target_manifest()] + [ws.web(s.name) for s in cfg.web if ws.web(s.name).exists()])}


def _embed_outputs(cfg: Config, ws: Workspace, engine=None) -> list[Path]:
    untrimmed = any(s.kind == "untrimmed" for s in cfg.web)
    return [ws.feature_cache(cfg)] + ([ws.feature_cache(cfg, per_second=True)] if untrimmed else [])


@stage("features", _embed_inputs, _embed_outputs)
def embed_stage(cfg: Config, workspace, engine=None) -> Path:
    """``omnisource features``: embed the target manifest and the imported web sources (on a Ray
    cluster with ``engine``, distributed.ray.RayOptions)."""
    ws = Workspace.of(workspace)
    embed_manifest(cfg, ws, ws.target_manifest(), engine=engine)
    embed_web(cfg, ws, "web", engine=engine)
    return ws.feature_cache(cfg)
