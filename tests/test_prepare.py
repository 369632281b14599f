import os
from pathlib import Path

import av
import pytest

from media_factory import frame_number, write_image, write_video
from omnisource.data import media, prepare


def _row(rid, path, kind="video", **kw):
    return {"id": rid, "kind": kind, "path": str(path), "status": "ok", "reason": "", "start_s": None,
            "end_s": None, **kw}


@pytest.fixture()
def rows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return [
        _row("aa11", write_video(src / "a.mp4", 75, size=(64, 48), gop=250)),
        _row("bb22", write_video(src / "b.avi", 60, size=(48, 64), gop=250, codec="mpeg4")),
        _row("cc33", src / "broken.mp4"),
        _row("dd44", write_image(src / "i.png"), kind="image"),
        dict(_row("ee55", src / "gone.mp4"), status="duplicate"),
        _row("ff66", src / "a.mp4", start_s=1.0, end_s=2.0),
    ]


def _keyframes(path) -> list[int]:
    with av.open(str(path)) as c:
        return [i for i, e in enumerate(c.streams.video[0].index_entries) if e.is_keyframe]


def test_reencode(rows, tmp_path):
    out = prepare.prepare_media(rows, tmp_path / "out", short_side=32, gop_seconds=1.0, workers=1, progress=False)
    a, b, broken, image, dup, span = out
    assert a["path"] == str(tmp_path / "out" / "aa" / "aa11.mp4") and a["orig_path"] == rows[0]["path"]
    info = media.probe(a["path"])
    assert (info.width, info.height, info.num_frames) == (42, 32, 75)  # short side 32, even sides
    assert (a["width"], a["height"], a["num_frames"], a["fps"]) == (42, 32, 75, 25.0)
    assert _keyframes(a["path"])[:3] == [0, 25, 50]  # one keyframe per second
    frames = media.read_frames(a["path"], [0, 30, 74])
    assert [frame_number(f) for f in frames] == [0, 30, 74]
    assert (media.probe(b["path"]).width, media.probe(b["path"]).height) == (32, 42)
    assert broken["status"] == "corrupt" and "truncated" in broken["reason"]
    assert broken["path"] == rows[2]["path"]
    assert image == rows[3] and dup == rows[4]  # images and non-ok rows pass through
    assert span["num_frames"] == 25 and span["start_s"] is None and span["orig_start_s"] == 1.0
    assert frame_number(media.read_frames(span["path"], [0])[0]) == 25  # the span starts at 1 s
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_resumable_second_run_does_nothing(rows, tmp_path):
    first = prepare.prepare_media(rows, tmp_path / "out", short_side=32, workers=1, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.mp4")}
    assert len(mtimes) == 3
    second = prepare.prepare_media(rows, tmp_path / "out", short_side=32, workers=1, progress=True)
    assert second == first
    assert prepare.prepare_media(second, tmp_path / "out", short_side=32, workers=1, progress=False) == second
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.mp4")} == mtimes


def test_frames_mode_and_fps(rows, tmp_path):
    out = prepare.prepare_media(rows[:3], tmp_path / "fr", short_side=24, mode="frames", fps=10,
                                workers=1, progress=False)
    a = out[0]
    assert a["kind"] == "frames" and Path(a["path"]) == tmp_path / "fr" / "aa11"
    files = sorted(Path(a["path"]).iterdir())
    assert files[0].name == "img_00001.jpg" and len(files) == a["num_frames"] == 30  # 3 s at 10 fps
    assert a["fps"] == 10.0 and (a["width"], a["height"]) == (32, 24)
    assert [frame_number(f) for f in media.read_frames(a["path"], [0, 10, 29])] == [0, 25, 72]
    assert out[2]["status"] == "corrupt"
    again = prepare.prepare_media(rows[:3], tmp_path / "fr", short_side=24, mode="frames", fps=10,
                                  workers=1, progress=False)
    assert again == out


def test_workers_pool(rows, tmp_path):
    serial = prepare.prepare_media(rows[:3], tmp_path / "s", short_side=32, workers=1, progress=False)
    pooled = prepare.prepare_media(rows[:3], tmp_path / "p", short_side=32, workers=2, progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "path"} for r in rs]  # noqa: E731
    assert strip(pooled) == strip(serial)


def test_validate_rows(rows, tmp_path):
    from omnisource.clean.validate import Rules, validate_rows

    out = validate_rows(rows, Rules(min_size=8), progress=False)
    assert [r["status"] for r in out] == ["ok", "ok", "corrupt", "ok", "duplicate", "ok"]
    assert (out[0]["num_frames"], out[0]["fps"], out[0]["width"], out[0]["height"]) == (75, 25.0, 64, 48)
    assert out[3]["num_frames"] == 1 and out[3]["fps"] == 0.0
    assert out[2]["reason"] and out[4] == rows[4]


