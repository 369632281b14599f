"""One URL to one checked file: the downloader's HTTP side (:mod:`omnisource.collect.download`).

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
120 s per URL in all.

Retries: timeouts, connection errors and 5xx are retried with exponential backoff and jitter
(``Retry-After`` honoured up to ``backoff_max``); 4xx and content problems are final.

Bodies are written under the run's temporary folder first and renamed into
``<files_dir>/<sha256[:2]>/<sha256>.<ext>`` once complete and checked.
"""
from __future__ import annotations

import hashlib
import os
import random
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..data.manifest import default_mode
from ..data.sniff import sniff
from . import net

REDIRECTS = (301, 302, 303, 307, 308)
OK_STATUSES = (200, 203)
_VIDEO_TYPES = {"application/mp4", "application/ogg", "application/x-matroska", "application/vnd.rn-realmedia"}
_UNTYPED = {"", "application/octet-stream", "binary/octet-stream", "application/binary"}


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


class Fetcher:
    """Fetches URLs into ``files_dir`` (bodies staged in ``tmp_dir``) from any number of threads:
    one httpx client, the per-host limits, and ``stop`` (set on Ctrl-C)."""

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

