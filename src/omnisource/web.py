"""Web sources of a workspace: import local folders (or manifests), validate, embed.

Paths inside the workspace (``Workspace.web(name, stage)``): ``manifests/web_<name>.parquet``
(imported + validated), ``manifests/aux_<name>.parquet`` (teacher-filtered, pseudo-labelled),
``manifests/train_<name>.parquet`` (transformed to the target format), ``scores/<name>/``.
``omnisource download`` writes the same ``web_<name>.parquet``: a source configured with that
name and ``format: manifest`` pointing at it is imported in place, keeping the rows that
download or dedup marked rejected or duplicate.
"""
from __future__ import annotations

from pathlib import Path

from .config import Config, WebSourceConfig
from .console import console
from .data.importers import IMAGE_EXTS, VIDEO_EXTS
from .data.manifest import Manifest, ManifestError, new_row, read_manifest, write_manifest
from .workspace import Workspace


def from_query_folders(src: WebSourceConfig) -> Manifest:
    """``root/<query>/<file>``: every file a row with the query as weak label and no label."""
    root = Path(src.root)
    if not root.is_dir():
        raise ManifestError(f"web source {src.name}: {root} is not a folder of query sub-folders")
    exts = IMAGE_EXTS if src.kind == "image" else VIDEO_EXTS
    kind = "image" if src.kind == "image" else "video"
    rows = []
    for qdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(qdir.rglob("*")):
            if f.is_dir() or f.name.startswith("."):
                continue
            row = new_row(src.name, kind, str(f), weak_labels=[qdir.name])
            if f.suffix.lower() not in exts:
                row.update(status="corrupt", reason=f"not a{'n image' if kind == 'image' else ' video'} "
                                                     f"file type ({f.suffix or 'no extension'})")
            rows.append(row)
    if not rows:
        raise ManifestError(f"web source {src.name}: no files under {root}")
    return Manifest(rows, [])


def import_web(cfg: Config, workspace) -> list[Path]:
    """Import and validate every configured web source."""
    from .data.prepare import validate_rows

    if not cfg.web:
        raise ManifestError("no web sources configured (the `web` list of the config is empty)")
    ws = Workspace.of(workspace)
    outs = []
    for src in cfg.web:
        manifest = read_manifest(src.root) if src.format == "manifest" else from_query_folders(src)
        for row in manifest.rows:
            row["source"] = src.name
        rows = validate_rows(manifest.rows, max_pixels=cfg.media.max_pixels, progress=console.is_terminal)
        out = write_manifest(Manifest(rows, manifest.classes), ws.web(src.name))
        bad = sum(r["status"] != "ok" for r in rows)
        queries = sorted({r["weak_labels"][0] for r in rows if r["weak_labels"]})
        console.print(f"web {src.name}: {len(rows)} {src.kind} rows, {len(queries)} queries, {bad} corrupt -> {out}")
        outs.append(out)
    return outs


def web_features(cfg: Config, workspace, stage: str = "web", engine=None) -> None:
    """Embed the rows of every web source: untrimmed videos one frame per second (own cache),
    the rest like target videos (T segment centres; images: one frame or their pseudo-clip)."""
    from .features.embed import embed_manifest
    from .models import create_backbone

    ws = Workspace.of(workspace)
    f = cfg.features
    backbone = None if engine else create_backbone(f.backbone, pretrained=f.pretrained or None)
    for src in cfg.web:
        path = ws.web(src.name, stage)
        if not path.exists():
            continue
        rows = [r for r in read_manifest(path).rows if r["status"] == "ok" and not r.get("frame_indices")]
        embed_manifest(cfg, ws, path, per_second=src.kind == "untrimmed" and stage == "web", backbone=backbone,
                       rows=rows, engine=engine)
