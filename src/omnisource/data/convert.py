"""Frame conversion: colour conversion and resizing of decoded frames, with the filters chosen per
scale factor, and one swscale context kept per process."""
from __future__ import annotations

import os

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

_reformatters: dict[int, VideoReformatter] = {}
# swscale threads per conversion: one. PyAV 18 defaults to 0 (slice threads per CPU), which on
# frames of a few hundred pixels costs ~4x the CPU of a serial conversion in hand-offs, and on a
# busy machine stalls each frame until every slice thread got a CPU (docs/benchmarks.md); the
# loader workers and `prepare`'s pool already keep every core busy. None: a PyAV without the option.
_SWS_THREADS: dict | None = {"threads": 1}


def reformat(frame: "av.VideoFrame", size: tuple[int, int] | None, format: str,
             interpolation: str = "BILINEAR") -> "av.VideoFrame":
    """frame converted to `format` and size=(width, height) (None: its own) in one swscale pass.
    One reformatter per process keeps its swscale context across frames and files of the same
    geometry; `frame.reformat` builds a new one per call, ~10x the cost of a small conversion."""
    fmt = _reformatters.get(os.getpid())
    if fmt is None:  # a forked worker builds its own
        fmt = _reformatters[os.getpid()] = VideoReformatter()
    global _SWS_THREADS
    w, h = size or (frame.width, frame.height)
    if _SWS_THREADS is not None:
        try:
            return fmt.reformat(frame, width=w, height=h, format=format, interpolation=interpolation, **_SWS_THREADS)
        except TypeError as e:  # an older PyAV: no `threads` option, and serial swscale anyway
            if "threads" not in str(e):
                raise
            _SWS_THREADS = None
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
