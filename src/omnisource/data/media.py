"""Decode and probe images, videos and frame folders behind one interface.

Why the video reader looks the way it does (DESIGN.md §3, measured on 2 cores): seeking per frame
collapses to ~6 fps on long-GOP files, while decoding forward once per clip runs at ~60 fps for the
TSN pattern. So `read_frames` decodes forward once, with one decoder thread (loader workers supply the
parallelism), and seeks only when a keyframe lies between the current position and the next wanted
frame. torchcodec is used when it imports (it needs torch 2.14.1 + system FFmpeg), PyAV otherwise.

Frame index i = the i-th frame a sequential decode yields (as in torchcodec and decord), not a pts.
`num_frames` is the container's count (`stream.frames`, exact for MP4/AVI) or else `duration * fps`
(`MediaInfo.exact` False: Matroska/WebM, where an audio track can stretch the duration). Either may
exceed what decodes, so `read_frames` clamps indices past the end to the last decodable frame.
"""
from __future__ import annotations

import bisect
import math
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # optional faster backend; any failure at import time just means "not available"
    from torchcodec.decoders import VideoDecoder as _TorchcodecDecoder
except Exception:  # noqa: BLE001 - ImportError, missing libav*, ABI mismatch with torch, ...
    _TorchcodecDecoder = None

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_PIXELS = 4096 * 4096
FRAMES_FPS = 25.0  # a frame folder carries no rate; assume the usual extraction rate
SEEK_MIN_GAP = 16  # frames: seeking flushes the decoder, worth it only past this many skipped frames
BLIND_SEEK_S = 5.0  # seconds: gap that justifies a seek when the index shows no keyframes
# Container signatures: a file starting like this that fails to open is truncated, not "not media".
_MAGIC = {4: (b"ftyp",), 0: (b"RIFF", b"\x1aE\xdf\xa3", b"OggS", b"FLV", b"\x00\x00\x01\xba", b"GIF8")}
# What broken files raise from FFmpeg/Pillow; anything else is a programmer error and propagates.
_BAD_FILE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, SyntaxError, struct.error,
                    IndexError, KeyError, ZeroDivisionError, MemoryError, RuntimeError,
                    Image.DecompressionBombError)


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


def infer_kind(path: str | Path) -> str:
    """"frames" for a directory, else the kind the content says (``data.sniff``; never the
    extension), "video" when it names none (the decoder then says what is wrong)."""
    from .sniff import content_kind

    return content_kind(path)[0] or "video"


def frame_files(folder: str | Path) -> list[Path]:
    """Image files of a frame folder in name order (img_00001.jpg, ...); MediaError if none."""
    if not Path(folder).is_dir():
        raise MediaError("missing frames folder")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise MediaError("empty frames folder")
    return files


# ----------------------------------------------------------------------------- probe
def probe(path: str | Path, kind: str | None = None) -> MediaInfo:
    """Kind, frame count, rate and size without decoding pixels (see module note on num_frames)."""
    path = Path(path)
    kind = kind or infer_kind(path)
    if kind in ("frames", "image"):
        files = frame_files(path) if kind == "frames" else [_check_file(path)]
        with _open_image(files[0], None) as im:
            n, fps = (len(files), FRAMES_FPS) if kind == "frames" else (1, 0.0)
            return MediaInfo(kind, n, fps, n / fps if fps else 0.0, *im.size)
    if kind != "video":
        raise ValueError(f"unknown media kind {kind!r}")
    with _open_video(_check_file(path)) as (container, stream):
        return _video_info(container, stream)


def frame_window(info: MediaInfo, start_s: float | None, end_s: float | None) -> tuple[int, int]:
    """(first_frame, num_frames) covering [start_s, end_s) of an untrimmed video; None = open end."""
    n = max(int(info.num_frames), 1)
    if info.fps <= 0:
        return 0, n
    first = 0 if start_s is None else int(math.floor(start_s * info.fps + 1e-6))
    first = min(max(first, 0), n - 1)
    end = n if end_s is None else int(math.ceil(end_s * info.fps - 1e-6))
    end = min(max(end, first + 1), n)
    return first, end - first


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise MediaError("is a directory, not a file" if path.is_dir() else "missing file")
    if path.stat().st_size == 0:
        raise MediaError("zero-byte file")
    return path


@contextmanager
def _open_video(path: Path) -> Iterator[tuple]:
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


def _video_info(container, stream) -> MediaInfo:
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


def _check_size(info: MediaInfo, max_pixels: int | None, min_size: int = 0) -> None:
    w, h = info.width, info.height
    if max_pixels and w * h > max_pixels:
        raise MediaError(f"decompression bomb: {w}x{h} exceeds max_pixels={max_pixels}")
    if min(w, h) < min_size:
        raise MediaError(f"too small: {w}x{h} is below min_size={min_size}")


