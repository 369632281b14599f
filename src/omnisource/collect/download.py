"""A safe, resumable downloader for URL lists (docs/guide.md, "Download").

Input: ``url<TAB>query`` lines or a CSV with ``url`` and ``query`` (or ``label``/``class``) columns
(:mod:`omnisource.collect.urls`); the query becomes the weak label. Output:
``WORKSPACE/web/<source>/<sha256[:2]>/<sha256>.<ext>`` (the extension comes from the file's magic
bytes: no part of a URL ever becomes a path) and one row per URL in
``WORKSPACE/manifests/web_<source>.parquet`` with status (ok | rejected), a reason and url,
final_url, sha256, bytes, content_type, http_status, attempts.

Each URL is fetched by :class:`omnisource.collect.fetch.Fetcher` (address checks on every hop,
size, type and time limits, retries: see that module). Ctrl-C stops requests in flight within a
quarter second, journals what finished, writes the manifest and exits; a re-run resumes.

Concurrency: a thread pool of ``workers`` sync httpx requests; a scheduler hands out URLs round-robin
over hosts with at most ``per_host`` in flight per host (redirect hops to another host take that
host's slot too).

Resume: each finished URL is appended to ``WORKSPACE/web/<source>.journal.jsonl`` right after its
file was renamed into place; bodies are written under ``WORKSPACE/tmp/download-<source>/`` first. A
killed run therefore loses only the downloads in flight, leaves no partial file among the results,
and a re-run skips every journaled URL (``retry_failed=True`` retries the failed ones) and writes
the same manifest as one uninterrupted run. Rows of an existing manifest whose download is
unchanged are kept as they are, so later stages' columns (validate, dedup) survive a re-run.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Sequence

import httpx

from ..data.manifest import Manifest, ManifestError, make_id, new_row, read_manifest, write_manifest
from ..progress import Progress
from ..workspace import Workspace
from .fetch import DownloadOptions, Fetcher
from .urls import check_source_name, default_source, merge_entries, read_url_list

__all__ = ["PENDING", "DownloadOptions", "check_source_name", "default_source", "download", "download_entries",
           "merge_entries", "read_url_list"]

PENDING = "not downloaded yet: the run was stopped first (run the download again to fetch it)"
_VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")


# ----------------------------------------------------------------------------- journal
def _read_journal(path: Path) -> dict[str, dict]:
    """url -> outcome; a torn last line (killed mid-write) is cut off so appends stay parseable."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    out = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "url" in rec:
            out[rec["url"]] = rec
    return out


class _Lock:
    """An exclusive lock file per source, so two downloads never share a temp folder."""

    def __init__(self, path: Path):
        self.path, self.fh = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise RuntimeError(f"another download into {self.path.stem} is running (lock {self.path})") from None
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()


# ----------------------------------------------------------------------------- stage
def _guess_kind(url: str) -> str:
    path = url.split("?")[0].split("#")[0].lower()
    return "video" if path.endswith(_VIDEO_EXTS) else "image"


def _row(source: str, entry: dict, outcome: dict) -> dict:
    url = entry["url"]
    kind = outcome.get("kind") or _guess_kind(url)
    return new_row(source, kind, outcome.get("path", ""), id=make_id(source, url), label=None,
                   weak_labels=entry["queries"], status=outcome["status"], reason=outcome.get("reason", ""),
                   url=url, final_url=outcome.get("final_url"), sha256=outcome.get("sha256"),
                   bytes=outcome.get("bytes"), content_type=outcome.get("content_type"),
                   http_status=outcome.get("http_status"), attempts=outcome.get("attempts", 0))


def download_entries(entries: Sequence[dict], workspace: str | Path, source: str,
                     options: DownloadOptions | None = None, progress: bool = True) -> Path:
    """Download every entry (see read_url_list) not finished before; write the web manifest."""
    opts = options or DownloadOptions()
    opts.check()
    source = check_source_name(source)
    ws = Workspace.of(workspace)
    files_dir = ws.web_files(source)
    journal_path = ws.web_journal(source)
    tmp_dir = ws.tmp(f"download-{source}")
    out_path = ws.web(source)
    entries = merge_entries(entries)
    with _Lock(ws.web_lock(source)):
        shutil.rmtree(tmp_dir, ignore_errors=True)  # partial bodies of a killed run
        tmp_dir.mkdir(parents=True, exist_ok=True)
        files_dir.mkdir(parents=True, exist_ok=True)
        done = _read_journal(journal_path)
        by_url = {e["url"]: e for e in entries}
        todo = []
        for e in entries:
            prev = done.get(e["url"])
            if e["error"]:
                continue
            if prev is None or (prev["status"] == "ok" and not Path(prev.get("path", "")).is_file()) or \
                    (opts.retry_failed and prev["status"] != "ok"):
                todo.append(e)
        try:
            with open(journal_path, "a", encoding="utf-8") as journal:
                _run(todo, opts, files_dir, tmp_dir, journal, done, progress)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            _write(ws, source, entries, by_url, done, out_path)
    return out_path


