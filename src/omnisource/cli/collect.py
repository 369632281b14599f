"""CLI commands of collection and cleaning, registered on the main ``omnisource`` app:

* ``omnisource queries``   class names -> queries + hashtags (+ translations)
* ``omnisource download``  URL lists -> content-hashed files + ``web_<source>`` manifest
* ``omnisource clean validate``  decode checks of web manifests
* ``omnisource clean dedup``  exact and evaluation-set de-duplication

(The top-level ``omnisource validate`` stays the target-manifest validation.) Every command
needs ``-w/--workspace``: none of them creates ``./workspace`` by default.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer

from .common import (WEB, ConfigOpt, EngineOpt, OverridesArg, RayAddressOpt, RayNicenessOpt, WorkspaceOpt,
                     engine_options, friendly, load_cfg, open_workspace, workspace_root)
from ..console import console

SourceOpt = typer.Option(None, "--source", "-s", help="Web source name(s) (default: every web_<source> manifest).")

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """"64MB", "500k", "1GiB", "123" -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"bad size {text!r}: use a number of bytes or e.g. 500kB, 64MB, 1GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _workspace(workspace: Optional[Path], what: str):
    return open_workspace(workspace_root(workspace, what=what))


def queries_cmd(workspace: Optional[Path] = WorkspaceOpt,
                class_name: Optional[List[str]] = typer.Option(None, "--class", "-C", help="A class name (repeatable)."),
                classes: Optional[Path] = typer.Option(None, "--classes", help="File with one class name per line."),
                translations: Optional[Path] = typer.Option(
                    None, "--translations", "-t", help="Translation table: CSV/TSV class,language,text or "
                    "class,<lang>,...; or JSON {class: {lang: text}}."),
                language: Optional[List[str]] = typer.Option(
                    None, "--language", "-l", help="Keep only these translation languages (repeatable)."),
                hashtags: bool = typer.Option(True, "--hashtags/--no-hashtags", help="Also make hashtags."),
                max_words: int = typer.Option(4, help="Permute the words of names up to this many words."),
                vocabulary: Optional[Path] = typer.Option(
                    None, "--vocabulary", help="Extra known words (one per line) for splitting compounds."),
                out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output (default manifests/queries.parquet).")):
    """Search queries and hashtags (stemmed, permuted, optionally translated) from class names.

    The class names default to those of the target manifest."""
    from ..collect.queries import queries_stage, read_class_list, read_queries

    ws = _workspace(workspace, "`queries`")
    names = list(class_name or []) + (read_class_list(classes) if classes else [])
    words = read_class_list(vocabulary) if vocabulary else []
    path = queries_stage(ws, names or None, translations, language, hashtags, max_words, words, out)
    rows = read_queries(path)
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("query", "hashtag")}
    langs = sorted({r["language"] for r in rows})
    console.print(f"queries: {kinds['query']} queries, {kinds['hashtag']} hashtags, "
                     f"languages {', '.join(langs)} -> {path} (+ .tsv)")


