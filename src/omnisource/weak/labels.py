"""Weak-label pre-training data (Ghadiyaram et al., "Large-scale weakly-supervised pre-training
for video action recognition", CVPR 2019), as pure functions over arrays.

* A video with several tags gets one tag drawn at random each epoch, trained with softmax
  cross-entropy (§3, label space).
* Square-root class resampling: a class is drawn with probability ∝ N_c^0.5 (§3, sampling).
* Tail-preserving subsampling to a budget: tail classes are kept whole, head classes are cut to a
  common cap (§4, the long-tail study).
* Clip selection under a budget: a fixed number of videos or a fixed total of minutes, short or
  long videos first, clips at the centre or at random (§4: with a fixed number of videos long
  videos win; with fixed minutes many short videos win).
"""
from __future__ import annotations

import numpy as np

from ..data.resample import class_weights

PREFER = ("short", "long", "random")
POSITION = ("centre", "random")


def tag_vocabulary(tag_lists: list[list[str]]) -> list[str]:
    """Sorted set of every tag (the pre-training label space)."""
    return sorted({t for tags in tag_lists for t in tags})


def encode_tags(tag_lists: list[list[str]], vocabulary: list[str]) -> list[list[int]]:
    index = {t: i for i, t in enumerate(vocabulary)}
    return [[index[t] for t in tags] for tags in tag_lists]


def draw_tags(tag_ids: list[list[int]], seed: int, epoch: int) -> np.ndarray:
    """One tag per sample, drawn uniformly among its tags with an RNG seeded by (seed, epoch),
    so an epoch always draws the same labels (exact resume) and epochs differ (§3)."""
    if any(len(t) == 0 for t in tag_ids):
        raise ValueError("every weakly-labelled sample needs at least one tag")
    rng = np.random.default_rng([seed, epoch, 5])
    pick = rng.integers(0, np.array([len(t) for t in tag_ids]))
    return np.array([t[p] for t, p in zip(tag_ids, pick)], dtype=np.int64)


def tag_counts(tag_ids: list[list[int]], num_classes: int) -> np.ndarray:
    """Expected samples per class: a sample with m tags counts 1/m for each of them."""
    counts = np.zeros(num_classes)
    for tags in tag_ids:
        for t in tags:
            counts[t] += 1.0 / len(tags)
    return counts


def tag_sample_weights(tag_ids: list[list[int]], num_classes: int, power: float = 0.5) -> np.ndarray:
    """Per-sample draw probabilities whose class marginals are ∝ N_c^power (power 0.5: square-root
    resampling, §3). A multi-tag sample gets the mean of what each of its tags would give it;
    for single tags this equals ``data.resample.sample_weights(..., "power", power=power)``."""
    counts = tag_counts(tag_ids, num_classes)
    per_class = class_weights(counts, "power", power=power)
    per_sample = np.where(counts > 0, per_class / np.maximum(counts, 1e-12), 0.0)
    w = np.array([sum(per_sample[t] / len(tags) for t in tags) for tags in tag_ids])
    return w / w.sum() if w.sum() > 0 else w


def tail_preserving_subsample(labels, budget: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``budget`` samples: every class with at most ``cap`` samples is
    kept whole (the tail), every larger class is cut to ``cap`` at random (the head), where ``cap``
    is the largest count with Σ_c min(N_c, cap) ≤ budget; what is left of the budget gives one more
    sample to the largest head classes (ties: lower class index), so the result has exactly
    min(budget, N) samples (§4)."""
    labels = np.asarray(labels, dtype=np.int64)
    if budget < 0:
        raise ValueError(f"subsampling budget must be 0 or more, got {budget}")
    if budget >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    cap = 0
    while np.minimum(counts, cap + 1).sum() <= budget:
        cap += 1
    quota = np.minimum(counts, cap)
    left = budget - quota.sum()
    head = [i for i in np.argsort(-counts, kind="stable") if counts[i] > cap]
    for i in head[:left]:
        quota[i] += 1
    rng = np.random.default_rng([seed, 13])
    keep = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        keep.append(members if q >= len(members) else rng.choice(members, size=q, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def clip_starts(duration: float, clip_seconds: float, clips: int, position: str, rng) -> list[float]:
    """Start times of ``clips`` clips of one video: centred in ``clips`` equal parts (``centre``) or
    uniform in each part (``random``); ``clips=0`` = every whole non-overlapping clip. A video
    shorter than a clip yields one clip, the whole video."""
    if position not in POSITION:
        raise ValueError(f"clip position must be one of {', '.join(POSITION)}, got {position!r}")
    if duration <= clip_seconds:
        return [0.0]
    n = int(duration // clip_seconds) if clips == 0 else clips
    part = duration / n
    starts = []
    for j in range(n):
        lo, hi = j * part, min((j + 1) * part, duration) - clip_seconds
        if hi < lo:  # parts shorter than a clip: centre the clip on the part, inside the video
            s = min(max(0.0, j * part + part / 2 - clip_seconds / 2), duration - clip_seconds)
        elif position == "centre":
            s = (lo + hi) / 2
        else:
            s = float(rng.uniform(lo, hi))
        starts.append(float(s))
    return starts


def select_clips(durations, clip_seconds: float = 10.0, budget_videos: int = 0, budget_minutes: float = 0.0,
                 prefer: str = "short", position: str = "centre", clips_per_video: int = 1,
                 seed: int = 0) -> list[tuple[int, float, float]]:
    """(video index, start s, end s) of the pre-training clips under a budget (§4).

    Videos are taken shortest first (``short``), longest first (``long``) or in a seeded random
    order, until ``budget_videos`` videos or ``budget_minutes`` minutes of video are used (0 = no
    limit; the minutes count whole videos, as the paper's "total video minutes"). Each video
    gives ``clips_per_video`` clips (0: all non-overlapping ones) at the centre or at random.
    """
    d = np.asarray(durations, dtype=np.float64)
    if prefer not in PREFER:
        raise ValueError(f"video preference must be one of {', '.join(PREFER)}, got {prefer!r}")
    if clip_seconds <= 0 or budget_videos < 0 or budget_minutes < 0 or clips_per_video < 0:
        raise ValueError("clip selection: clip_seconds must be positive and the budgets 0 or more")
    rng = np.random.default_rng([seed, 17])
    if prefer == "random":
        order = rng.permutation(len(d))
    else:
        order = np.argsort(d if prefer == "short" else -d, kind="stable")
    out, used = [], 0.0
    for n_videos, i in enumerate(order):
        if budget_videos and n_videos >= budget_videos:
            break
        if budget_minutes and used + d[i] / 60 > budget_minutes + 1e-9:
            break
        used += d[i] / 60
        for s in clip_starts(float(d[i]), clip_seconds, clips_per_video, position, rng):
            out.append((int(i), s, min(float(d[i]), s + clip_seconds)))
    return out
