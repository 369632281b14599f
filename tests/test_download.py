"""The downloader against a local HTTP server on 127.0.0.1 (bounded request count, stopped at the end)."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from http_server import (FAST, endless, files_under, flaky, jpeg_bytes, png_bytes, redirect, serve, status, trickle,
                         write_list)
from media_factory import write_video
from omnisource.collect import download as dl
from omnisource.collect.download import DownloadOptions, download, read_url_list
from omnisource.data.manifest import read_manifest
from omnisource.data.sniff import sniff


def test_sniff_magic_bytes(tmp_path):
    assert sniff(jpeg_bytes(0)) == ("image", ".jpg")
    assert sniff(png_bytes(0)) == ("image", ".png")
    mp4 = write_video(tmp_path / "v.mp4", 4).read_bytes()
    assert sniff(mp4[:512]) == ("video", ".mp4")
    assert sniff(b"<!doctype html><html>") is None
    assert sniff(b"GIF89a" + bytes(20)) == ("image", ".gif")


def test_download_every_case(server, tmp_path):
    b = server.base
    jpg, png = jpeg_bytes(1), png_bytes(2)
    mp4 = write_video(tmp_path / "clip.mp4", 8).read_bytes()
    r = server.routes
    r["/a.jpg"] = serve(jpg, "image/jpeg")
    r["/same-as-a.jpg"] = serve(jpg, "image/jpeg; charset=binary")
    r["/b.png"] = serve(png, "image/png", headers={"Content-Disposition": 'attachment; filename="../../evil.png"'})
    r["/clip"] = serve(mp4, "video/mp4")
    r["/gone"] = status(404)
    r["/flaky.png"] = flaky(1, 500, serve(png_bytes(3), "image/png"))
    r["/down.png"] = status(503)
    r["/slow.png"] = serve(png_bytes(4), "image/png", delay=2.0)
    r["/slowish.png"] = serve(png_bytes(5), "image/png", delay=0.2)
    r["/huge.jpg"] = serve(b"\xff\xd8\xff" + bytes(300_000), "image/jpeg")
    r["/endless.jpg"] = endless("image/jpeg")
    r["/page"] = serve(b"<!doctype html><html>hello</html>", "text/html")
    r["/liar.jpg"] = serve(b"<!doctype html><html>" + bytes(600), "image/jpeg")
    r["/notvideo.mp4"] = serve(jpg, "video/mp4")
    r["/hop"] = redirect("/a.jpg", 301)
    r["/loop1"] = redirect("/loop2")
    r["/loop2"] = redirect(f"{b}/loop1")
    r["/r1"], r["/r2"], r["/r3"], r["/r4"] = redirect("/r2"), redirect("/r3"), redirect("/r4"), redirect("/a.jpg")
    r["/to-ftp"] = redirect("ftp://127.0.0.1/x.jpg")
    r["/to-file"] = redirect("file:///etc/passwd")
    r["/trickle.png"] = trickle(png_bytes(6, (64, 64)), "image/png")
    traversal = f"{b}/%2e%2e/%2e%2e/%2e%2e/tmp/evil.png"
    r["/%2e%2e/%2e%2e/%2e%2e/tmp/evil.png"] = serve(png_bytes(7), "image/png")
    pairs = [(f"{b}/a.jpg", "archery"), (f"{b}/same-as-a.jpg", "archery"), (f"{b}/b.png", "surfing"),
             (f"{b}/clip", "surfing"), (f"{b}/gone", "surfing"), (f"{b}/flaky.png", "golf"),
             (f"{b}/down.png", "golf"), (f"{b}/slow.png", "golf"), (f"{b}/slowish.png", "golf"),
             (f"{b}/huge.jpg", "golf"), (f"{b}/endless.jpg", "golf"), (f"{b}/page", "golf"),
             (f"{b}/liar.jpg", "golf"), (f"{b}/notvideo.mp4", "golf"), (f"{b}/hop", "golf"),
             (f"{b}/loop1", "golf"), (f"{b}/r1", "golf"), (f"{b}/to-ftp", "golf"), (f"{b}/to-file", "golf"),
             (f"{b}/trickle.png", "golf"), (traversal, "golf"), ("file:///etc/passwd", "golf"),
             ("ftp://127.0.0.1/x.jpg", "golf"), ("http://nothing.invalid/x.jpg", "golf"),
             ("http://[::1/x.jpg", "golf"), (f"{b}/a.jpg", "bow"), ("no-query-here", None)]
    urls = write_list(tmp_path / "urls.tsv", pairs)
    ws = tmp_path / "ws"
    opts = DownloadOptions(**dict(FAST, max_seconds=1.0))
    out = download([urls], ws, "crawl", opts, progress=False)
    assert out == ws / "manifests" / "web_crawl.parquet"
    m = read_manifest(out)
    rows = {row["url"]: row for row in m.rows}
    assert len(m.rows) == len(pairs) - 1  # a.jpg listed twice -> one row, two weak labels

    def get(path):
        return rows[f"{b}{path}"]

    a = get("/a.jpg")
    assert a["status"] == "ok" and a["kind"] == "image" and a["weak_labels"] == ["archery", "bow"]
    assert a["sha256"] == hashlib.sha256(jpg).hexdigest() and a["bytes"] == len(jpg)
    assert Path(a["path"]) == ws / "web" / "crawl" / a["sha256"][:2] / f"{a['sha256']}.jpg"
    assert Path(a["path"]).read_bytes() == jpg and a["label"] is None and a["source"] == "crawl"
    assert get("/same-as-a.jpg")["path"] == a["path"] and get("/same-as-a.jpg")["status"] == "ok"
    assert get("/b.png")["path"].endswith(".png")  # Content-Disposition ignored
    clip = get("/clip")
    assert clip["status"] == "ok" and clip["kind"] == "video" and clip["path"].endswith(".mp4")
    assert clip["content_type"] == "video/mp4"
    gone = get("/gone")
    assert (gone["status"], gone["reason"], gone["http_status"], gone["attempts"]) == ("rejected", "http 404", 404, 1)
    assert server.hits["/gone"] == 1  # no retry on 4xx
    fl = get("/flaky.png")
    assert fl["status"] == "ok" and fl["attempts"] == 2 and server.hits["/flaky.png"] == 2
    down = get("/down.png")
    assert down["status"] == "rejected" and down["attempts"] == 3 and server.hits["/down.png"] == 3
    assert down["reason"].startswith("http 503") and down["http_status"] == 503
    slow = get("/slow.png")
    assert slow["status"] == "rejected" and "timeout" in slow["reason"] and slow["attempts"] == 3
    assert get("/slowish.png")["status"] == "ok"
    assert "too large: Content-Length" in get("/huge.jpg")["reason"]
    assert "too large: body exceeds" in get("/endless.jpg")["reason"]
    assert "text/html is not an image or video" in get("/page")["reason"]
    assert "not a known image or video format" in get("/liar.jpg")["reason"]
    assert "content type says video but the content is a image" in get("/notvideo.mp4")["reason"]
    hop = get("/hop")
    assert hop["status"] == "ok" and hop["final_url"] == f"{b}/a.jpg" and hop["path"] == a["path"]
    assert "redirect loop" in get("/loop1")["reason"] and server.hits["/loop1"] == 1
    assert "too many redirects" in get("/r1")["reason"] and server.hits["/a.jpg"] == 2
    assert "scheme 'ftp' not allowed" in get("/to-ftp")["reason"]
    assert "scheme 'file' not allowed" in get("/to-file")["reason"]
    trickled = get("/trickle.png")
    assert "timeout: gave up after" in trickled["reason"] and trickled["attempts"] == 1  # a deadline is final
    assert rows["file:///etc/passwd"]["status"] == "rejected"
    assert "scheme 'ftp'" in rows["ftp://127.0.0.1/x.jpg"]["reason"]
    assert "does not resolve" in rows["http://nothing.invalid/x.jpg"]["reason"]
    assert rows["http://[::1/x.jpg"]["status"] == "rejected"
    trav = rows[traversal]
    assert trav["status"] == "ok" and Path(trav["path"]).parent.parent == ws / "web" / "crawl"
    bad = rows["no-query-here"]
    assert bad["status"] == "rejected" and "expected url<TAB>query" in bad["reason"]
    # Only content-hash named, complete files; nothing outside the results; no temp files.
    files = files_under(ws / "web" / "crawl")
    assert files and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in files)
    assert len(files) == len({r["path"] for r in m.rows if r["status"] == "ok"})
    assert not (tmp_path / "tmp").exists() and not (ws / "tmp" / "download-crawl").exists()
    others = {p.relative_to(ws).as_posix() for p in files_under(ws) if p not in files}
    assert others == {"web/crawl.journal.jsonl", "web/crawl.lock", "manifests/web_crawl.parquet"}


def test_rerun_skips_finished_and_keeps_later_columns(server, tmp_path):
    b = server.base
    for i in range(4):
        server.routes[f"/{i}.png"] = serve(png_bytes(10 + i), "image/png")
    server.routes["/bad"] = status(500)
    urls = write_list(tmp_path / "u.tsv", [(f"{b}/{i}.png", "q") for i in range(4)] + [(f"{b}/bad", "q")])
    ws = tmp_path / "ws"
    opts = DownloadOptions(**dict(FAST, retries=0))
    out = download([urls], ws, "s", opts, progress=False)
    first = read_manifest(out).rows
    count = server.count
    download([urls], ws, "s", opts, progress=False)
    assert server.count == count  # nothing fetched again
    assert read_manifest(out).rows == first
    # A later stage marks a row; re-running the download (with a new URL) keeps the mark.
    m = read_manifest(out)
    m.rows[0].update(status="corrupt", reason="validate said so")
    from omnisource.data.manifest import write_manifest
    write_manifest(m, out)
    server.routes["/new.png"] = serve(png_bytes(20), "image/png")
    urls2 = write_list(tmp_path / "u2.tsv", [(f"{b}/new.png", "q2"), (f"{b}/0.png", "extra")])
    download([urls, urls2], ws, "s", opts, progress=False)
    rows = read_manifest(out).rows
    assert len(rows) == 6 and server.count == count + 1
    assert rows[0]["status"] == "corrupt" and rows[0]["weak_labels"] == ["q", "extra"]
    # retry_failed tries the 500 again, and only it.
    server.routes["/bad"] = serve(png_bytes(21), "image/png")
    download([urls], ws, "s", DownloadOptions(**dict(FAST, retries=0, retry_failed=True)), progress=False)
    assert server.count == count + 2
    assert {r["url"]: r["status"] for r in read_manifest(out).rows}[f"{b}/bad"] == "ok"


def test_private_addresses_refused_on_request(server, tmp_path):
    server.routes["/x.png"] = serve(png_bytes(0), "image/png")
    urls = write_list(tmp_path / "u.tsv", [(f"{server.base}/x.png", "q")])
    out = download([urls], tmp_path / "ws", "p", DownloadOptions(**dict(FAST, allow_private=False)), progress=False)
    (row,) = read_manifest(out).rows
    assert row["status"] == "rejected" and "non-public address 127.0.0.1" in row["reason"]
    assert server.count == 0


def test_url_list_formats(tmp_path):
    (tmp_path / "a.csv").write_text("id,url,query\n1,http://h/x.jpg,golf\n2,,golf\n3,http://h/y.jpg,\n")
    rows = read_url_list(tmp_path / "a.csv")
    assert rows[0]["url"] == "http://h/x.jpg" and rows[0]["queries"] == ["golf"] and not rows[0]["error"]
    assert rows[1]["error"] and rows[2]["error"]
    (tmp_path / "b.csv").write_text("http://h/x.jpg,golf\n")
    assert read_url_list(tmp_path / "b.csv")[0]["queries"] == ["golf"]
    (tmp_path / "c.csv").write_text("link,label\nhttp://h/x.jpg,golf\n")
    # no `url` column: read as header-less url,query; the header line becomes a URL the download rejects
    assert [r["url"] for r in read_url_list(tmp_path / "c.csv")] == ["link", "http://h/x.jpg"]
    (tmp_path / "d.tsv").write_text("# comment\n\nhttp://h/x.jpg\tpole vault\n")
    assert read_url_list(tmp_path / "d.tsv") == [
        {"url": "http://h/x.jpg", "queries": ["pole vault"], "line": "d.tsv:3", "error": ""}]
    with pytest.raises(ValueError, match="source name"):
        dl.check_source_name("../up")


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from omnisource.collect.download import DownloadOptions, download
    download([sys.argv[1]], sys.argv[2], "kill", DownloadOptions(workers=2, per_host=2, retries=0,
             allow_private=True), progress=False)
""")


