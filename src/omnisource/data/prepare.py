"""Re-encode manifest media once into a training-friendly form (validation: ``clean.validate``).

Why prepare (docs/concepts.md): on CPUs decoding, not the model, is the bottleneck (~5 clips/s per core
at 360p). Re-encoding once to a short side of ~128 px with a keyframe every ~1 s (so the loader's
rare seeks land close to their target) or extracting JPEG frames pays for itself on any dataset used
for more than one epoch. Outputs are written under a temporary name and renamed into place, so an
existing output is always complete: a killed run resumes where it stopped.

Files are prepared in parallel, one single-threaded process per core by default (`workers`):
a file's decode and encode are serial chains that one thread each keeps busy, so processes scale
where x264's own threads at this size do not (docs/benchmarks.md).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

import av
import cv2

from . import media
from .convert import reformat

MODES = ("reencode", "frames")
JPEG_QUALITY = 90
# CAVLC instead of CABAC: lossless entropy coding either way (the same pictures), ~4 % larger
# files that decode ~1.3x faster at 128 px; deblocking stays on. No B-pyramid: no B-frame is a
# reference, so the loader skips every unwanted one (same file size; clips 1.03-1.17x per CPU
# second in the side-by-side harness runs, docs/benchmarks.md).
X264 = {"crf": "23", "preset": "veryfast", "x264-params": "cabac=0:b-pyramid=none"}
SETTINGS_FILE = "prepare.json"


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Even (width, height) with the short side at `short_side`; never upscales (x264's yuv420p
    needs even sides)."""
    scale = min(1.0, short_side / max(1, min(width, height)))
    return _even(width * scale), _even(height * scale)


def _out_rate(info: media.MediaInfo, fps: float | None) -> Fraction:
    rate = fps or info.fps or 25.0
    return Fraction(rate).limit_denominator(1001)


def _resampled(src: Path, info: media.MediaInfo, start_s, end_s, out_rate: Fraction):
    """av.VideoFrames of the row's span (whole file if unset) at out_rate: input frame k covers
    [k/in, (k+1)/in) s and output frame j shows the input frame at j/out s (duplicates or drops;
    timing by frame count, the convention of media.read_frames)."""
    first, stop = 0, None
    if start_s is not None or end_s is not None:
        first, num = media.frame_window(info, start_s, end_s)
        stop = first + num
    in_rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else out_rate
    j = 0
    for idx, frame in media.iter_video(src, first, stop):
        while j * in_rate < (idx - first + 1) * out_rate:  # j/out < (k+1)/in
            yield frame
            j += 1


def _tmp_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.tmp")