# ----------------------------------------------------------------------------- images
def _open_image(path: Path, max_pixels: int | None) -> Image.Image:
    """Image.open reads only the header, so the size check runs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:  # beyond 2x Image.MAX_IMAGE_PIXELS: Pillow refuses
        raise MediaError(f"decompression bomb: {str(e).split(',')[0]}") from None
    except UnidentifiedImageError:
        raise MediaError("not an image file") from None
    except _BAD_FILE_ERRORS as e:
        raise MediaError(f"unreadable image: {e}") from None
    w, h = im.size
    if max_pixels and w * h > max_pixels:
        im.close()
        raise MediaError(f"decompression bomb: {w}x{h} exceeds max_pixels={max_pixels}")
    return im


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB. First frame of animations; alpha composited on white; 16-bit scaled."""
    with _open_image(_check_file(Path(path)), max_pixels) as im:
        try:
            im.seek(0)
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
        except _BAD_FILE_ERRORS as e:
            raise MediaError(f"truncated or corrupt image: {e}") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        arr = arr if mode == "F" else arr / 257.0  # 16-bit range onto 8 bits, not clipped at 255
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(im if mode == "RGB" else im.convert("RGB"))


# ----------------------------------------------------------------------------- frames
def read_frames(path: str | Path, indices: Sequence[int], kind: str | None = None,
                max_pixels: int | None = MAX_PIXELS, backend: str = "auto") -> np.ndarray:
    """(len(indices), H, W, 3) uint8 RGB in the order of `indices` (unsorted and repeats allowed).

    Indices past the end are clamped to the last decodable frame. backend: "auto" (torchcodec when it
    imports, else PyAV), "pyav" or "torchcodec".
    """
    path = Path(path)
    kind = kind or infer_kind(path)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("read_frames needs at least one index")
    if (idx < 0).any():
        raise ValueError(f"negative frame index in {idx.tolist()}")
    uniq, inverse = np.unique(idx, return_inverse=True)
    if kind == "image":
        return np.repeat(read_image(path, max_pixels)[None], idx.size, axis=0)
    if kind == "frames":
        files = frame_files(path)
        picked = [read_image(files[min(i, len(files) - 1)], max_pixels) for i in uniq]
        return np.stack(picked)[inverse]
    if kind != "video":
        raise ValueError(f"unknown media kind {kind!r}")
    return _read_video(_check_file(path), uniq, max_pixels, backend)[inverse]


def _read_video(path: Path, uniq: np.ndarray, max_pixels, backend: str) -> np.ndarray:
    if backend not in ("auto", "pyav", "torchcodec"):
        raise ValueError(f"unknown backend {backend!r}")
    if backend == "torchcodec" and _TorchcodecDecoder is None:
        raise ValueError("backend='torchcodec' requested but torchcodec does not import here")
    if backend != "pyav" and _TorchcodecDecoder is not None:
        try:
            dec = _TorchcodecDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1)
            meta = dec.metadata
            _check_size(MediaInfo("video", len(dec), 0.0, 0.0, meta.width, meta.height), max_pixels)
            if len(dec) > 0:  # else PyAV says why
                idx = np.minimum(uniq, len(dec) - 1).tolist()
                return dec.get_frames_at(indices=idx).data.numpy()
        except MediaError:
            raise
        except Exception:  # noqa: BLE001 - torchcodec failed on this file: PyAV may still cope
            if backend == "torchcodec":
                raise
    frames, _ = decode_pyav(path, uniq, max_pixels)
    return np.stack([frames[int(i)] for i in uniq])


def decode_pyav(path: str | Path, wanted: Sequence[int], max_pixels: int | None = MAX_PIXELS,
                stats: dict | None = None) -> tuple[dict[int, np.ndarray], int]:
    """Decode forward once: ({wanted index: RGB frame}, index of the last decoded frame). Seeks
    only to a keyframe more than SEEK_MIN_GAP frames ahead; `stats` gets "seeks" and "decoded"."""
    stats = stats if stats is not None else {}
    stats.update(seeks=0, decoded=0)
    with _decoder(Path(path), max_pixels) as dec:
        return dec.collect(sorted({int(i) for i in wanted}), stats)


@contextmanager
def _decoder(path: Path, max_pixels) -> Iterator["_ForwardDecoder"]:
    """A _ForwardDecoder on the first video stream; one decoder thread (workers parallelise)."""
    with _open_video(_check_file(path)) as (container, stream):
        info = _video_info(container, stream)
        _check_size(info, max_pixels)
        stream.codec_context.thread_count = 1
        dec = _ForwardDecoder(container, stream, info)
        try:
            yield dec
        except _BAD_FILE_ERRORS as e:
            raise MediaError(f"decode error: {e}") from None
        finally:
            dec.close()


def iter_video(path: str | Path, start: int = 0, stop: int | None = None,
               max_pixels: int | None = MAX_PIXELS) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """(index, av.VideoFrame) for frames start..stop-1 in order, seeking once to the keyframe before
    `start` when one exists (for re-encoding spans of long videos). Same indices as read_frames."""
    with _decoder(Path(path), max_pixels) as dec:
        dec.maybe_seek(start)
        while True:
            idx, frame = dec.next()
            if frame is None or (stop is not None and idx >= stop):
                break
            if idx >= start:
                yield idx, frame
        if dec.pos < 0:
            raise MediaError(f"truncated: {dec.error or 'no decodable frames'}")