def test_kill_and_resume_equals_uninterrupted_run(server, tmp_path):
    b, n = server.base, 14
    for i in range(n):
        server.routes[f"/k{i}.png"] = serve(png_bytes(100 + i, (40 + i, 30)), "image/png", delay=0.25)
    server.routes["/k-missing"] = status(404)
    urls = write_list(tmp_path / "u.tsv", [(f"{b}/k{i}.png", f"q{i % 3}") for i in range(n)] +
                      [(f"{b}/k-missing", "q0")])
    ws = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(dl.__file__).parents[2])] +
                                                      os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(urls), str(ws)], env=env)
    journal = ws / "web" / "kill.journal.jsonl"
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the download finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    finished = journal.read_text().count("\n")
    assert 4 <= finished < n + 1
    assert not (ws / "manifests" / "web_kill.parquet").exists()
    # Whatever the kill left, the results folder holds only complete, correctly named files.
    for p in files_under(ws / "web" / "kill"):
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
    before = server.count
    out = download([urls], ws, "kill", DownloadOptions(workers=2, per_host=2, retries=0, allow_private=True),
                   progress=False)
    refetched = server.count - before
    assert refetched <= n + 1 - finished + 2  # finished URLs are not fetched again (2 were in flight)
    ref = download([urls], tmp_path / "clean", "kill", DownloadOptions(workers=2, per_host=2, retries=0,
                                                                       allow_private=True), progress=False)

    def norm(rows, root):
        return [dict(r, path=r["path"].replace(str(root), "<ws>")) for r in rows]

    assert norm(read_manifest(out).rows, ws) == norm(read_manifest(ref).rows, tmp_path / "clean")
    assert not list(ws.rglob("*.part")) and not (ws / "tmp" / "download-kill").exists()
    files = files_under(ws / "web" / "kill")
    assert len(files) == n and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in files)


def test_cli_download_and_one_line_errors(server, tmp_path):
    from typer.testing import CliRunner

    from omnisource.cli import app

    server.routes["/c.png"] = serve(png_bytes(5), "image/png")
    urls = write_list(tmp_path / "list.tsv", [(f"{server.base}/c.png", "golf")])
    ws = tmp_path / "ws"
    res = CliRunner().invoke(app, ["download", str(urls), "-w", str(ws), "--source", "cli", "--workers", "2",
                                   "--read-timeout", "2", "--max-size", "1MB", "--allow-private"])
    assert res.exit_code == 0, res.output
    assert read_manifest(ws / "manifests" / "web_cli.parquet").rows[0]["status"] == "ok"
    res = CliRunner().invoke(app, ["download", str(tmp_path / "missing.tsv"), "-w", str(ws)])
    assert res.exit_code == 2 and "URL list not found" in res.output
    res = CliRunner().invoke(app, ["download", str(urls), "-w", str(ws), "--max-size", "lots"])
    assert res.exit_code == 2 and "size" in res.output
