"""A safe, resumable downloader for URL lists (DESIGN.md §1 "Collection", §4 "URL lists").

Input: ``url<TAB>query`` lines or a CSV with ``url`` and ``query`` (or ``label``/``class``) columns;
the query becomes the weak label. Output: ``WORKSPACE/web/<source>/<sha256[:2]>/<sha256>.<ext>``
(the extension comes from the file's magic bytes: no part of a URL ever becomes a path) and one row
per URL in ``WORKSPACE/manifests/web_<source>.parquet`` with status (ok | rejected), a reason and
url, final_url, sha256, bytes, content_type, http_status, attempts.

Safety: http/https only, on every redirect hop (httpx runs with ``follow_redirects=False``; our own
loop re-checks each hop, detects loops and stops after ``max_redirects``); hosts that resolve to
nothing are refused; by default hosts resolving to loopback, private, link-local (cloud metadata,
169.254.169.254), shared, multicast or reserved addresses are refused before connecting, on every
hop, and the socket connects to exactly the addresses that were checked (``collect.net``: no DNS
rebinding gap between check and connect); ``allow_private=True`` (``--allow-private``) opts in for
intranet mirrors and tests. Bodies are streamed and aborted past ``max_bytes`` (decoded bytes, so a
gzip bomb stops too); the Content-Type must name an image or video (``strict_type=False`` also
accepts octet-stream / none) and agree with the magic bytes.

Time: ``max_seconds`` is a hard deadline per attempt covering DNS, connect, TLS, headers and body,
however slowly a server drips bytes; ``read_timeout`` is the longest silence within it; all the
attempts of one URL, with their waits, end within ``max_url_seconds``. An attempt that hits its
deadline is not retried (a server that slow will be as slow again). Defaults: 60 s per attempt,
120 s per URL in all. Ctrl-C stops requests in flight within a quarter second, journals what
finished, writes the manifest and exits; a re-run resumes.

Retries: timeouts, connection errors and 5xx are retried with exponential backoff and jitter
(``Retry-After`` honoured up to ``backoff_max``); 4xx and content problems are final.

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

import csv
import hashlib
import json
import os
import random
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import httpx

from ..data.manifest import Manifest, ManifestError, default_mode, make_id, new_row, read_manifest, write_manifest
from ..data.sniff import sniff
from ..workspace import Workspace
from . import net

REDIRECTS = (301, 302, 303, 307, 308)
PENDING = "not downloaded yet: the run was stopped first (run the download again to fetch it)"
OK_STATUSES = (200, 203)
_VIDEO_TYPES = {"application/mp4", "application/ogg", "application/x-matroska", "application/vnd.rn-realmedia"}
_UNTYPED = {"", "application/octet-stream", "binary/octet-stream", "application/binary"}
_SOURCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")


@dataclass
class DownloadOptions:
    workers: int = 8  # global limit: requests in flight
    per_host: int = 2  # requests in flight per host
    connect_timeout: float = 10.0  # DNS and TCP connect (and TLS handshake), seconds
    read_timeout: float = 20.0  # longest silence between two chunks
    max_seconds: float = 60.0  # hard deadline of one attempt: DNS + connect + headers + body
    max_url_seconds: float = 120.0  # every attempt of one URL with the waits between them
    retries: int = 3  # extra attempts after the first (connection errors, silences, 5xx)
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    backoff_max: float = 30.0
    max_redirects: int = 5
    max_bytes: int = 64 * 2**20
    allow_private: bool = False  # True: also fetch loopback/private/link-local/reserved addresses
    strict_type: bool = True  # False: also accept application/octet-stream or no Content-Type
    retry_failed: bool = False  # on a re-run, try again the URLs that failed before
    ca_bundle: str = ""  # CA certificates (PEM) to trust instead of the system's (private mirrors)
    user_agent: str = "omnisource-downloader/0.1"
    seed: int = 0  # backoff jitter

    def check(self) -> None:
        if self.workers < 1 or self.per_host < 1 or self.max_bytes < 1:
            raise ValueError("workers, per_host and max_bytes must be at least 1")
        if self.retries < 0 or self.max_redirects < 0:
            raise ValueError("retries and max_redirects must be 0 or more")
        if min(self.connect_timeout, self.read_timeout, self.max_seconds, self.max_url_seconds) <= 0:
            raise ValueError("connect_timeout, read_timeout, max_seconds and max_url_seconds must be positive")
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise FileNotFoundError(f"{self.ca_bundle}: CA bundle not found")


class _Failure(Exception):
    def __init__(self, reason: str, retryable: bool = False, http_status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retryable, self.http_status, self.retry_after = reason, retryable, http_status, retry_after


# ----------------------------------------------------------------------------- input
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


# ----------------------------------------------------------------------------- content checks
def expected_kind(content_type: str, strict: bool) -> str | None:
    """"image" / "video" from a Content-Type, None for an untyped body (accepted when not strict);
    _Failure for any other type."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        return "image"
    if ctype.startswith("video/") or ctype in _VIDEO_TYPES:
        return "video"
    if ctype in _UNTYPED and not strict:
        return None
    raise _Failure(f"content type {ctype or '(none)'} is not an image or video")


