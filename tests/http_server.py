"""Local HTTP servers for the downloader tests: a threaded server on 127.0.0.1 whose ``routes`` map a
path to a reply function (``serve``, ``status``, ``flaky``, ``redirect``, ``endless``, ``trickle``),
counting its requests; the ``server`` fixture (tests/conftest.py) starts one per test."""
from __future__ import annotations

import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

MAX_REQUESTS = 400


def png_bytes(seed: int, size=(24, 20)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.count += 1
            srv.hits[self.path] += 1
            n = srv.hits[self.path]
            over = srv.count > MAX_REQUESTS
        if over:
            return self.reply(503, b"request budget exhausted", "text/plain")
        route = srv.routes.get(self.path)
        if route is None:
            return self.reply(404, b"not found", "text/plain")
        route(self, n)

    def reply(self, status: int, body: bytes = b"", ctype: str | None = None, headers: dict | None = None,
              length: bool = True):
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients killed or timing out mid-reply
        pass


def serve(body: bytes, ctype: str, delay: float = 0.0, headers=None):
    def route(h, n):
        time.sleep(delay)
        h.reply(200, body, ctype, headers)
    return route


def status(code: int):
    return lambda h, n: h.reply(code, b"nope", "text/plain")


def flaky(fails: int, code: int, then):
    return lambda h, n: h.reply(code, b"busy", "text/plain") if n <= fails else then(h, n)


def redirect(location: str, code: int = 302):
    return lambda h, n: h.reply(code, b"", None, {"Location": location})


def endless(ctype: str, chunk: int = 64 * 1024, limit: int = 4 * 2**20):
    def route(h, n):  # no Content-Length: the client must stop counting itself
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Connection", "close")
        h.close_connection = True
        h.end_headers()
        data = b"\xff\xd8\xff\xe0" + bytes(chunk - 4)
        sent = 0
        while sent < limit:
            h.wfile.write(data)
            sent += len(data)
            data = bytes(chunk)
    return route


def trickle(body: bytes, ctype: str, every: float = 0.05):
    def route(h, n):
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for i in range(0, len(body), 16):
            h.wfile.write(body[i:i + 16])
            h.wfile.flush()
            time.sleep(every)
    return route


# The test servers live on 127.0.0.1, which the downloader refuses unless allow_private.
FAST = dict(workers=4, per_host=3, connect_timeout=2, read_timeout=0.5, max_seconds=5, retries=2, backoff=0.02,
            max_redirects=3, max_bytes=200_000, allow_private=True)


def write_list(path: Path, pairs) -> Path:
    path.write_text("".join(f"{u}\t{q}\n" if q is not None else f"{u}\n" for u, q in pairs))
    return path


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def running_server():
    """A started Server (``.base`` its URL, ``.routes`` to fill), shut down when the generator ends."""
    srv = Server(("127.0.0.1", 0), Handler)
    srv.lock, srv.count, srv.hits, srv.routes = threading.Lock(), 0, Counter(), {}
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopper = threading.Timer(120, srv.shutdown)  # never outlives a stuck test
    stopper.daemon = True
    stopper.start()
    yield srv
    stopper.cancel()
    srv.shutdown()
    srv.server_close()
    thread.join(5)
    assert srv.count <= MAX_REQUESTS