def download_cmd(url_lists: List[Path] = typer.Argument(..., help="URL lists: url<TAB>query lines, or CSV with "
                                                        "url and query columns."),
                 workspace: Optional[Path] = WorkspaceOpt,
                 source: Optional[str] = typer.Option(None, "--source", "-s", help="Source name (default: the "
                                                      "first list's file name)."),
                 workers: int = typer.Option(8, help="Requests in flight in total."),
                 per_host: int = typer.Option(2, help="Requests in flight per host."),
                 connect_timeout: float = typer.Option(10.0, help="Seconds to resolve and connect."),
                 read_timeout: float = typer.Option(20.0, help="Longest silence while reading, seconds."),
                 max_seconds: float = typer.Option(60.0, help="Hard deadline of one attempt, seconds: connect, "
                                                   "headers and body, however slowly a server sends them."),
                 max_url_seconds: float = typer.Option(120.0, help="All attempts of one URL and the waits between "
                                                       "them end within this many seconds."),
                 retries: int = typer.Option(3, help="Retries on connection errors, silences and 5xx (never 4xx, "
                                             "never an attempt that hit --max-seconds)."),
                 backoff: float = typer.Option(0.5, help="First retry wait in seconds; doubles each retry."),
                 max_redirects: int = typer.Option(5, help="Redirect hops followed (each re-checked)."),
                 max_size: str = typer.Option("64MB", help="Largest body accepted (e.g. 20MB)."),
                 allow_private: bool = typer.Option(False, "--allow-private/--public-only",
                                                    help="--allow-private also fetches hosts resolving to loopback, "
                                                    "private, link-local (cloud metadata) or reserved addresses; "
                                                    "refused by default."),
                 strict_type: bool = typer.Option(True, "--strict-type/--lenient-type",
                                                  help="--lenient-type also accepts octet-stream / no Content-Type "
                                                  "(the magic bytes still decide)."),
                 ca_bundle: Optional[Path] = typer.Option(None, help="CA certificates (PEM) to trust instead of "
                                                          "the system's, for a mirror with a private CA."),
                 retry_failed: bool = typer.Option(False, "--retry-failed", help="Try failed URLs again.")):
    """Download URL lists into WS/web/<source>/ and write manifests/web_<source>.parquet.

    Files get content-hash names; resumable, re-runs skip finished URLs. Public addresses only
    unless --allow-private. By default each URL takes at most 120 s in all (60 s per attempt);
    Ctrl-C stops within a second, keeping what finished (run the command again to resume)."""
    from ..collect.download import DownloadOptions, download

    opts = DownloadOptions(workers=workers, per_host=per_host, connect_timeout=connect_timeout,
                           read_timeout=read_timeout, max_seconds=max_seconds, max_url_seconds=max_url_seconds,
                           retries=retries, backoff=backoff, max_redirects=max_redirects,
                           max_bytes=parse_size(max_size), allow_private=allow_private, strict_type=strict_type,
                           ca_bundle=str(ca_bundle or ""), retry_failed=retry_failed)
    ws = _workspace(workspace, "`download`")
    try:
        path = download(url_lists, ws, source, opts, progress=True)
    except KeyboardInterrupt:
        from ..collect.download import PENDING, default_source
        from ..data.manifest import read_manifest

        rows = read_manifest(ws.web(source or default_source(url_lists))).rows
        left = sum(r["reason"] == PENDING for r in rows)
        console.print(f"[yellow]download stopped:[/] {len(rows) - left} of {len(rows)} URLs finished and journaled, "
                      f"{left} left; run the same command again to resume", highlight=False, soft_wrap=True)
        raise SystemExit(130) from None  # (not typer.Exit: `friendly` reports KeyboardInterrupt on its own)
    from ..data.manifest import read_manifest

    rows = read_manifest(path).rows
    ok = sum(r["status"] == "ok" for r in rows)
    console.print(f"download: {ok} ok, {len(rows) - ok} failed of {len(rows)} URLs -> {path}")
    reasons: dict[str, int] = {}
    for r in rows:
        if r["status"] != "ok":
            key = re.sub(r"\(.*", "", r["reason"]).strip()
            reasons[key] = reasons.get(key, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
        console.print(f"  {n:6d}  {reason}", highlight=False)


def validate_cmd(workspace: Optional[Path] = WorkspaceOpt, source: Optional[List[str]] = SourceOpt,
                 min_size: Optional[int] = typer.Option(None, help="Smallest accepted width/height in pixels "
                                                        "(sets media.min_size; default: the workspace config's, 32)."),
                 max_pixels: Optional[int] = typer.Option(None, help="Largest accepted width x height, against "
                                                          "decompression bombs (sets media.max_pixels)."),
                 animated: Optional[str] = typer.Option(None, help="Animated images: reject | first-frame "
                                                        "(sets media.animated)."),
                 normalize: bool = typer.Option(True, "--normalize/--no-normalize",
                                                help="Write RGB copies of CMYK/alpha/gray/palette/16-bit/rotated images."),
                 workers: int = typer.Option(1, help="Decoding processes."),
                 force: bool = typer.Option(False, "--force", help="Check rows validated before again."),
                 engine: str = EngineOpt, ray_address: Optional[str] = RayAddressOpt,
                 ray_niceness: Optional[int] = RayNicenessOpt, overrides: Optional[List[str]] = OverridesArg):
    """Check every web file with the one validator; bad ones get a status and a reason.

    The rules of the config's `media` section, as `import-web` and the target `validate` use them:
    typed by content, decoded (images fully; videos first and last frame); corrupt | rejected.
    --engine ray validates on a Ray cluster."""
    from ..clean.validate import Rules, counts, validate_web
    from ..config import load_config
    from ..data.manifest import read_manifest

    flags = {"min_size": min_size, "max_pixels": max_pixels, "animated": animated}
    extra = [f"media.{k}={v}" for k, v in flags.items() if v is not None] + list(overrides or [])
    ws = _workspace(workspace, "`clean validate`")
    config = ws.config_file  # the rules the workspace's other stages use
    rules = Rules.from_config(load_config(config if config.is_file() else None, extra).media)
    opts = engine_options(engine, ray_address, ray_niceness)
    for path in validate_web(ws, source, rules, normalize, workers, True, force, opts):
        console.print(f"validate: {path.name}: {counts(read_manifest(path).rows)}")


def dedup_cmd(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
              source: Optional[List[str]] = SourceOpt,
              eval_manifest: Optional[Path] = typer.Option(None, "--eval", help="Evaluation manifest (default: "
                                                           "the workspace's target manifest)."),
              eval_split: Optional[List[str]] = typer.Option(None, "--eval-split",
                                                             help="Evaluation splits (default: val, test)."),
              threshold: Optional[float] = typer.Option(None, help="Cosine threshold (default: measured on crops "
                                                        "of the evaluation frames)."),
              size: Optional[int] = typer.Option(None, help="Frame size for the backbone (default: features.size)."),
              eval_fps: Optional[float] = typer.Option(None, help="Evaluation video frames per second to index "
                                                       "(default 5)."),
              web_frames: int = typer.Option(8, help="T of the feature cache web images are embedded into "
                                             "(an image gives one frame; web videos are embedded at 1 fps)."),
              min_frames: Optional[int] = typer.Option(None, help="A web video is a copy when this many of its "
                                                       "frames (1 fps) match one evaluation video "
                                                       "(default 2; 1: any frame)."),
              exact_max: int = typer.Option(50_000, help="Exact search up to this many evaluation frames, IVF above."),
              search_batch: int = typer.Option(8192, help="Web vectors whitened and searched per batch "
                                               "(bounds memory)."),
              exact_only: bool = typer.Option(False, "--exact-only", help="Only exact (content hash) duplicates."),
              overrides: Optional[List[str]] = OverridesArg):
    """Flag exact duplicates and near-duplicates of the evaluation set.

    Exact: content hash. Near: ImageNet features, whitening, cosine similarity, threshold from
    crops of the evaluation frames; an image is a copy when its frame reaches it, a video when
    several of its frames match one evaluation video."""
    from ..clean.dedup import dedup_stage, summary_line

    cfg, ws = load_cfg(config, workspace, overrides)
    for path, report in dedup_stage(cfg, ws, source, eval_manifest, eval_split, threshold, size, eval_fps,
                                    web_frames, exact_max, search_batch, exact_only, progress=True,
                                    min_frames=min_frames):
        console.print(summary_line(path, report))


def register_collect(app: typer.Typer) -> None:
    """Add ``queries`` and ``download`` to the main app."""
    app.command("queries", rich_help_panel=WEB)(friendly(queries_cmd))
    app.command("download", rich_help_panel=WEB)(friendly(download_cmd))


def register_clean(app: typer.Typer) -> None:
    """Add the ``clean`` group (validate, dedup) to the main app."""
    clean_app = typer.Typer(no_args_is_help=True, help="Clean web manifests: decode checks, de-duplication "
                            "against the evaluation set.")
    clean_app.command("validate")(friendly(validate_cmd))
    clean_app.command("dedup")(friendly(dedup_cmd))
    app.add_typer(clean_app, name="clean", rich_help_panel=WEB)
