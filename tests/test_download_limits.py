"""The downloader cannot be held (hard deadlines, Ctrl-C) or turned inward (non-public addresses),
against servers on 127.0.0.1 only; every test is bounded in time."""
from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from ipaddress import ip_address
from pathlib import Path

import pytest

from http_server import FAST, Handler, Server, png_bytes, redirect, serve, write_list
from omnisource.collect import net
from omnisource.collect.download import PENDING, DownloadOptions, download
from omnisource.data.manifest import read_manifest

CERT = Path(__file__).parent / "data" / "localhost.pem"  # self-signed, CN=localhost, IP:127.0.0.1, to 2126


def drip_headers(every: float = 0.3, limit: float = 20.0, log: dict | None = None):
    """A server that sends its status line and headers one byte every `every` seconds (never silent
    for as long as a read timeout, so only a deadline on the whole attempt stops the client) for
    at most `limit` seconds. `log` gets ``ended`` (an Event) and ``client_left`` (whether the client
    hung up before the server gave up)."""
    ended = threading.Event()
    if log is not None:
        log.update(ended=ended, client_left=False)

    def route(h, n):
        data = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" + b"X-Pad: a\r\n" * 1000
        t0 = time.monotonic()
        try:
            for byte in data:
                if time.monotonic() - t0 > limit:
                    break
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(every)
        except OSError:  # the client hung up: what it should do
            if log is not None:
                log["client_left"] = True
        h.close_connection = True
        ended.set()
    return route


def test_dripped_headers_hit_the_attempt_deadline(server, tmp_path):
    """The server never pauses as long as the read timeout and would drip for 60 s: only the attempt's
    deadline (max_seconds=1.5) ends it, so the client hangs up on a server still sending, and says
    so. Nothing here depends on how fast the machine is: without the deadline the client would wait
    for the server's 60 s and fail on its broken headers instead."""
    log: dict = {}
    limit = 60.0
    server.routes["/drip"] = drip_headers(every=0.3, limit=limit, log=log)
    urls = write_list(tmp_path / "u.tsv", [(f"{server.base}/drip", "q")])
    opts = DownloadOptions(**dict(FAST, read_timeout=10.0, max_seconds=1.5, retries=2))
    out = download([urls], tmp_path / "ws", "d", opts, progress=False)
    (row,) = read_manifest(out).rows
    assert row["status"] == "rejected" and row["reason"].startswith("timeout: gave up after "), row["reason"]
    took = float(row["reason"].split("gave up after ")[1].split(" s")[0])
    assert 1.4 <= took < limit, row["reason"]  # at the deadline (as rounded), not at the server's end
    assert row["attempts"] == 1 and server.hits["/drip"] == 1  # a deadline is not retried
    assert log["ended"].wait(limit + 5)  # the server notices within a few of its writes
    assert log["client_left"]  # the client hung up while the server was still dripping


def test_all_attempts_of_a_url_end_within_max_url_seconds(server, tmp_path):
    server.routes["/busy"] = lambda h, n: h.reply(503, b"busy", "text/plain", {"Retry-After": "1"})
    urls = write_list(tmp_path / "u.tsv", [(f"{server.base}/busy", "q")])
    opts = DownloadOptions(**dict(FAST, retries=20, backoff=0.3, max_url_seconds=2.0))
    t0 = time.monotonic()
    (row,) = read_manifest(download([urls], tmp_path / "ws", "b", opts, progress=False)).rows
    assert time.monotonic() - t0 < 3.5
    assert row["status"] == "rejected" and "no time left for a retry (max_url_seconds=2)" in row["reason"]
    assert 2 <= row["attempts"] < 5 and server.hits["/busy"] == row["attempts"]


def test_defaults_refuse_loopback_before_connecting(server, tmp_path):
    server.routes["/x.png"] = serve(png_bytes(0), "image/png")
    urls = write_list(tmp_path / "u.tsv", [(f"{server.base}/x.png", "q"),
                                           (f"http://localhost:{server.server_address[1]}/x.png", "q")])
    t0 = time.monotonic()
    rows = read_manifest(download([urls], tmp_path / "ws", "p", DownloadOptions(), progress=False)).rows
    assert time.monotonic() - t0 < 5
    assert [r["status"] for r in rows] == ["rejected", "rejected"]
    assert "non-public address 127.0.0.1" in rows[0]["reason"] and "--allow-private" in rows[0]["reason"]
    assert "host localhost resolves to a non-public address" in rows[1]["reason"]
    assert server.count == 0