class _ForwardDecoder:
    """Forward decoding with rare seeks: to the keyframe before a target when the demuxer index
    shows one more than SEEK_MIN_GAP frames ahead, or blindly (no usable index, e.g. Matroska
    before its cues are read) when the gap exceeds BLIND_SEEK_S seconds.

    Frame index = number of frames decoded before it (what `stream.frames` counts and what a
    sequential decode yields). pts are trusted only once they agree with that count (up to a
    constant offset): packed B-frames in AVI scramble them."""

    def __init__(self, container, stream, info: MediaInfo):
        self.container, self.stream = container, stream
        self.start = stream.start_time or 0
        rate = float(stream.time_base * info.fps) if stream.time_base and info.fps > 0 else 0.0
        self.tb_fps, self.num_frames, self.fps = rate, info.num_frames, info.fps
        self.keyframes = None  # ([sorted indices], {dts: index}), read once a long gap appears
        self.can_seek, self.last_seek, self.seek_target = rate > 0, -1, None
        self.pos, self.agree, self.pts_bad, self.offset, self.error = -1, 0, False, None, None
        self._restart(seek=False)

    def collect(self, wanted: list[int], stats: dict) -> tuple[dict[int, np.ndarray], int]:
        """RGB frames for sorted unique `wanted`; a target skipped over (pts gap) takes the frame
        shown at that time, targets past the end the last decodable frame."""
        got, rgb, prev, k = {}, {}, None, 0
        while k < len(wanted):
            if self.maybe_seek(wanted[k]):
                prev, stats["seeks"] = None, stats["seeks"] + 1
            idx, frame = self.next()
            if frame is None:
                break
            stats["decoded"] += 1
            if idx < 0:  # a seek went wrong: restarted from the top
                prev = None
                continue
            while k < len(wanted) and wanted[k] <= idx:
                src_idx, src = (idx, frame) if (wanted[k] == idx or prev is None) else prev
                if src_idx not in rgb:
                    rgb[src_idx] = src.to_ndarray(format="rgb24")
                got[wanted[k]], k = rgb[src_idx], k + 1
            prev = (idx, frame)
        if not got and prev is None:
            raise MediaError(f"truncated: corrupt data: {self.error}" if self.error
                             else "truncated: no decodable frames")
        if k < len(wanted):
            last = prev[1].to_ndarray(format="rgb24") if prev is not None else rgb[max(rgb)]
            got.update({t: last for t in wanted[k:]})
        return got, self.pos

    def _restart(self, seek: bool = True) -> None:
        if seek:
            self.container.seek(self.start, stream=self.stream, backward=True)
        self._new_frames()
        self.pos, self.seek_target = -1, None

    def _new_frames(self) -> None:
        self.close()
        self.frames, self.first_dts = self._demux(), None

    def close(self) -> None:
        """Finish the demux generator while the container is open: left to the garbage collector
        it would run after container.close() (crashes, or hangs forked DataLoader workers)."""
        if getattr(self, "frames", None) is not None:
            self.frames.close()
            self.frames = None

    def _demux(self):
        for packet in self.container.demux(self.stream):
            if self.first_dts is None and packet.size:
                self.first_dts = (packet.dts,)
            yield from packet.decode()

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


# ----------------------------------------------------------------------------- validation
def check(path: str | Path, kind: str | None = None, max_pixels: int | None = MAX_PIXELS,
          min_size: int = 0) -> MediaInfo:
    """Open, decode (images fully; videos first and last frame) and check sizes; MediaError if bad.
    The decode half of the one validator, ``clean.validate`` (which types files and applies the rules)."""
    path = Path(path)
    kind = kind or infer_kind(path)
    if kind not in ("video", "image", "frames"):
        raise ValueError(f"unknown media kind {kind!r}")
    try:
        info = probe(path, kind)
        _check_size(info, max_pixels)
        if kind == "image":
            read_image(path, max_pixels)
        elif kind == "frames":
            read_frames(path, [0, info.num_frames - 1], "frames", max_pixels)
        elif info.exact and 0 < info.num_frames < 2:  # an estimate (MPEG-PS, Matroska) may say 1: decode
            raise MediaError("single frame video")
        else:
            _, last = decode_pyav(path, [0, max(info.num_frames - 1, 1)], max_pixels)
            if info.exact and last < 0.9 * (info.num_frames - 1) - 2:  # a few short is normal
                raise MediaError(f"truncated: the end does not decode ({info.num_frames} frames announced)")
            if last < 1:
                raise MediaError("single frame video")
        _check_size(info, max_pixels, min_size)
        return info
    except MediaError:
        raise
    except _BAD_FILE_ERRORS as e:
        raise MediaError(f"unreadable: {type(e).__name__}: {e}") from None
