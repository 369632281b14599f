"""The downloader against hostile servers on 127.0.0.1: how long until it gives up, and what it refuses.

    python benchmarks/download_hostile.py [--drip 2] [--cap 200] [--cases headers,headers-default,...]

Each case runs the real ``omnisource download`` command in a child process against a local server
and prints the wall time until the command exits (or ``still running`` when it passes --cap and
is killed), its exit status, the manifest row(s) and how many requests the server saw:

  headers          status line and headers dripped one byte every --drip s; --max-seconds 10 --retries 0
  headers-default  the same with the default options (only --allow-private, since the server is loopback)
  body-default     headers at once, then the body dripped one byte every --drip s; default options
  loopback         a loopback URL with the default options (no --allow-private): refused before connecting
  sigint           headers dripped; SIGINT 2 s into the request (defaults): time from the signal to exit,
                   the journal and the manifest left behind
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq


class _Handler(BaseHTTPRequestHandler):
    """GET /drip-headers: the status line and headers one byte at a time; /drip-body: headers at
    once, then the body one byte at a time; anything else 404."""
    protocol_version = "HTTP/1.1"
    log_message = staticmethod(lambda *args: None)

    def _drip(self, data: bytes) -> None:
        for i in range(len(data)):
            if self.server.stop.is_set():
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            time.sleep(self.server.drip)

    def do_GET(self):
        self.server.hits.append(self.path)  # list.append is atomic: no lock needed
        try:
            if self.path.startswith("/drip-headers"):
                self._drip(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 10\r\n" * 50)
            elif self.path.startswith("/drip-body"):
                body = b"\x89PNG\r\n\x1a\n" + bytes(4000)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self._drip(body)
            else:
                self.send_error(404)
        except OSError:  # the client gave up: what we want
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def _run_case(name: str, url: str, args: list[str], cap: float, sigint_after: float | None, hits) -> dict:
    ws = Path(tempfile.mkdtemp(prefix=f"dl-{name}-"))
    urls = ws / "urls.tsv"
    urls.write_text(f"{url}\tq\n")
    cmd = [sys.executable, "-c", "from omnisource.cli import main; main()", "download", str(urls),
           "-w", str(ws / "ws"), "--source", "s", *args]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    signalled = None
    if sigint_after is not None:  # once the request is in flight
        while not hits() and proc.poll() is None and time.monotonic() - t0 < cap:
            time.sleep(0.05)
        time.sleep(sigint_after)
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=max(cap - (time.monotonic() - t0), 1))
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        rc = None
    wall = time.monotonic() - t0
    manifest = ws / "ws" / "manifests" / "web_s.parquet"
    rows = pq.read_table(manifest).to_pylist() if manifest.exists() else None
    journal = ws / "ws" / "web" / "s.journal.jsonl"
    res = {"case": name, "exit": rc, "seconds": round(wall, 2), "output": out.strip().splitlines()[-3:],
           "manifest_rows": None if rows is None else [(r["status"], r["reason"]) for r in rows],
           "journal_lines": journal.read_text().count("\n") if journal.exists() else None}
    if signalled is not None:
        res["seconds_after_sigint"] = round(time.monotonic() - signalled if rc is None else
                                            t0 + wall - signalled, 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drip", type=float, default=2.0, help="Seconds between dripped bytes.")
    ap.add_argument("--cap", type=float, default=200.0, help="Kill a case still running after this many seconds.")
    ap.add_argument("--cases", default="headers,headers-default,body-default,loopback,sigint")
    a = ap.parse_args()
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.hits, srv.drip, srv.stop = [], a.drip, threading.Event()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    cases = {
        "headers": (f"{base}/drip-headers", ["--allow-private", "--max-seconds", "10", "--retries", "0"], None),
        "headers-default": (f"{base}/drip-headers", ["--allow-private"], None),
        "body-default": (f"{base}/drip-body", ["--allow-private"], None),
        "loopback": (f"{base}/drip-headers", [], None),
        "sigint": (f"{base}/drip-headers", ["--allow-private"], 2.0),
    }
    for name in a.cases.split(","):
        url, args, sig = cases[name]
        before = len(srv.hits)
        res = _run_case(name, url, args, a.cap, sig, lambda: len(srv.hits) > before)
        res["server_requests"] = len(srv.hits) - before
        print(json.dumps(res), flush=True)
    srv.stop.set()
    srv.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
