"""Video decoding behind `media.read_frames`: containers, the PyAV forward decoder, torchcodec.

Why it looks the way it does (docs/concepts.md and docs/benchmarks.md, measured on 2 cores):
- seeking per frame collapses to ~6 fps on long-GOP files, so a clip is decoded forward once, with
  one decoder thread (loader workers supply the parallelism), seeking only when a keyframe lies
  between the current position and the next wanted frame;
- a TSN clip of a long-GOP file costs about one whole-video decode, so the decoder also skips the
  non-reference frames it is not asked for (`skip_frame=NONREF` per packet; no other frame depends
  on them), once the file's timestamps have proven to index frames exactly;
- converting a frame with a fresh swscale context costs ~10x the conversion itself, so one
  `VideoReformatter` per process converts (and, when asked, resizes) the wanted frames.

Frame index i = the i-th frame a sequential decode yields (as in torchcodec and decord), not a pts.
"""
from __future__ import annotations

import bisect
import logging
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav", "torchcodec")
MAX_PIXELS = 4096 * 4096  # decompression-bomb guard
SEEK_MIN_GAP = 16  # frames: seeking flushes the decoder, worth it only past this many skipped frames
BLIND_SEEK_S = 5.0  # seconds: gap that justifies a seek when the index shows no keyframes
SKIP_VERIFY = 8  # frames whose pts must match their count before non-reference frames are skipped
# Container signatures: a file starting like this that fails to open is truncated, not "not media".
_MAGIC = {4: (b"ftyp",), 0: (b"RIFF", b"\x1aE\xdf\xa3", b"OggS", b"FLV", b"\x00\x00\x01\xba", b"GIF8")}
# What broken video files raise from FFmpeg; anything else is a programmer error and propagates.
BAD_VIDEO_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, struct.error, IndexError, KeyError,
                    ZeroDivisionError, MemoryError, RuntimeError)


class MediaError(Exception):
    """A file that cannot be used; the message is a one-line human reason."""


@dataclass
class MediaInfo:
    kind: str  # "video" | "image" | "frames"
    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    exact: bool = True  # False when num_frames is a duration x fps estimate


# ----------------------------------------------------------------------------- back-end choice
_default_backend = "auto"  # this process's `media.backend`; forked loader workers inherit it
_announced: set = set()
# The optional torchcodec back-end, imported when first asked for: the import costs seconds (it
# loads torch and FFmpeg's libraries), which every command that decodes with PyAV would pay.
_TorchcodecDecoder = None
_TORCHCODEC_ERROR: str | None = None  # None: not tried yet; "": imported


def torchcodec_decoder():
    """torchcodec's VideoDecoder class, or None where it does not import (the reason is then
    in `_TORCHCODEC_ERROR`); any failure at import time just means "not available"."""
    global _TorchcodecDecoder, _TORCHCODEC_ERROR
    if _TORCHCODEC_ERROR is None:
        try:
            from torchcodec.decoders import VideoDecoder
            _TorchcodecDecoder, _TORCHCODEC_ERROR = VideoDecoder, ""
        except Exception as err:  # noqa: BLE001 - ImportError, missing libav*, ABI mismatch with torch, ...
            msg = str(err).splitlines()[0] if str(err) else ""
            _TorchcodecDecoder, _TORCHCODEC_ERROR = None, f"{type(err).__name__}: {msg}"[:200]
    return _TorchcodecDecoder


def set_backend(name: str) -> None:
    """Make `name` what `read_frames` uses when not told (the CLI applies `media.backend` here);
    an explicit choice that cannot be honoured fails now, in one line."""
    global _default_backend
    _check_backend(name)
    _default_backend = name


def _check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"media.backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "torchcodec" and torchcodec_decoder() is None:
        raise ValueError(f"media.backend=torchcodec: torchcodec does not import here ({_TORCHCODEC_ERROR}); "
                         "install the torchcodec extra and system FFmpeg, or set media.backend=pyav")


def resolve_backend(requested: str | None = None) -> str:
    """The decoder that `requested` (None: this process's default) selects, logged once per process.

    "auto" is PyAV: with non-reference skipping it decodes TSN clips faster than torchcodec here
    (docs/benchmarks.md), bundles its FFmpeg and copes with every container. An explicit
    "torchcodec" that does not import is an error, never a silent switch. Validation and
    `prepare` always decode with PyAV, the reference for frame indices."""
    requested = requested or _default_backend
    _check_backend(requested)
    chosen = "torchcodec" if requested == "torchcodec" else "pyav"
    if requested not in _announced:
        _announced.add(requested)
        log.info("video decoding: %s (media.backend=%s)", chosen, requested)
    return chosen