@pytest.mark.parametrize("addr, public", [
    ("8.8.8.8", True), ("2606:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("224.0.0.1", False), ("255.255.255.255", False), ("::1", False), ("fe80::1", False),
    ("fd00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True), ("2002:7f00:1::", False),
    ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::808:808", True), ("ff02::1", False)])
def test_is_public(addr, public):
    assert net.is_public(ip_address(addr)) is public


def test_redirect_to_link_local_is_refused_before_connecting(server, tmp_path, monkeypatch):
    """Only the test server's 127.0.0.1 passes as public here; the redirect hop to the metadata
    address is checked (and refused) before any connection is made."""
    real_public, connected = net.is_public, []
    monkeypatch.setattr(net, "is_public", lambda a: str(a) == "127.0.0.1" or real_public(a))
    real_connect = net._connect
    monkeypatch.setattr(net, "_connect", lambda sock, addr, t: (connected.append(addr[0]), real_connect(sock, addr, t)))
    server.routes["/jump"] = redirect("http://169.254.169.254/latest/meta-data/")
    server.routes["/hop"] = redirect("/x.png")
    server.routes["/x.png"] = serve(png_bytes(1), "image/png")
    urls = write_list(tmp_path / "u.tsv", [(f"{server.base}/jump", "q"), (f"{server.base}/hop", "q")])
    rows = read_manifest(download([urls], tmp_path / "ws", "r", DownloadOptions(**dict(FAST, allow_private=False)),
                                  progress=False)).rows
    assert rows[0]["status"] == "rejected" and "non-public address 169.254.169.254" in rows[0]["reason"]
    assert rows[1]["status"] == "ok"
    assert set(connected) == {"127.0.0.1"}


def test_the_connection_goes_to_the_checked_address(server, tmp_path, monkeypatch):
    """One name lookup per attempt, and the socket connects to that answer: a DNS answer that
    changes after the check (rebinding) is never asked for."""
    lookups = []
    port = server.server_address[1]

    def fake_resolve(host, p, timeout):
        lookups.append(host)
        return [(2, ("127.0.0.1", p))] if len(lookups) == 1 else [(2, ("10.0.0.1", p))]

    monkeypatch.setattr(net, "resolve", fake_resolve)
    server.routes["/y.png"] = serve(png_bytes(2), "image/png")
    urls = write_list(tmp_path / "u.tsv", [(f"http://rebind.test:{port}/y.png", "q")])
    (row,) = read_manifest(download([urls], tmp_path / "ws", "n", DownloadOptions(**FAST), progress=False)).rows
    assert row["status"] == "ok" and lookups == ["rebind.test"]


def test_https_through_the_guarded_backend(tmp_path):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(CERT)
    srv = Server(("127.0.0.1", 0), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.lock, srv.count, srv.hits = threading.Lock(), 0, Counter()
    srv.routes = {"/t.png": serve(png_bytes(3), "image/png")}
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{srv.server_address[1]}/t.png"
        urls = write_list(tmp_path / "u.tsv", [(url, "q")])
        opts = DownloadOptions(**dict(FAST, ca_bundle=str(CERT)))
        (row,) = read_manifest(download([urls], tmp_path / "ws", "tls", opts, progress=False)).rows
        assert row["status"] == "ok" and Path(row["path"]).read_bytes() == png_bytes(3)
        untrusted = DownloadOptions(**dict(FAST, retries=0))  # the system CAs do not know this certificate
        (row,) = read_manifest(download([urls], tmp_path / "ws2", "tls", untrusted, progress=False)).rows
        assert row["status"] == "rejected" and "CERTIFICATE_VERIFY_FAILED" in row["reason"]
    finally:
        srv.shutdown()
        srv.server_close()


STOP_SCRIPT = textwrap.dedent("""
    from omnisource.cli import main
    main()
""")


def test_ctrl_c_stops_in_seconds_keeping_journal_and_manifest(server, tmp_path):
    b = server.base
    server.routes["/fast.png"] = serve(png_bytes(4), "image/png")
    server.routes["/drip"] = drip_headers(every=0.2)
    urls = write_list(tmp_path / "u.tsv", [(f"{b}/fast.png", "q"), (f"{b}/drip", "q")] +
                      [(f"{b}/later{i}.png", "q") for i in range(3)])
    ws = tmp_path / "ws"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(net.__file__).parents[2])] +
                                                      os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    cmd = [sys.executable, "-c", STOP_SCRIPT, "download", str(urls), "-w", str(ws), "--source", "s",
           "--allow-private", "--workers", "2", "--per-host", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    journal = ws / "web" / "s.journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (server.hits["/drip"] and journal.exists() and journal.read_text()):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    time.sleep(0.5)  # well inside the dripped headers (the default deadline is 60 s)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=40)
    took = time.monotonic() - t0
    assert proc.returncode == 130, out
    assert took < 30, took  # not held by the drip: its headers would take the whole 60 s deadline (a loaded
    # 2-core machine took 5.3 s; an idle one 1.9 s)
    assert "download stopped: 1 of 5 URLs finished" in out and "run the same command again" in out
    rows = {r["url"].rsplit("/", 1)[1]: r for r in read_manifest(ws / "manifests" / "web_s.parquet").rows}
    assert rows["fast.png"]["status"] == "ok"
    assert all(rows[k]["reason"] == PENDING for k in ("drip", "later0.png", "later1.png", "later2.png"))
    assert journal.read_text().count("\n") == 1
    # The next run resumes: the finished URL is not fetched again, the rest are.
    server.routes["/drip"] = serve(png_bytes(5), "image/png")
    for i in range(3):
        server.routes[f"/later{i}.png"] = serve(png_bytes(6 + i), "image/png")
    out = download([urls], ws, "s", DownloadOptions(**FAST), progress=False)
    assert [r["status"] for r in read_manifest(out).rows] == ["ok"] * 5
    assert server.hits["/fast.png"] == 1
