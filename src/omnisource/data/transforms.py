"""Spatial transforms on uint8 clips (T, H, W, 3); one crop box for all frames of a clip, so motion
between frames is preserved. cv2 resizes (fast, releases the GIL). Normalisation is left to the
models, so `to_tensor` only scales to [0, 1]. Training loaders ship uint8 (`to_uint8_tensor`, a
quarter of the bytes through the worker queues) and `to_float` scales on the device, as
mmaction2's data preprocessor does."""
from __future__ import annotations

import numpy as np
import torch

from .convert import resize_frame

TSN_SCALES = (1.0, 0.875, 0.75, 0.66)  # MultiScaleCrop of TSN / mmaction2


def _hw(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def resize(clip: np.ndarray, height: int, width: int) -> np.ndarray:
    """Every frame to (height, width) with `convert.resize_frame` (bilinear; area when shrinking >2x)."""
    t, h, w = clip.shape[:3]
    if (h, w) == (height, width):
        return clip
    out = np.empty((t, height, width, clip.shape[3]), clip.dtype)
    for i in range(t):
        out[i] = resize_frame(clip[i], width, height)
    return out


def resize_short(clip: np.ndarray, size: int) -> np.ndarray:
    """Short side to `size`, keeping the aspect ratio."""
    h, w = clip.shape[1:3]
    if h <= w:
        return resize(clip, size, max(1, round(w * size / h)))
    return resize(clip, max(1, round(h * size / w)), size)


def crop(clip: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    return clip[:, top: top + height, left: left + width]


def _fit(clip: np.ndarray, size) -> np.ndarray:
    """Upscale (short side) a clip smaller than the crop, so every crop below is valid."""
    ch, cw = _hw(size)
    h, w = clip.shape[1:3]
    if h >= ch and w >= cw:
        return clip
    scale = max(ch / h, cw / w)
    return resize(clip, max(ch, round(h * scale)), max(cw, round(w * scale)))


def center_crop(clip: np.ndarray, size) -> np.ndarray:
    clip = _fit(clip, size)
    ch, cw = _hw(size)
    h, w = clip.shape[1:3]
    return crop(clip, (h - ch) // 2, (w - cw) // 2, ch, cw)


def random_crop(clip: np.ndarray, size, rng=None) -> np.ndarray:
    """A crop of exactly `size` at a uniform random position."""
    clip = _fit(clip, size)
    ch, cw = _hw(size)
    h, w = clip.shape[1:3]
    rng = _rng(rng)
    return crop(clip, int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)


def multi_scale_crop(clip: np.ndarray, size, rng=None, scales=TSN_SCALES, max_distort: int = 1,
                     fix_crop: bool = True) -> np.ndarray:
    """TSN's MultiScaleCrop: crop sides drawn from scales x short side (aspect distorted by at most
    `max_distort` scale steps), at one of 13 fixed positions (fix_crop) or anywhere, then resized."""
    rng = _rng(rng)
    h, w = clip.shape[1:3]
    sides = [int(min(h, w) * s) for s in scales]
    pairs = [(a, b) for i, a in enumerate(sides) for j, b in enumerate(sides) if abs(i - j) <= max_distort]
    ch, cw = pairs[int(rng.integers(len(pairs)))]
    ch, cw = min(ch, h), min(cw, w)
    if fix_crop:
        ys, xs = (h - ch) // 4, (w - cw) // 4
        spots = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (0, 2), (4, 2),
                 (1, 1), (1, 3), (3, 1), (3, 3)]
        gy, gx = spots[int(rng.integers(len(spots)))]
        top, left = gy * ys, gx * xs
    else:
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out_h, out_w = _hw(size)
    return resize(crop(clip, top, left, ch, cw), out_h, out_w)


def random_resized_crop(clip: np.ndarray, size, rng=None, area=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """Inception-style crop: random area fraction and log-uniform aspect ratio, resized to `size`;
    falls back to a centre crop of the whole frame after 10 failed draws (as torchvision does)."""
    rng = _rng(rng)
    h, w = clip.shape[1:3]
    out_h, out_w = _hw(size)
    for _ in range(10):
        target = h * w * rng.uniform(*area)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return resize(crop(clip, top, left, ch, cw), out_h, out_w)
    side = min(h, w)
    return resize(crop(clip, (h - side) // 2, (w - side) // 2, side, side), out_h, out_w)


def three_crops(clip: np.ndarray, size) -> np.ndarray:
    """(3, T, ch, cw, 3): start / centre / end crops along the long side (mmaction2 ThreeCrop test)."""
    clip = _fit(clip, size)
    ch, cw = _hw(size)
    h, w = clip.shape[1:3]
    if w >= h:
        boxes = [((h - ch) // 2, x) for x in (0, (w - cw) // 2, w - cw)]
    else:
        boxes = [(y, (w - cw) // 2) for y in (0, (h - ch) // 2, h - ch)]
    return np.stack([crop(clip, top, left, ch, cw) for top, left in boxes])


def hflip(clip: np.ndarray) -> np.ndarray:
    return clip[:, :, ::-1]


def to_tensor(clip: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(clip))
    return t.permute(3, 0, 1, 2).float().div_(255.0)


def to_uint8_tensor(clip: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (3, T, H, W), one copy (crop and flip views resolve here)."""
    return torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))


def to_float(x: torch.Tensor) -> torch.Tensor:
    """A batch as the models take it: uint8 -> float32 in [0, 1] (where x lives, e.g. on the
    GPU after the copy); float batches (features, already scaled clips) pass unchanged."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x
