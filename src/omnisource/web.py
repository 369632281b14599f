"""Web sources of a workspace: import local folders (or manifests) and validate them.

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
from .data.manifest import Manifest, ManifestError, absolute_paths, new_row, read_manifest, write_manifest
from .stamps import config_inputs, file_inputs, stage
from .workspace import Workspace


def from_query_folders(src: WebSourceConfig) -> Manifest:
    """``root/<query>/<file>``: every entry a row with the query as weak label and no label.

    Files at any depth under a query folder are rows (typed by content later, in validation);
    folders with no file below them (an empty query folder, a folder named ``x.mp4``) and files
    outside any query folder keep a row too, with a reason, so nothing under ``root`` is lost.
    Hidden entries (``.name``) are skipped."""
    root = Path(src.root)
    if not root.is_dir():
        raise ManifestError(f"web source {src.name}: {root} is not a folder of query sub-folders")
    kind = "image" if src.kind == "image" else "video"
    rows = []
    for qdir in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not qdir.is_dir():
            rows.append(new_row(src.name, kind, str(qdir), status="rejected",
                                reason="not inside a query folder (no weak label)"))
            continue
        entries = [f for f in sorted(qdir.rglob("*"))
                   if not any(part.startswith(".") for part in f.relative_to(qdir).parts)]
        files = [f for f in entries if not f.is_dir()]
        holders = {parent for f in files for parent in f.parents}
        empty = [d for d in [qdir, *entries] if d.is_dir() and d not in holders]
        empty = [d for d in empty if not any(e.parent == d for e in empty)]  # the innermost ones
        for f in sorted(files + empty):
            row = new_row(src.name, kind, str(f), weak_labels=[qdir.name])
            if f in empty:
                row.update(status="corrupt", reason="empty folder, not a file")
            rows.append(row)
    if not rows:
        raise ManifestError(f"web source {src.name}: no files under {root}")
    return Manifest(rows, [])


def _import_web_inputs(cfg: Config, ws: Workspace) -> dict:
    # A source imported in place (download wrote the manifest this stage rewrites) is no input.
    files = [src.root for src in cfg.web if src.format == "manifest" and
             Path(src.root).resolve() != ws.web(src.name).resolve()]
    return {**config_inputs(cfg, "web", "media.max_pixels", "media.min_size", "media.animated"),
            **file_inputs(ws, files)}


@stage("import-web", _import_web_inputs, lambda cfg, ws: [ws.web(s.name) for s in cfg.web])
def import_web(cfg: Config, workspace) -> list[Path]:
    """Import every configured web source and check it with the one validator (clean.validate):
    content of the source's kind, decodable, within the `media` rules."""
    from .clean.validate import Rules, counts, normalized_dir, validate_rows

    if not cfg.web:
        raise ManifestError("no web sources configured (the `web` list of the config is empty)")
    ws = Workspace.of(workspace)
    rules = Rules.from_config(cfg.media)
    outs = []
    for src in cfg.web:
        if src.format == "manifest":  # relative paths of a manifest are relative to its folder
            m = read_manifest(src.root)
            manifest = Manifest(absolute_paths(m.rows, Path(src.root).parent), m.classes)
        else:
            manifest = from_query_folders(src)
        for row in manifest.rows:
            row["source"] = src.name
        rows = validate_rows(manifest.rows, rules, normalized_dir(ws, src.name),
                             expected="image" if src.kind == "image" else "video", progress=console.is_terminal,
                             label=f"validate ({src.name})")
        out = write_manifest(Manifest(rows, manifest.classes), ws.web(src.name))
        queries = sorted({r["weak_labels"][0] for r in rows if r["weak_labels"]})
        console.print(f"web {src.name}: {len(rows)} {src.kind} rows ({counts(rows)}), {len(queries)} queries -> {out}")
        outs.append(out)
    return outs

