"""Untrimmed web video → target format (OmniSource §3.4, Table 14).

For 2D students: frames at 1 fps are scored by the teacher and split into positive and
negative frames; a snippet of k positive + m negative frames (the paper's best: 1 + 2; the
default ``omni.snippet_neg`` is 0, measured in docs/benchmarks.md) becomes a sample.
Per frame (``omni.untrimmed=frames``): select filters every 1 fps frame by itself and each
frame it kept becomes a one-frame sample with its own pseudo-label.
For 3D students: the video is cut into 10 s clips, the teacher scores each clip, and the
positive clips are kept.
"""
from __future__ import annotations

import numpy as np

from ..data.manifest import ManifestError, make_id


def positive_frames(frame_scores: np.ndarray, label: int, threshold: float) -> np.ndarray:
    """Boolean mask over frames: the probability of ``label`` reaches ``threshold``.
    ``frame_scores`` is (F, C) class probabilities or (F,) probabilities of ``label``."""
    s = np.asarray(frame_scores, dtype=np.float64)
    p = s[:, label] if s.ndim == 2 else s
    return p >= threshold


def select_snippet(positive: np.ndarray, k_pos: int, m_neg: int, rng: np.random.Generator) -> np.ndarray | None:
    """Indices (k_pos + m_neg,) in time order: k positive and m negative frames.

    When there are too few negatives the snippet is filled with further positives (the video
    is mostly on-topic); with no positive frame at all there is no snippet (None).
    """
    positive = np.asarray(positive, dtype=bool)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    if len(pos) == 0 or k_pos + m_neg == 0:
        return None
    take_neg = min(m_neg, len(neg))
    take_pos = k_pos + (m_neg - take_neg)
    chosen_pos = rng.choice(pos, size=take_pos, replace=take_pos > len(pos))
    chosen_neg = rng.choice(neg, size=take_neg, replace=False) if take_neg else np.zeros(0, int)
    return np.sort(np.concatenate([chosen_pos, chosen_neg]).astype(np.int64))


def clip_windows(duration_s: float, length_s: float = 10.0, min_s: float = 2.0) -> list[tuple[float, float]]:
    """Consecutive windows of ``length_s``; a tail shorter than ``min_s`` (or than a whole window,
    when windows are shorter than ``min_s``) is dropped; a video shorter than that is one window."""
    if duration_s <= 0:
        return []
    out, start, shortest = [], 0.0, min(min_s, length_s, duration_s)
    while start < duration_s:
        end = min(duration_s, start + length_s)
        if end - start >= shortest - 1e-9:
            out.append((start, end))
        start += length_s
    return out


def positive_clips(clip_scores: np.ndarray, label: int, threshold: float) -> np.ndarray:
    """Indices of the 10 s clips whose probability of ``label`` reaches ``threshold``."""
    return np.flatnonzero(positive_frames(clip_scores, label, threshold))


def windows_of(row: dict, clip_seconds: float) -> list[tuple[float, float]]:
    """The ``clip_seconds`` windows of an untrimmed video row (probed when it lacks frame counts)."""
    from ..data.datasets import frame_span

    _, num, fps = frame_span(row)
    return clip_windows(num / max(fps, 1e-6), clip_seconds)


def window_rows(row: dict, windows: list[tuple[float, float]]) -> list[dict]:
    """One row per window (``start_s``/``end_s``, ``parent_id``), with the id that the clip of
    that window gets everywhere (scoring, ``transform``, domain adaptation)."""
    return [dict(row, id=make_id(row["source"], row["path"], float(a), float(b)), parent_id=row["id"], start_s=float(a),
                 end_s=float(b)) for a, b in windows]


def frame_rows(row: dict) -> list[dict]:
    """One single-frame sample per frame that select kept (``kept_frames``, labelled with its
    ``frame_labels``) of a kept untrimmed video, in the snippet format (``frame_indices``)."""
    frames, labels = row.get("kept_frames"), row.get("frame_labels")
    if frames is None or labels is None or len(frames) != len(labels):
        raise ManifestError(f"{row.get('path', row['id'])}: no per-frame selection (kept_frames); re-run `omnisource "
                            "select` with omni.untrimmed=frames")
    base = {k: v for k, v in row.items() if k not in ("kept_frames", "frame_labels")}
    return [dict(base, id=make_id(row["source"], f"{row['path']}#frame{int(i)}"), parent_id=row["id"],
                 frame_indices=[int(i)], label=int(c)) for i, c in zip(frames, labels)]