def _run(todo: list[dict], opts: DownloadOptions, files_dir: Path, tmp_dir: Path, journal, done: dict,
         progress: bool) -> None:
    """The scheduler: round-robin over hosts with capacity, results journaled in the main thread."""
    queues: dict[str, deque] = {}
    for e in todo:
        try:
            host = httpx.URL(e["url"]).host or ""
        except Exception:  # noqa: BLE001 - invalid URLs fail in the worker with a reason
            host = ""
        queues.setdefault(host, deque()).append(e)
    inflight: dict[str, int] = {h: 0 for h in queues}
    ready: deque = deque()
    in_ready: set = set()

    def mark(host: str):
        if queues.get(host) and inflight[host] < opts.per_host and host not in in_ready:
            ready.append(host)
            in_ready.add(host)

    for h in queues:
        mark(h)
    fetcher = Fetcher(opts, files_dir, tmp_dir)
    counts = {"ok": 0, "failed": 0}
    t0 = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="download")
    running: dict = {}

    def note() -> str:
        mb_s = fetcher.bytes_done / max(time.monotonic() - t0, 1e-6) / 2**20
        return f"{counts['ok']} ok, {counts['failed']} failed, {mb_s:.2f} MB/s"

    def record(fut, bar) -> None:
        host, e = running.pop(fut)
        inflight[host] -= 1
        mark(host)
        outcome = dict(fut.result(), url=e["url"], queries=e["queries"])
        if outcome["status"] == "stopped":  # cut short by Ctrl-C: the next run fetches it
            return
        journal.write(json.dumps(outcome) + "\n")
        journal.flush()
        done[e["url"]] = outcome
        counts["ok" if outcome["status"] == "ok" else "failed"] += 1
        bar.advance(note=note())

    with Progress("download", len(todo), "URLs", progress) as bar:
        try:
            while ready or running:
                while ready and len(running) < opts.workers:
                    host = ready.popleft()
                    in_ready.discard(host)
                    e = queues[host].popleft()
                    inflight[host] += 1
                    running[pool.submit(fetcher.fetch, e["url"])] = (host, e)
                    mark(host)
                finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in finished:
                    record(fut, bar)
                bar.advance(0, note=note())  # a line every interval even while slow URLs run
        except BaseException:  # Ctrl-C (or a bug): stop the requests in flight, keep what finished
            fetcher.stop.set()
            ready.clear()
            for fut in list(running):
                if fut.cancel():
                    host, _ = running.pop(fut)
                    inflight[host] -= 1
            for fut in wait(list(running), timeout=opts.connect_timeout + 5).done:
                record(fut, bar)
            raise
        finally:
            pool.shutdown(wait=not fetcher.stop.is_set(), cancel_futures=True)
            fetcher.close()


def _write(ws: Path, source: str, entries: list[dict], by_url: dict, done: dict, out_path: Path) -> None:
    """Manifest rows: URLs of this input in input order, then earlier runs' other URLs."""
    rows = []
    for e in entries:
        if e["error"]:
            rows.append(_row(source, e, {"status": "rejected", "reason": e["error"]}))
        elif e["url"] in done:
            prev = done[e["url"]]
            queries = list(prev.get("queries", [])) + [q for q in e["queries"] if q not in prev.get("queries", [])]
            rows.append(_row(source, dict(e, queries=queries), prev))
        else:  # the run was stopped first: on record, and fetched by the next run
            rows.append(_row(source, e, {"status": "rejected", "reason": PENDING}))
    for url, prev in done.items():
        if url not in by_url:
            rows.append(_row(source, {"url": url, "queries": prev.get("queries", [])}, prev))
    if out_path.exists():  # keep what later stages added to rows whose download did not change
        try:
            old = read_manifest(out_path).by_id()
        except ManifestError:
            old = {}
        for i, row in enumerate(rows):
            prev = old.get(row["id"])
            same = prev is not None and all(prev.get(k) == row[k] for k in ("url", "sha256", "path"))
            if same and (row["status"] == "ok" or prev.get("reason") == row["reason"]):
                rows[i] = dict(prev, weak_labels=row["weak_labels"])
    write_manifest(Manifest(rows, []), out_path)


def download(url_lists: Sequence[str | Path], workspace: str | Path, source: str | None = None,
             options: DownloadOptions | None = None, progress: bool = True) -> Path:
    """Read URL lists (see read_url_list) and download them into ``source`` (default: the first
    list's file name)."""
    if not url_lists:
        raise ValueError("no URL list given")
    entries = [e for p in url_lists for e in read_url_list(p)]
    return download_entries(entries, workspace, source or default_source(url_lists), options, progress)

