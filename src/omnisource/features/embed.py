"""Embed the rows of manifests into the workspace's feature cache (``omnisource features``).

Only rows the cache lacks are computed, so calling these again is cheap."""
from __future__ import annotations

import functools
from pathlib import Path

from ..config import Config
from ..console import console
from ..data.manifest import read_manifest
from ..stamps import config_inputs, file_inputs, stage, value_digest
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
                   rows: list[dict] | None = None, retry_failed: bool = False, left_out: str = "",
                   engine=None) -> dict[str, str]:
    """Embed the ok rows of the manifest at ``path`` (or the given ``rows`` of it) that the cache
    lacks (and has not recorded as failed, unless ``retry_failed``); untrimmed videos with
    ``per_second`` at 1 fps into their own cache. ``engine`` (distributed.ray.RayOptions) embeds on
    a Ray cluster into the same shards. Returns the failures {id: reason} and prints one line
    (ending with ``left_out``: what was not embedded and why)."""
    from ..train.loop import resolve_device
    from .cache import extract_features, missing_rows

    f = cfg.features
    cache = Workspace.of(workspace).feature_cache(cfg, per_second)
    rows = read_manifest(path).rows if rows is None else rows
    needed = missing_rows(rows, cache, retry_failed)
    # the backbone only when there is something to embed here (a Ray engine loads it in its actors)
    backbone = _backbone(f.backbone, f.pretrained) if needed and engine is None else None
    failures = extract_features(rows, backbone, cache, size=f.size, frames=f.frames, batch_size=f.batch_size,
                                shard_size=f.shard_size, workers=f.workers, max_pixels=cfg.media.max_pixels,
                                device=resolve_device(cfg.train.device), per_second=per_second,
                                label=f"features ({Path(path).stem}{', 1 fps' if per_second else ''})",
                                retry_failed=retry_failed,
                                embed=_ray_embed(cfg, per_second, engine) if engine else None)
    failed = sum(r["id"] in failures for r in rows)
    console.print(f"features: {len(rows) - failed} rows of {Path(path).name} cached in {cache} "
                  f"({len(needed)} computed now{' on ray' if engine else ''})" + (f", {failed} failed to decode" if failed else "")
                  + (f"; {left_out}" if left_out else ""))
    return failures


def web_rows(cfg: Config, ws: Workspace, src, stage: str = "web", all_rows: bool = False) -> tuple[list[dict], str]:
    """(rows to embed, what was left out) of one web source's ``stage`` manifest: its ok rows
    (snippets reuse their parent's frames), in the imported stage only those the teacher filter
    can keep (select.filter.teacher_rows) unless ``all_rows``."""
    from ..select.filter import teacher_rows

    rows = [r for r in read_manifest(ws.web(src.name, stage)).rows if r["status"] == "ok" and not r.get("frame_indices")]
    if stage != "web" or all_rows:
        return rows, ""
    kept = teacher_rows(rows, read_manifest(ws.target_manifest()).classes, src.query_map, cfg.omni.filter)
    skipped = len(rows) - len(kept)
    return kept, (f"{skipped} of queries that name no class left out (omni.filter={cfg.omni.filter} drops them; "
                  "--all embeds them)" if skipped else "")


def embed_web(cfg: Config, workspace, stage: str = "web", sources: list[str] | None = None,
              all_rows: bool = False, retry_failed: bool = False, engine=None) -> None:
    """Embed the rows of every web source's ``stage`` manifest that exists (or of ``sources``), see
    web_rows: untrimmed videos one frame per second (own cache), the rest like target videos (T
    segment centres; images: one frame or their pseudo-clip). Snippets of untrimmed videos reuse
    their parent's 1 fps frames."""
    ws = Workspace.of(workspace)
    for src in cfg.web:
        path = ws.web(src.name, stage)
        if not path.exists() or (sources is not None and src.name not in sources):
            continue
        rows, left_out = web_rows(cfg, ws, src, stage, all_rows)
        embed_manifest(cfg, ws, path, per_second=src.kind == "untrimmed" and stage == "web", rows=rows,
                       retry_failed=retry_failed, left_out=left_out, engine=engine)


def _embed_inputs(cfg: Config, ws: Workspace, all_rows: bool = False, retry_failed: bool = False,
                  engine=None) -> dict:  # the engine changes no output
    return {**config_inputs(cfg, "features.backbone", "features.pretrained", "features.size", "features.frames",
                            "media.max_pixels", "omni.filter"),
            "web query maps": value_digest([s.query_map for s in cfg.web]),
            **file_inputs(ws, [ws.target_manifest()] + [ws.web(s.name) for s in cfg.web if ws.web(s.name).exists()]),
            **({"option --all": "yes"} if all_rows else {})}


def _embed_outputs(cfg: Config, ws: Workspace, *args, **kwargs) -> list[Path]:
    untrimmed = any(s.kind == "untrimmed" for s in cfg.web)
    return [ws.feature_cache(cfg)] + ([ws.feature_cache(cfg, per_second=True)] if untrimmed else [])


@stage("features", _embed_inputs, _embed_outputs)
def embed_stage(cfg: Config, workspace, all_rows: bool = False, retry_failed: bool = False,
                engine=None) -> Path:
    """``omnisource features``: embed the rows of the target manifest and of the imported web
    sources that the experiment uses (data.scope, web_rows), or every row with ``all_rows``;
    ``retry_failed`` decodes again the files that failed before (else only those that changed);
    on a Ray cluster with ``engine`` (distributed.ray.RayOptions)."""
    from ..data.scope import experiment_rows

    ws = Workspace.of(workspace)
    path = ws.target_manifest()
    rows = read_manifest(path).rows
    used = experiment_rows(rows, all_rows)
    embed_manifest(cfg, ws, path, rows=used, retry_failed=retry_failed, engine=engine,
                   left_out=f"{len(rows) - len(used)} target videos the experiment does not use left out "
                            "(--all embeds them)" if len(used) < len(rows) else "")
    embed_web(cfg, ws, "web", all_rows=all_rows, retry_failed=retry_failed, engine=engine)
    return ws.feature_cache(cfg)