# ----------------------------------------------------------------------------- containers
def check_file(path: Path) -> Path:
    if not path.is_file():
        raise MediaError("is a directory, not a file" if path.is_dir() else "missing file")
    if path.stat().st_size == 0:
        raise MediaError("zero-byte file")
    return path


@contextmanager
def open_video(path: Path) -> Iterator[tuple]:
    """Open the first video stream, translating FFmpeg failures into MediaError reasons."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        with open(path, "rb") as f:
            head = f.read(12)
        if any(head[off:off + len(m)] == m for off, ms in _MAGIC.items() for m in ms):
            raise MediaError(f"truncated or corrupt container: {e.strerror or e}") from None
        raise MediaError("not a media file") from None
    try:
        if not container.streams.video:
            if container.streams.audio:
                raise MediaError("audio only: no video stream")
            raise MediaError("not a media file: no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def video_info(container, stream) -> MediaInfo:
    """`num_frames` is the container's count (`stream.frames`, exact for MP4/AVI) or else
    `duration * fps` (exact=False: Matroska/WebM, where an audio track can stretch the duration)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = container.duration / av.time_base if container.duration else 0.0
    exact = bool(stream.frames and stream.frames > 0)
    n = stream.frames if exact else int(round(duration * fps))
    cc = stream.codec_context
    return MediaInfo("video", int(n), fps, duration, int(cc.width or 0), int(cc.height or 0), exact)


def check_size(info: MediaInfo, max_pixels: int | None, min_size: int = 0) -> None:
    w, h = info.width, info.height
    if max_pixels and w * h > max_pixels:
        raise MediaError(f"decompression bomb: {w}x{h} exceeds max_pixels={max_pixels}")
    if min(w, h) < min_size:
        raise MediaError(f"too small: {w}x{h} is below min_size={min_size}")


