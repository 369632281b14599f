"""Video containers for the decoders: opening a file's first video stream with one-line reasons
for what is wrong with it, its frame count, rate and size, and the size guards."""
from __future__ import annotations

import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av

MAX_PIXELS = 4096 * 4096  # decompression-bomb guard
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