def test_bad_mode(rows, tmp_path):
    with pytest.raises(ValueError):
        prepare.prepare_media(rows, tmp_path, mode="gif")


def test_settings_recorded_and_other_settings_refused(rows, tmp_path):
    prepare.prepare_media(rows[:1], tmp_path / "out", short_side=32, workers=1, progress=False)
    assert '"short_side": 32' in (tmp_path / "out" / "prepare.json").read_text()
    with pytest.raises(ValueError, match="prepared with other settings"):
        prepare.prepare_media(rows[:1], tmp_path / "out", short_side=48, workers=1, progress=False)


def test_x264_options_are_used_recorded_and_checked(rows, tmp_path):
    """Other x264 options reach the encoder of the spawned workers and go into prepare.json; the
    folder is then refused to the default settings, and kept for the same options."""
    x264 = dict(prepare.X264, **{"x264-params": "cabac=0:bframes=0"})
    out = prepare.prepare_media(rows[:2], tmp_path / "out", short_side=32, workers=2, progress=False, x264=x264)
    for row in out:
        with av.open(row["path"]) as c:
            assert c.streams.video[0].codec_context.has_b_frames is False  # default x264 writes B-frames
            assert [frame_number(f) for f in media.read_frames(row["path"], [0, 30, 59])] == [0, 30, 59]
    assert '"x264-params": "cabac=0:bframes=0"' in (tmp_path / "out" / "prepare.json").read_text()
    with pytest.raises(ValueError, match="prepared with other settings"):
        prepare.prepare_media(rows[:2], tmp_path / "out", short_side=32, workers=1, progress=False)
    again = prepare.prepare_media(rows[:2], tmp_path / "out", short_side=32, workers=1, progress=False, x264=x264)
    assert again == out
    with pytest.raises(ValueError, match="mode='reencode' only"):
        prepare.prepare_media(rows[:1], tmp_path / "frames", mode="frames", x264=x264)


def test_stale_tmp_of_a_killed_run_removed_and_progress_lines(rows, tmp_path, capsys, monkeypatch):
    import omnisource.progress as P

    monkeypatch.setattr(P, "INTERVAL", 0.0)  # off a terminal every step prints a line
    out = tmp_path / "out"
    (out / "aa").mkdir(parents=True)
    stale = out / "aa" / ".aa11.mp4.999999999.tmp"  # no such process
    stale.write_bytes(b"partial")
    live = out / "aa" / f".bb22.mp4.{os.getpid()}.tmp"
    live.write_bytes(b"in progress")
    prepare.prepare_media(rows, out, short_side=32, workers=1, progress=None)  # no terminal: lines
    assert not stale.exists() and live.exists()
    printed = capsys.readouterr()
    assert "prepare (reencode): 4 videos in" in printed.out + printed.err  # a, b, the broken file, the span


def test_default_uses_all_cores_in_parallel(rows, tmp_path, monkeypatch):
    seen = []
    real = prepare._run
    monkeypatch.setattr(prepare, "_run", lambda fn, jobs, workers, *a: seen.append(workers) or real(fn, jobs, 1, *a))
    prepare.prepare_media(rows[:1], tmp_path / "out", short_side=32, progress=False)
    assert seen == [prepare.default_workers()] and seen[0] >= 1
    with pytest.raises(ValueError, match="workers"):
        prepare.prepare_media(rows[:1], tmp_path / "o2", workers=-1, progress=False)


def test_prepare_command_on_a_workspace(tmp_path):
    """`omnisource prepare --workers N`: the stage takes the worker count (not an input of its
    stamp: the output is the same) and records its settings beside the media."""
    from typer.testing import CliRunner

    from omnisource.cli import app
    from omnisource.data.manifest import read_manifest
    from omnisource.workspace import Workspace

    for cls in ("a", "b"):
        for k in range(2):
            write_video(tmp_path / "videos" / cls / f"{cls}{k}.mp4", 30, size=(64, 48))
    ws = tmp_path / "ws"
    runner = CliRunner()
    base = ["-w", str(ws), f"target.root={tmp_path / 'videos'}"]
    result = runner.invoke(app, ["import", *base])
    assert result.exit_code == 0, result.output
    for _ in range(2):  # the second run is up to date
        result = runner.invoke(app, ["prepare", *base[:2], "--workers", "1", "--short-side", "32"])
        assert result.exit_code == 0, result.output
    rows = read_manifest(Workspace(ws).target("prepared")).rows
    assert len(rows) == 4 and all(r["status"] == "ok" and r["height"] == 32 for r in rows)
    assert '"short_side": 32' in (Workspace(ws).media_dir / prepare.SETTINGS_FILE).read_text()
