"""Video decoding behind `media.read_frames`: the back-end choice and the torchcodec path, in front
of the PyAV forward decoder (`pyav_decode`), the containers (`containers`) and frame conversion
(`convert`), whose public names this module also exports.

Frame index i = the i-th frame a sequential decode yields (as in torchcodec and decord), not a pts.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .containers import (BAD_VIDEO_ERRORS, MAX_PIXELS, MediaError, MediaInfo, check_file, check_size, open_video,
                         short_side_size, video_info)
from .convert import reformat, resize_frame, to_rgb
from .pyav_decode import ForwardDecoder, decode_pyav, decoder, iter_video

__all__ = ["BACKENDS", "BAD_VIDEO_ERRORS", "MAX_PIXELS", "ForwardDecoder", "MediaError", "MediaInfo", "check_file",
           "check_size", "decode_pyav", "decode_torchcodec", "decoder", "iter_video", "open_video", "reformat",
           "resize_frame", "resolve_backend", "set_backend", "short_side_size", "to_rgb", "torchcodec_decoder",
           "video_info"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav", "torchcodec")


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