def _remove_stale_tmp(out_dir: Path) -> None:
    """Temporary outputs left by a killed run (their process is gone); a live run keeps its own."""
    for tmp in out_dir.rglob(".*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)
            continue  # still running
        except (ValueError, IndexError, ProcessLookupError):
            pass
        except PermissionError:  # alive, someone else's
            continue
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def reencode(src, dst, short_side: int = 128, gop_seconds: float = 1.0, fps: float | None = None,
             start_s=None, end_s=None, threads: int = 1, x264: dict | None = None) -> media.MediaInfo:
    """H.264 yuv420p MP4 (x264 options `x264`, None: X264; keyframe every gop_seconds), written
    atomically."""
    src, dst = Path(src), Path(dst)
    tmp = _tmp_path(dst)
    info = media.probe(src, "video")
    out_rate = _out_rate(info, fps)
    dst.parent.mkdir(parents=True, exist_ok=True)
    n, size = 0, None
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = None
            for frame in _resampled(src, info, start_s, end_s, out_rate):
                if stream is None:
                    size = output_size(frame.width, frame.height, short_side)
                    stream = _add_h264(out, out_rate, size, gop_seconds, threads, x264)
                small = reformat(frame, size, "yuv420p", "AREA")
                small.pts, small.time_base = n, 1 / out_rate
                out.mux(stream.encode(small))
                n += 1
            if stream is None:
                raise media.MediaError("truncated: no decodable frames")
            out.mux(stream.encode(None))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return media.MediaInfo("video", n, float(out_rate), n / float(out_rate), size[0], size[1])


def _add_h264(out, rate: Fraction, size: tuple[int, int], gop_seconds: float, threads: int, x264: dict | None):
    stream = out.add_stream("libx264", rate=rate, options={"threads": str(threads), **(X264 if x264 is None else x264)})
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = 1 / rate
    stream.codec_context.gop_size = max(1, int(round(gop_seconds * rate)))
    return stream


def extract_frames(src, dst, short_side: int = 128, fps: float | None = None, start_s=None,
                   end_s=None) -> media.MediaInfo:
    """JPEG frames dst/img_00001.jpg ...; the folder is renamed into place when complete."""
    src, dst = Path(src), Path(dst)
    tmp = _tmp_path(dst)
    info = media.probe(src, "video")
    out_rate = _out_rate(info, fps)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, size = 0, (0, 0)
    try:
        for frame in _resampled(src, info, start_s, end_s, out_rate):
            size = output_size(frame.width, frame.height, short_side)
            bgr = reformat(frame, size, "bgr24", "AREA").to_ndarray()
            n += 1
            cv2.imwrite(str(tmp / f"img_{n:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if n == 0:
            raise media.MediaError("truncated: no decodable frames")
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return media.MediaInfo("frames", n, float(out_rate), n / float(out_rate), size[0], size[1])


def output_path(out_dir, row: dict, mode: str) -> Path:
    rid = str(row["id"])
    return Path(out_dir) / rid if mode == "frames" else Path(out_dir) / rid[:2] / f"{rid}.mp4"


def _time(x) -> float | None:
    """start_s / end_s as float, None when unset (None or NaN from a dataframe)."""
    return None if x is None or x != x else float(x)


def _prepare_one(job: tuple) -> dict:
    """One row -> its prepared row (top level, so spawn-started pool workers can import it)."""
    row, out_dir, short_side, gop_seconds, fps, mode, threads, x264 = job
    dst = output_path(out_dir, row, mode)
    if Path(row["path"]) == dst:  # a row of an already prepared manifest
        return dict(row)
    new = dict(row, orig_path=row["path"])
    start_s, end_s = _time(row.get("start_s")), _time(row.get("end_s"))
    try:
        if dst.exists():  # done by an earlier run (outputs appear only when complete)
            info = media.probe(dst, "frames" if mode == "frames" else "video")
            if mode == "frames":  # a frame folder keeps no rate: recompute it from the source
                info.fps = float(_out_rate(media.probe(row["path"], "video"), fps))
        elif mode == "frames":
            info = extract_frames(row["path"], dst, short_side, fps, start_s, end_s)
        else:
            info = reencode(row["path"], dst, short_side, gop_seconds, fps, start_s, end_s, threads, x264)
    except media.MediaError as e:
        return dict(row, status="corrupt", reason=str(e))
    except Exception as e:  # noqa: BLE001 - one bad file must not stop a long run
        return dict(row, status="corrupt", reason=f"prepare failed: {type(e).__name__}: {e}")
    if start_s is not None or end_s is not None:  # the output is the span
        new.update(orig_start_s=row.get("start_s"), orig_end_s=row.get("end_s"), start_s=None, end_s=None)
    new.update(path=str(dst), kind=info.kind, num_frames=int(info.num_frames), fps=float(info.fps),
               width=int(info.width), height=int(info.height))
    return new


def _single_threaded() -> None:
    cv2.setNumThreads(1)  # a decoding process: the pool itself runs one per core


def _run(fn: Callable, jobs: list, workers: int, progress: bool | None, label: str, unit: str = "files",
         engine=None) -> Iterable:
    """fn over jobs in order, in a spawn pool when workers > 1 (or as a Ray Data pipeline with
    ``engine``, distributed.ray.RayOptions), reporting progress (None: as True)."""
    from ..progress import Progress

    def results():
        if engine is not None:
            from ..distributed.ray import map_jobs

            yield from map_jobs(fn, jobs, engine)
        elif workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_single_threaded) as pool:
                yield from pool.imap(fn, jobs, chunksize=1)
        else:
            yield from map(fn, jobs)

    with Progress(label, len(jobs), unit, progress is not False) as bar:
        for res in results():
            bar.advance()
            yield res


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prepare_media(rows: list[dict], out_dir, short_side: int = 128, gop_seconds: float = 1.0,
                  fps: float | None = None, mode: str = "reencode", workers: int = 0,
                  progress: bool | None = True, x264: dict | None = None) -> list[dict]:
    """Re-encode (mode="reencode": out_dir/<id[:2]>/<id>.mp4) or extract frames (mode="frames":
    out_dir/<id>/img_00001.jpg, kind becomes "frames") for every ok video row; resumable (finished
    files are kept and reused). workers: processes, 0 = all cores. progress: see `_run`. x264:
    libx264 options of "reencode" (None: X264), recorded with the other settings in out_dir.

    New rows keep the original path in `orig_path` and gain num_frames/fps/width/height of the
    output. A row with start_s/end_s gets only that span (its original bounds move to
    orig_start_s/orig_end_s and start_s/end_s become None). Rows that fail become status="corrupt"
    with the reason; images and non-ok rows pass through unchanged.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if workers < 0:
        raise ValueError(f"workers must be 0 (all cores) or more, got {workers}")
    if x264 is not None and mode != "reencode":
        raise ValueError(f"x264 options apply to mode='reencode' only, not {mode!r}")
    x264 = dict(X264 if x264 is None else x264)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, {"mode": mode, "short_side": short_side, "fps": fps, "jpeg_quality": JPEG_QUALITY}
                    if mode == "frames" else {"mode": mode, "short_side": short_side, "gop_seconds": gop_seconds,
                                              "fps": fps, "x264": x264})
    _remove_stale_tmp(out_dir)
    todo = [i for i, r in enumerate(rows) if r.get("status", "ok") == "ok" and r.get("kind") == "video"]
    jobs = [(rows[i], out_dir, short_side, gop_seconds, fps, mode, 1, x264) for i in todo]
    workers = workers or default_workers()
    out = [dict(r) for r in rows]
    for i, new in zip(todo, _run(_prepare_one, jobs, workers, progress, f"prepare ({mode})", "videos")):
        out[i] = new
    return out


def _check_settings(out_dir: Path, settings: dict) -> None:
    """Files are reused only by a run with the same settings: the first run records them (a
    folder filled before settings were recorded keeps being reused as it is)."""
    path = out_dir / SETTINGS_FILE
    if not path.exists() and any(p.name != SETTINGS_FILE and not p.name.startswith(".") for p in out_dir.iterdir()):
        return
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if old != json.loads(json.dumps(settings)):
            raise ValueError(f"{out_dir} holds media prepared with other settings ({path.name}: {old}); "
                             f"use another folder or remove it to prepare with {settings}")
        return
    tmp = _tmp_path(path)
    tmp.write_text(json.dumps(settings, indent=1) + "\n")
    os.replace(tmp, path)

