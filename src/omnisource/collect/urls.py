"""URL lists for the downloader (:mod:`omnisource.collect.download`): ``url<TAB>query`` lines or a
CSV with ``url`` and ``query`` (or ``label``/``class``) columns, one entry per URL, and the source
name the files and manifest of a download go under."""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable, Sequence

from ..data.manifest import ManifestError

_SOURCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_source_name(source: str) -> str:
    if not _SOURCE_RE.fullmatch(source or ""):
        raise ValueError(f"source name {source!r} must be 1-64 letters, digits, '_', '-' or '.' "
                         "(it names folders and manifests)")
    return source


def read_url_list(path: str | Path) -> list[dict]:
    """[{url, queries, line, error}] from ``url<TAB>query`` lines (``#`` comments, blank lines
    skipped) or a ``.csv`` with a header naming ``url`` and ``query``/``label``/``class``/``weak_label``
    (a header-less CSV is read as url,query). Bad lines come back with ``error`` set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: URL list not found")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    out = []
    if path.suffix.lower() == ".csv":
        records = list(csv.reader(text.splitlines()))
        header = [h.strip().lower() for h in records[0]] if records else []
        qcol = next((c for c in ("query", "label", "class", "weak_label") if c in header), None)
        if "url" in header:
            if qcol is None:
                raise ManifestError(f"{path}: CSV header has `url` but no query/label/class column")
            ui, qi, records, first = header.index("url"), header.index(qcol), records[1:], 2
        else:
            ui, qi, first = 0, 1, 1
        for n, rec in enumerate(records, start=first):
            if not rec or not "".join(rec).strip() or rec[0].lstrip().startswith("#"):
                continue
            url = rec[ui].strip() if len(rec) > ui else ""
            query = rec[qi].strip() if len(rec) > qi else ""
            out.append(_entry(path, n, url, query))
        return out
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        url, _, query = line.strip().partition("\t")
        out.append(_entry(path, n, url.strip(), query.strip()))
    return out


def _entry(path: Path, n: int, url: str, query: str) -> dict:
    error = "" if url and query else f"{path.name} line {n}: expected url<TAB>query"
    return {"url": url or f"{path.name}:{n}", "queries": [query] if query else [], "line": f"{path.name}:{n}",
            "error": error}


def merge_entries(entries: Iterable[dict]) -> list[dict]:
    """One entry per URL, first occurrence order; a URL listed under several queries gets them all."""
    merged: dict[str, dict] = {}
    for e in entries:
        if e["url"] in merged:
            old = merged[e["url"]]
            old["queries"] += [q for q in e["queries"] if q not in old["queries"]]
            old["error"] = old["error"] if e["error"] else ""
        else:
            merged[e["url"]] = dict(e, queries=list(e["queries"]))
    return list(merged.values())



def default_source(url_lists: Sequence[str | Path]) -> str:
    """The source name of a download without --source: the first list's file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(url_lists[0]).stem).lstrip("._-") or "web"