def short_side_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` (None: unchanged), aspect kept."""
    if not short_side or min(width, height) == short_side:
        return width, height
    if height <= width:
        return max(1, round(width * short_side / height)), short_side
    return short_side, max(1, round(height * short_side / width))


# ----------------------------------------------------------------------------- conversion
_reformatters: dict[int, VideoReformatter] = {}


def reformat(frame: "av.VideoFrame", size: tuple[int, int] | None, format: str,
             interpolation: str = "BILINEAR") -> "av.VideoFrame":
    """frame converted to `format` and size=(width, height) (None: its own) in one swscale pass.
    One reformatter per process keeps its swscale context across frames and files of the same
    geometry; `frame.reformat` builds a new one per call, ~10x the cost of a small conversion."""
    fmt = _reformatters.get(os.getpid())
    if fmt is None:  # a forked worker builds its own
        fmt = _reformatters[os.getpid()] = VideoReformatter()
    w, h = size or (frame.width, frame.height)
    return fmt.reformat(frame, width=w, height=h, format=format, interpolation=interpolation)


def resize_frame(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """One (H, W, C) image to (height, width): bilinear, or the area filter when shrinking more
    than 2x (bilinear would alias there; INTER_AREA costs ~4x more, so only then)."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    interp = cv2.INTER_AREA if 2 * height < h or 2 * width < w else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp).reshape(height, width, *img.shape[2:])


def to_rgb(frame: "av.VideoFrame", size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB at size=(width, height) (None: its own), with `resize_frame`'s filters.
    Shrinking more than 2x happens inside the colour conversion (swscale's area filter: 4-7x
    cheaper than converting at full size and then INTER_AREA); gentler resizes convert first and
    then use cv2's bilinear, which beats swscale's scaled path (docs/benchmarks.md)."""
    if size is not None and (2 * size[1] < frame.height or 2 * size[0] < frame.width):
        return reformat(frame, size, "rgb24", "AREA").to_ndarray()
    rgb = reformat(frame, None, "rgb24").to_ndarray()
    return rgb if size is None else resize_frame(rgb, *size)


# ----------------------------------------------------------------------------- PyAV
def decode_pyav(path: str | Path, wanted: Sequence[int], max_pixels: int | None = MAX_PIXELS,
                stats: dict | None = None, short_side: int | None = None,
                skip_nonref: bool = True) -> tuple[dict[int, np.ndarray], int]:
    """Decode forward once: ({wanted index: RGB frame}, index of the last decoded frame). Seeks
    only to a keyframe more than SEEK_MIN_GAP frames ahead; skips unwanted non-reference frames
    (skip_nonref); `stats` gets "seeks", "decoded" and "skipped" (frames never decoded)."""
    stats = stats if stats is not None else {}
    stats.update(seeks=0, decoded=0, skipped=0)
    with decoder(Path(path), max_pixels) as dec:
        size = short_side_size(dec.info.width, dec.info.height, short_side) if short_side else None
        return dec.collect(sorted({int(i) for i in wanted}), stats, size, skip_nonref)


@contextmanager
def decoder(path: Path, max_pixels) -> Iterator["ForwardDecoder"]:
    """A ForwardDecoder on the first video stream; one decoder thread (workers parallelise)."""
    with open_video(check_file(path)) as (container, stream):
        info = video_info(container, stream)
        check_size(info, max_pixels)
        stream.codec_context.thread_count = 1
        dec = ForwardDecoder(container, stream, info)
        try:
            yield dec
        except BAD_VIDEO_ERRORS as e:
            raise MediaError(f"decode error: {e}") from None
        finally:
            dec.close()


def iter_video(path: str | Path, start: int = 0, stop: int | None = None,
               max_pixels: int | None = MAX_PIXELS) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """(index, av.VideoFrame) for frames start..stop-1 in order, seeking once to the keyframe before
    `start` when one exists (for re-encoding spans of long videos). Same indices as read_frames."""
    with decoder(Path(path), max_pixels) as dec:
        dec.maybe_seek(start)
        while True:
            idx, frame = dec.next()
            if frame is None or (stop is not None and idx >= stop):
                break
            if idx >= start:
                yield idx, frame
        if dec.pos < 0:
            raise MediaError(f"truncated: {dec.error or 'no decodable frames'}")


class ForwardDecoder:
    """Forward decoding with rare seeks: to the keyframe before a target when the demuxer index
    shows one more than SEEK_MIN_GAP frames ahead, or blindly (no usable index, e.g. Matroska
    before its cues are read) when the gap exceeds BLIND_SEEK_S seconds.

    Frame index = number of frames decoded before it (what `stream.frames` counts and what a
    sequential decode yields). pts are trusted only once they agree with that count (up to a
    constant offset): packed B-frames in AVI scramble them. Skipping non-reference frames breaks
    the count, so it starts only after SKIP_VERIFY frames agreed, and then every packet's pts must
    fall on the frame grid with no gap or repeat; the first that does not restarts the decode
    from the top without skipping."""

    def __init__(self, container, stream, info: MediaInfo):
        self.container, self.stream, self.info = container, stream, info
        self.start = stream.start_time or 0
        rate = float(stream.time_base * info.fps) if stream.time_base and info.fps > 0 else 0.0
        self.tb_fps, self.num_frames, self.fps = rate, info.num_frames, info.fps
        self.keyframes = None  # ([sorted indices], {dts: index}), read once a long gap appears
        self.can_seek, self.last_seek, self.seek_target = rate > 0, -1, None
        self.pos, self.agree, self.pts_bad, self.offset, self.error = -1, 0, False, None, None
        # non-reference skipping: wanted set (None = off), pts seen (on the grid, minus offset)
        self.want, self.seen, self.skipping, self.skip_failed, self.skipped = None, set(), False, False, 0
        self._restart(seek=False)

    def collect(self, wanted: list[int], stats: dict, size=None,
                skip_nonref: bool = True) -> tuple[dict[int, np.ndarray], int]:
        """RGB frames (resized to size=(w, h)) for sorted unique `wanted`; a target skipped over
        (pts gap) takes the frame shown at that time, targets past the end the last decodable one."""
        end = self.num_frames - 1
        if skip_nonref and self.info.exact and self.tb_fps > 0:
            self.want = frozenset(min(w, end) for w in wanted)  # past the end: the last frame stands in
        got, rgb, prev, k = {}, {}, None, 0
        while k < len(wanted):
            if self.maybe_seek(wanted[k]):
                prev, stats["seeks"] = None, stats["seeks"] + 1
            idx, frame = self.next()
            if frame is None:
                if self.skip_mode and self.pos < end:  # ended before the announced end: in full
                    self._fail_skip()
                    prev = None
                    continue
                break
            stats["decoded"] += 1
            if idx < 0:  # a seek or a skip went wrong: restarted from the top
                prev = None
                continue
            while k < len(wanted) and wanted[k] <= idx:
                src_idx, src = (idx, frame) if (wanted[k] == idx or prev is None) else prev
                if src_idx not in rgb:
                    rgb[src_idx] = to_rgb(src, size)
                got[wanted[k]], k = rgb[src_idx], k + 1
            prev = (idx, frame)
        stats["skipped"] += self.skipped
        if not got and prev is None:
            raise MediaError(f"truncated: corrupt data: {self.error}" if self.error
                             else "truncated: no decodable frames")
        if k < len(wanted):
            last = to_rgb(prev[1], size) if prev is not None else rgb[max(rgb)]
            got.update({t: last for t in wanted[k:]})
        return got, self.pos

    def _restart(self, seek: bool = True) -> None:
        if seek:
            self.container.seek(self.start, stream=self.stream, backward=True)
        self._new_frames()
        self.pos, self.seek_target = -1, None

    def _new_frames(self) -> None:
        self.close()
        self.frames, self.first_dts, self.skip_mode = self._demux(), None, False

    def close(self) -> None:
        """Finish the demux generator while the container is open: left to the garbage collector
        it would run after container.close() (crashes, or hangs forked DataLoader workers)."""
        if getattr(self, "frames", None) is not None:
            self.frames.close()
            self.frames = None

    def _grid(self, pts) -> int | None:
        """The frame index pts shows on the stream's frame grid (before the pts/count offset),
        None when it falls between grid points (variable frame rate)."""
        x = (pts - self.start) * self.tb_fps
        i = round(x)
        return i if abs(x - i) < 0.25 else None

    def _can_skip(self) -> bool:
        return (self.agree >= SKIP_VERIFY and self.offset is not None and self.seek_target is None
                and not self.pts_bad and not self.skip_failed and self.want is not None)

    def _demux(self):
        cc, want = self.stream.codec_context, self.want
        for packet in self.container.demux(self.stream):
            if self.first_dts is None and packet.size:
                self.first_dts = (packet.dts,)
            skip = False
            if want is not None and packet.pts is not None and not packet.is_discard:
                i = self._grid(packet.pts)
                if i is not None:
                    self.seen.add(i)
                    skip = i - (self.offset or 0) not in want and self._can_skip()
            if skip != self.skipping:
                cc.skip_frame, self.skipping = ("NONREF" if skip else "DEFAULT"), skip
            self.skip_mode = self.skip_mode or skip
            yield from packet.decode()

    def _fail_skip(self) -> None:
        """Timestamps cannot index frames once some are skipped: decode again from the top in full."""
        self.skip_failed = True
        if self.skipping:
            self.stream.codec_context.skip_frame, self.skipping = "DEFAULT", False
        self.can_seek = False
        self._restart()

    def maybe_seek(self, target: int) -> bool:
        gap = target - self.pos
        if not self.can_seek or gap <= SEEK_MIN_GAP:
            return False
        self.keyframes = self.keyframes or _keyframes(self.stream, self.num_frames, self.start, self.tb_fps)
        positions = self.keyframes[0]
        kf = positions[bisect.bisect_right(positions, target) - 1] if positions else -1
        if len(positions) < 2:  # no usable index: blind seek on long gaps only
            kf = target if gap > BLIND_SEEK_S * self.fps else -1
        if kf <= self.pos + SEEK_MIN_GAP or kf <= self.last_seek:  # never the same place twice
            return False
        try:  # by pts (what FFmpeg's demuxers compare against), landing on the keyframe <= kf
            self.container.seek(int(round(self.start + kf / self.tb_fps)), stream=self.stream,
                                backward=True)
        except av.FFmpegError:  # e.g. EPERM past the end: keep decoding forward
            self.can_seek = False
            return False
        self._new_frames()
        self.last_seek, self.seek_target = kf, target
        return True

    def next(self):
        """(index, frame); (None, None) at the end; index -1 after restarting from the top."""
        try:
            frame = next(self.frames, None)
        except av.FFmpegError as e:  # corrupt data mid-stream: keep what decoded so far
            frame, self.error = None, e
        if frame is None:
            return None, None
        if self.skip_mode and self.seek_target is None:  # frames may be skipped: only pts index
            grid = self._grid(frame.pts) if frame.pts is not None else None
            idx = None if grid is None else grid - self.offset
            if idx is None or idx <= self.pos or (idx > self.pos + 1 and not all(
                    j + self.offset in self.seen for j in range(self.pos + 1, idx))):
                self._fail_skip()  # off the grid, backwards, or a gap no packet fills
                return -1, frame
            self.skipped += idx - self.pos - 1
            self.pos = idx
            return idx, frame
        pts_idx = None
        if frame.pts is not None and self.tb_fps:
            pts_idx = int(round((frame.pts - self.start) * self.tb_fps))
        if self.seek_target is None:
            idx = self.pos + 1
            if pts_idx is not None:  # pts may sit a constant offset from the count (AVI + B-frames)
                self.offset = pts_idx - idx if self.offset is None else self.offset
                self.agree, self.pts_bad = self.agree + 1, self.pts_bad or pts_idx - idx != self.offset
        else:
            pts_idx = None if pts_idx is None else pts_idx - (self.offset or 0)
            idx = self._landed(pts_idx)
            if idx is None or idx > self.seek_target:  # unsure or overshot: decode from the top
                self.can_seek = False
                self._restart()
                return -1, frame
            self.seek_target = None
        self.pos = idx
        return idx, frame

    def _landed(self, pts_idx: int | None) -> int | None:
        """Index of the first frame after a seek: the keyframe's position in the index (exact for
        closed GOPs) checked against pts (exact for open GOPs when pts are sane)."""
        kf_pos = self.keyframes[1].get(self.first_dts[0]) if self.first_dts else None
        if pts_idx is None or kf_pos == pts_idx:
            return kf_pos
        if kf_pos is None:
            return None if self.pts_bad else pts_idx
        if self.pts_bad:
            return kf_pos
        return pts_idx if self.agree >= 2 else None


def _keyframes(stream, num_frames: int, start: int, tb_fps: float) -> tuple[list[int], dict]:
    """Keyframe indices from the demuxer index, and {dts: index} to recognise where a seek landed.
    When every packet is indexed (MP4, AVI), a closed-GOP keyframe's display index is its position
    in decode order, exact even with B-frames; a sparse index (Matroska cues) is read by timestamp."""
    try:
        entries = [e for e in stream.index_entries if not e.is_discard]
    except Exception:  # noqa: BLE001 - older PyAV without index_entries: no seeking
        entries = []
    full = num_frames > 0 and len(entries) >= 0.9 * num_frames
    by_dts = {e.timestamp: pos if full else max(int(round((e.timestamp - start) * tb_fps)), 0)
              for pos, e in enumerate(entries) if e.is_keyframe}
    return sorted(set(by_dts.values())), by_dts


# ----------------------------------------------------------------------------- torchcodec
def decode_torchcodec(path: Path, uniq: np.ndarray, max_pixels, short_side: int | None,
                      strict: bool) -> np.ndarray | None:
    """(len(uniq), H, W, 3) uint8 through torchcodec's exact-seek decoder, or None when it fails
    on this file and not `strict` (PyAV then decodes it)."""
    try:
        dec = torchcodec_decoder()(str(path), dimension_order="NHWC", num_ffmpeg_threads=1)
        meta = dec.metadata
        check_size(MediaInfo("video", len(dec), 0.0, 0.0, meta.width, meta.height), max_pixels)
        if len(dec) == 0:  # PyAV says why
            if strict:
                raise MediaError("truncated: no decodable frames")
            return None
        frames = dec.get_frames_at(indices=np.minimum(uniq, len(dec) - 1).tolist()).data.numpy()
    except MediaError:
        raise
    except Exception as e:  # noqa: BLE001 - torchcodec failed on this file
        if strict:
            raise MediaError(f"decode error (torchcodec): {type(e).__name__}: {str(e).splitlines()[0]}") from None
        return None
    w, h = short_side_size(meta.width, meta.height, short_side)
    if (w, h) == (meta.width, meta.height):
        return frames
    return np.stack([resize_frame(f, w, h) for f in frames])
