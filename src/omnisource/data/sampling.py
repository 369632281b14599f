"""Which frames to decode: pure functions of frame counts, returning int64 arrays of indices.

Conventions follow mmaction2 (what the OmniSource configs use): TSN takes one frame per equal
segment (random in training, the centre at test); dense sampling takes T frames at stride tau from a
random (train) or centred (test) start; short videos loop. Indices are always in [0, num_frames).
"""
from __future__ import annotations

import numpy as np


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(num_frames: int, **positive: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def tsn_indices(num_frames: int, num_segments: int, train: bool, rng=None) -> np.ndarray:
    """One frame per equal segment (TSN): a uniform random point in each segment when training, the
    segment centre at test. Segments are real-valued, so num_frames < num_segments repeats frames
    instead of failing."""
    _check(num_frames, num_segments=num_segments)
    edges = np.linspace(0.0, num_frames, num_segments + 1)
    offset = _rng(rng).random(num_segments) if train else 0.5
    idx = np.floor(edges[:-1] + (edges[1:] - edges[:-1]) * offset).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def _loop(idx: np.ndarray, num_frames: int, out_of_bound: str) -> np.ndarray:
    if out_of_bound == "loop":
        return np.mod(idx, num_frames)
    if out_of_bound == "clamp":
        return np.clip(idx, 0, num_frames - 1)
    raise ValueError(f"out_of_bound must be 'loop' or 'clamp', got {out_of_bound!r}")


def dense_indices(num_frames: int, clip_len: int, stride: int, train: bool, rng=None,
                  out_of_bound: str = "loop") -> np.ndarray:
    """clip_len frames at `stride` (SlowOnly/R(2+1)D style): random start when training, centred at
    test. A video shorter than the span loops (mmaction2's default) or clamps to the last frame."""
    _check(num_frames, clip_len=clip_len, stride=stride)
    span = (clip_len - 1) * stride + 1
    room = num_frames - span
    if room >= 0:
        start = int(_rng(rng).integers(0, room + 1)) if train else room // 2
    else:
        start = int(_rng(rng).integers(0, num_frames)) if (train and out_of_bound == "loop") else 0
    return _loop(start + np.arange(clip_len, dtype=np.int64) * stride, num_frames, out_of_bound)


def multiview_indices(num_frames: int, clip_len: int, stride: int, num_clips: int,
                      out_of_bound: str = "loop") -> np.ndarray:
    """(num_clips, clip_len) test clips with starts evenly spread, each centred in its share of the
    video (num_clips=1 gives the centred clip of dense_indices)."""
    _check(num_frames, clip_len=clip_len, stride=stride, num_clips=num_clips)
    span = (clip_len - 1) * stride + 1
    room = max(num_frames - span, 0)
    starts = np.floor((np.arange(num_clips) + 0.5) * room / num_clips).astype(np.int64)
    idx = starts[:, None] + np.arange(clip_len, dtype=np.int64)[None] * stride
    return _loop(idx, num_frames, out_of_bound)


def one_fps_indices(num_frames: int, fps: float) -> np.ndarray:
    """One frame per second of an untrimmed video: the centre of each 1 s window, as used to score
    untrimmed web videos frame by frame. A last partial window shorter than 0.5 s is dropped (its
    frame would nearly repeat the previous one) unless it is the only one."""
    _check(num_frames)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    count = max(1, int(np.floor(num_frames / fps + 0.5)))
    starts = np.arange(count) * float(fps)
    ends = np.minimum(starts + fps, num_frames)
    return np.clip(np.floor((starts + ends) / 2).astype(np.int64), 0, num_frames - 1)
