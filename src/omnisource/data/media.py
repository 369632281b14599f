"""Decode and probe images, videos and frame folders behind one interface.

Videos are decoded by `decode` (the PyAV forward decoder, or torchcodec when `media.backend`
asks for it); see its module note for why the reader looks the way it does.

Frame index i = the i-th frame a sequential decode yields (as in torchcodec and decord), not a pts.
`num_frames` is the container's count (`stream.frames`, exact for MP4/AVI) or else `duration * fps`
(`MediaInfo.exact` False: Matroska/WebM, where an audio track can stretch the duration). Either may
exceed what decodes, so `read_frames` clamps indices past the end to the last decodable frame.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import decode
from .decode import (BACKENDS, MAX_PIXELS, MediaError, MediaInfo, check_file as _check_file, check_size as _check_size,
                     decode_pyav, iter_video, open_video as _open_video, resolve_backend, set_backend,
                     short_side_size, video_info as _video_info)

__all__ = ["BACKENDS", "MediaError", "MediaInfo", "check", "decode_pyav", "frame_files", "frame_window",
           "infer_kind", "iter_video", "probe", "read_frames", "read_image", "resolve_backend",
           "set_backend", "short_side_size"]

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
FRAMES_FPS = 25.0  # a frame folder carries no rate; assume the usual extraction rate
# What broken files raise from FFmpeg/Pillow; anything else is a programmer error and propagates.
_BAD_FILE_ERRORS = decode.BAD_VIDEO_ERRORS + (SyntaxError, Image.DecompressionBombError)


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
                max_pixels: int | None = MAX_PIXELS, backend: str | None = None,
                short_side: int | None = None) -> np.ndarray:
    """(len(indices), H, W, 3) uint8 RGB in the order of `indices` (unsorted and repeats allowed).

    Indices past the end are clamped to the last decodable frame. backend: "auto", "pyav",
    "torchcodec", or None for this process's `media.backend` (see `resolve_backend`). short_side: videos come with their short side resized
    to it, inside the decoder's colour conversion; images and frame folders at their own size.
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
    return _read_video(_check_file(path), uniq, max_pixels, backend, short_side)[inverse]


def _read_video(path: Path, uniq: np.ndarray, max_pixels, backend, short_side) -> np.ndarray:
    if resolve_backend(backend) == "torchcodec":
        return decode.decode_torchcodec(path, uniq, max_pixels, short_side, strict=True)
    frames, _ = decode_pyav(path, uniq, max_pixels, short_side=short_side)
    return np.stack([frames[int(i)] for i in uniq])


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