# ----------------------------------------------------------------------------- network checks
def check_url(url: str, allow_private: bool = False, pins: dict | None = None,
              timeout: float = 10.0) -> httpx.URL:
    """Parsed URL after the scheme, host and address checks (raises _Failure, never retryable).
    The checked addresses go into `pins` so the connection uses exactly them (collect.net)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as err:
        raise _Failure(f"invalid URL: {err}") from None
    if parsed.scheme not in ("http", "https"):
        raise _Failure(f"scheme {parsed.scheme or '(none)'!r} not allowed (http/https only)")
    host = parsed.host
    if not host:
        raise _Failure("URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addrs = net.resolve(host, port, timeout)
    except OSError as err:
        raise _Failure(f"host {host} does not resolve ({err})") from None
    try:
        net.check_addresses(host, addrs, allow_private)
    except net.Refused as err:
        raise _Failure(str(err)) from None
    if pins is not None:
        pins[(host, port)] = addrs
    return parsed


class _HostLimits:
    """One semaphore per host: at most `per_host` requests to a host at once, across threads."""

    def __init__(self, per_host: int):
        self.per_host, self.lock, self.sems = max(1, per_host), threading.Lock(), {}

    def __call__(self, host: str) -> threading.BoundedSemaphore:
        with self.lock:
            if host not in self.sems:
                self.sems[host] = threading.BoundedSemaphore(self.per_host)
            return self.sems[host]


class _Stopped(Exception):
    """The run is being stopped (Ctrl-C): the URL is left for the next run, not journaled."""


class _Fetcher:
    def __init__(self, opts: DownloadOptions, files_dir: Path, tmp_dir: Path):
        self.opts, self.files_dir, self.tmp_dir = opts, files_dir, tmp_dir
        self.hosts = _HostLimits(opts.per_host)
        self.stop = threading.Event()  # set on Ctrl-C: requests in flight end within net.SLICE
        timeout = httpx.Timeout(connect=opts.connect_timeout, read=opts.read_timeout,
                                write=opts.read_timeout, pool=opts.max_seconds)
        limits = httpx.Limits(max_connections=max(opts.workers, 1) * 2,
                              max_keepalive_connections=max(opts.workers, 1))
        headers = {"User-Agent": opts.user_agent, "Accept": "image/*,video/*;q=0.9,*/*;q=0.1"}
        verify = ssl.create_default_context(cafile=opts.ca_bundle) if opts.ca_bundle else True
        transport = net.GuardedTransport(opts.allow_private, limits, verify, opts.connect_timeout)
        self.client = httpx.Client(follow_redirects=False, timeout=timeout, headers=headers, transport=transport,
                                   trust_env=False)
        self.rng = random.Random(opts.seed)
        self.rng_lock = threading.Lock()
        self.bytes_done = 0

    def close(self):
        self.client.close()

    def fetch(self, url: str) -> dict:
        """Outcome of one URL: the attempts loop around `_attempt`, never raises. All attempts and
        waits end by max_url_seconds; outcome status "stopped" when the run is being stopped."""
        opts = self.opts
        url_deadline = time.monotonic() + opts.max_url_seconds
        attempts, failure = 0, None
        try:
            for attempt in range(opts.retries + 1):
                if attempt:
                    wait_s = min(opts.backoff * 2 ** (attempt - 1), opts.backoff_max)
                    with self.rng_lock:
                        wait_s *= 0.5 + self.rng.random()
                    if failure is not None and failure.retry_after is not None:
                        wait_s = max(wait_s, min(failure.retry_after, opts.backoff_max))
                    if time.monotonic() + wait_s >= url_deadline:
                        failure.reason += f"; no time left for a retry (max_url_seconds={opts.max_url_seconds:g})"
                        break
                    if self.stop.wait(wait_s):
                        raise _Stopped()
                attempts += 1
                deadline = min(time.monotonic() + opts.max_seconds, url_deadline)
                try:
                    with net.attempt(deadline, self.stop) as pins:
                        return dict(self._attempt(url, pins, deadline), attempts=attempts)
                except _Failure as f:
                    failure = f
                    if not f.retryable:
                        break
        except (_Stopped, net.Stopped):
            return {"status": "stopped", "reason": "stopped", "attempts": attempts}
        except Exception as err:  # noqa: BLE001 - one odd URL must not stop a long run
            failure = _Failure(f"error: {type(err).__name__}: {err}")
        reason = failure.reason
        if failure.retryable and attempts > 1:
            reason = f"{reason} (after {attempts} attempts)"
        return {"status": "rejected", "reason": reason, "http_status": failure.http_status,
                "attempts": attempts, "retryable": failure.retryable}

    def _attempt(self, url: str, pins: dict, deadline: float) -> dict:
        opts = self.opts
        current, seen, started = url, {url}, time.monotonic()
        try:
            for _ in range(opts.max_redirects + 1):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise net.DeadlineExceeded()
                parsed = check_url(current, opts.allow_private, pins, min(opts.connect_timeout, left))
                sem = self.hosts(parsed.host)
                if not sem.acquire(timeout=max(deadline - time.monotonic(), 0)):  # a redirect to a busy host
                    raise net.DeadlineExceeded()
                try:
                    nxt = self._request(parsed)
                finally:
                    sem.release()
                if isinstance(nxt, dict):
                    return dict(nxt, final_url=str(parsed))
                if nxt in seen:
                    raise _Failure(f"redirect loop at {nxt}")
                seen.add(nxt)
                current = nxt
        except net.DeadlineExceeded:
            took = time.monotonic() - started
            raise _Failure(f"timeout: gave up after {took:.1f} s (max_seconds={opts.max_seconds:g} covers connect, "
                           f"headers and body; max_url_seconds={opts.max_url_seconds:g} all attempts)") from None
        raise _Failure(f"too many redirects (more than {opts.max_redirects})")

    def _request(self, url: httpx.URL) -> dict | str:
        """One GET: the next URL for a redirect, else the finished download (or _Failure)."""
        opts = self.opts
        try:
            with self.client.stream("GET", url) as resp:
                status = resp.status_code
                if status in REDIRECTS:
                    location = resp.headers.get("location", "").strip()
                    if not location:
                        raise _Failure(f"http {status} redirect without a Location", http_status=status)
                    try:
                        return str(resp.url.join(location))
                    except (httpx.InvalidURL, ValueError) as err:
                        raise _Failure(f"bad redirect Location: {err}", http_status=status) from None
                if status >= 500:
                    raise _Failure(f"http {status}", retryable=True, http_status=status,
                                   retry_after=_retry_after(resp.headers.get("retry-after")))
                if status not in OK_STATUSES:
                    raise _Failure(f"http {status}", http_status=status)
                ctype = resp.headers.get("content-type", "")
                want = expected_kind(ctype, opts.strict_type)
                length = resp.headers.get("content-length", "")
                if length.isdigit() and int(length) > opts.max_bytes:
                    raise _Failure(f"too large: Content-Length {int(length)} > max_bytes {opts.max_bytes}",
                                   http_status=status)
                return dict(self._save_body(resp, want), http_status=status,
                            content_type=ctype.split(";")[0].strip().lower())
        except net.Refused as err:
            raise _Failure(str(err)) from None
        except httpx.TimeoutException as err:
            raise _Failure(f"timeout ({type(err).__name__})", retryable=True) from None
        except httpx.TransportError as err:
            raise _Failure(f"connection error ({type(err).__name__}: {err})", retryable=True) from None

    def _save_body(self, resp: httpx.Response, want: str | None) -> dict:
        opts = self.opts
        digest, size, head, found = hashlib.sha256(), 0, b"", None
        fd, tmp = tempfile.mkstemp(prefix="dl-", suffix=".part", dir=self.tmp_dir)
        os.fchmod(fd, default_mode())  # renamed into the workspace when complete
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in resp.iter_bytes():  # as it arrives (a chunk size would buffer)
                    size += len(chunk)
                    if size > opts.max_bytes:
                        raise _Failure(f"too large: body exceeds max_bytes {opts.max_bytes}",
                                       http_status=resp.status_code)
                    if found is None:
                        head += chunk[: max(0, 512 - len(head))]
                        if len(head) >= 512:
                            found = self._check_magic(head, want)
                    digest.update(chunk)
                    out.write(chunk)
            if found is None:
                if size == 0:
                    raise _Failure("empty body", http_status=resp.status_code)
                found = self._check_magic(head, want)
            kind, ext = found
            sha = digest.hexdigest()
            final = self.files_dir / sha[:2] / f"{sha}{ext}"
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)  # same content -> same name: replacing is harmless
            self.bytes_done += size
            return {"status": "ok", "reason": "", "kind": kind, "path": str(final), "sha256": sha, "bytes": size}
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @staticmethod
    def _check_magic(head: bytes, want: str | None) -> tuple[str, str]:
        found = sniff(head)
        if found is None:
            raise _Failure("content is not a known image or video format (magic bytes)")
        if want is not None and found[0] != want:
            raise _Failure(f"content type says {want} but the content is a {found[0]} ({found[1][1:]})")
        return found


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


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


def _progress(enabled: bool, total: int):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, disable=not enabled)


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
    fetcher = _Fetcher(opts, files_dir, tmp_dir)
    counts = {"ok": 0, "failed": 0}
    t0 = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="download")
    running: dict = {}

    def record(fut, bar, task) -> None:
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
        dt = max(time.monotonic() - t0, 1e-6)
        n = counts["ok"] + counts["failed"]
        bar.update(task, advance=1, ok=counts["ok"], failed=counts["failed"],
                   rate=f"{n / dt:.1f} URL/s {fetcher.bytes_done / dt / 2**20:.2f} MB/s")

    with _progress(progress, len(todo)) as bar:
        task = bar.add_task("download", total=len(todo), ok=0, failed=0, rate="")
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
                    record(fut, bar, task)
        except BaseException:  # Ctrl-C (or a bug): stop the requests in flight, keep what finished
            fetcher.stop.set()
            ready.clear()
            for fut in list(running):
                if fut.cancel():
                    host, _ = running.pop(fut)
                    inflight[host] -= 1
            for fut in wait(list(running), timeout=opts.connect_timeout + 5).done:
                record(fut, bar, task)
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


def default_source(url_lists: Sequence[str | Path]) -> str:
    """The source name of a download without --source: the first list's file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(url_lists[0]).stem).lstrip("._-") or "web"
