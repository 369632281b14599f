"""Sub-Pseudo Labels (SPL; Li et al., "Learning from Weakly-labeled Web Videos via Exploring
Sub-Concepts", AAAI 2022) and the baselines it is compared with, as pure functions over arrays.
Section numbers below refer to that paper: §3 the method, §4 the experiments.

Every web sample (a 10 s clip of an untrimmed web video, a trimmed video or an image) has a
weak label ``l`` (its query's class) and a teacher prediction ``T(x)`` (the teacher trained on the
target set; docs/methods.md). The weak-label × teacher confusion matrix ``C`` (rows: ``l``, columns:
``T(x)``) drives everything:

* noise ratio = off-diagonal / total of ``C`` (§4);
* SPL full: ``y = N·l + T(x)``, N² classes (§3);
* SPL-M: keep the N diagonal cells plus the (K−1)·N most frequent off-diagonal cells, merge the
  samples of every other cell into their row's diagonal (§3, "merging"), K·N classes;
* SPL-D: the same selected cells, samples of unselected cells discarded (§3, "dropping");
* SPL-B: 2N classes, per row "teacher agrees" and "teacher disagrees" (§3, "binary");
* samples cover ratio SCR = samples in selected cells / all samples (§3);
* baselines (§4, Table 1): weak-label, teacher-prediction, agreement filtering.

Each method returns a :class:`Labels`: per-sample labels (−1 = sample dropped), the number of
classes, and a label map (one entry per new class naming the (weak, teacher) cells it holds),
which ``weak`` saves beside the manifest. No public code exists for SPL; this is our reference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METHODS = ("weak", "teacher", "agreement", "spl_full", "spl_m", "spl_d", "spl_b")


@dataclass
class Labels:
    labels: np.ndarray  # (S,) int64, -1 = dropped
    num_classes: int
    label_map: list[dict] = field(default_factory=list)  # {"label", "weak", "teacher", "cells"}
    cover: float = 1.0  # samples cover ratio (kept samples / all)


def _check(weak, teacher, n: int) -> tuple[np.ndarray, np.ndarray]:
    weak, teacher = np.asarray(weak, dtype=np.int64), np.asarray(teacher, dtype=np.int64)
    if n < 1:
        raise ValueError(f"SPL: the number of classes must be at least 1, got {n}")
    if weak.shape != teacher.shape or weak.ndim != 1:
        raise ValueError(f"SPL: weak labels {weak.shape} and teacher predictions {teacher.shape} must be two "
                         "vectors of the same length")
    for name, a in (("weak label", weak), ("teacher prediction", teacher)):
        if len(a) and (a.min() < 0 or a.max() >= n):
            raise ValueError(f"SPL: every {name} must be a class index in [0, {n}), got {a.min()}..{a.max()}")
    return weak, teacher


def confusion(weak, teacher, n: int) -> np.ndarray:
    """C[l, t] = number of samples with weak label l and teacher prediction t (N × N)."""
    weak, teacher = _check(weak, teacher, n)
    return np.bincount(weak * n + teacher, minlength=n * n).reshape(n, n)


def noise_ratio(c: np.ndarray) -> float:
    """Off-diagonal / total of the confusion matrix (SPL §4); NaN for an empty matrix."""
    c = np.asarray(c)
    total = c.sum()
    return float((total - np.trace(c)) / total) if total else float("nan")


def top_cells(c: np.ndarray, k: int) -> np.ndarray:
    """Boolean N × N mask: the diagonal plus the (K−1)·N most frequent off-diagonal cells (SPL §3).

    Ties go to the cell that comes first in row-major order; empty cells are never selected, so
    fewer than (K−1)·N off-diagonal cells are kept when fewer are non-empty.
    """
    c = np.asarray(c)
    n = c.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"SPL: K must be in [1, {n}] for {n} classes, got {k}")
    mask = np.eye(n, dtype=bool)
    flat = np.where(~mask, c, -1).ravel()
    order = np.argsort(-flat, kind="stable")[: (k - 1) * n]
    order = order[flat[order] > 0]
    mask.ravel()[order] = True
    return mask


def samples_cover_ratio(c: np.ndarray, mask: np.ndarray) -> float:
    """Samples in the selected cells / all samples (SPL §3)."""
    c = np.asarray(c)
    return float(c[np.asarray(mask, bool)].sum() / c.sum()) if c.sum() else float("nan")


def _entry(label: int, weak: int, teacher, cells) -> dict:
    return {"label": int(label), "weak": int(weak), "teacher": teacher, "cells": [[int(a), int(b)] for a, b in cells]}


def spl_full(weak, teacher, n: int) -> Labels:
    """y = N·l + T(x): one class per (weak label, teacher prediction) cell, N² classes (SPL §3)."""
    weak, teacher = _check(weak, teacher, n)
    lm = [_entry(l * n + t, l, t, [(l, t)]) for l in range(n) for t in range(n)]
    return Labels(weak * n + teacher, n * n, lm, 1.0 if len(weak) else float("nan"))


def _selected(weak, teacher, n: int, k: int, merge: bool) -> Labels:
    weak, teacher = _check(weak, teacher, n)
    c = confusion(weak, teacher, n)
    mask = top_cells(c, k)
    # Class l is row l's diagonal cell (plus, when merging, the row's unselected cells);
    # selected off-diagonal cells follow as classes N, N+1, ... in row-major order.
    ids = np.full((n, n), -1, dtype=np.int64)
    ids[np.arange(n), np.arange(n)] = np.arange(n)
    off = [(l, t) for l in range(n) for t in range(n) if mask[l, t] and l != t]
    for j, (l, t) in enumerate(off):
        ids[l, t] = n + j
    lm = []
    for l in range(n):
        cells = [(l, l)] + ([(l, t) for t in range(n) if not mask[l, t]] if merge else [])
        lm.append(_entry(l, l, l, cells))
    lm += [_entry(n + j, l, t, [(l, t)]) for j, (l, t) in enumerate(off)]
    if merge:
        ids = np.where(ids >= 0, ids, np.arange(n)[:, None])
    labels = ids[weak, teacher] if len(weak) else np.zeros(0, np.int64)
    return Labels(labels, n + len(off), lm, samples_cover_ratio(c, mask))


def spl_m(weak, teacher, n: int, k: int = 2) -> Labels:
    """SPL-M (§3): the selected cells are classes; every other sample joins its row's diagonal."""
    return _selected(weak, teacher, n, k, merge=True)


def spl_d(weak, teacher, n: int, k: int = 2) -> Labels:
    """SPL-D (§3): the selected cells are classes; samples of the other cells are dropped (−1)."""
    return _selected(weak, teacher, n, k, merge=False)


def spl_b(weak, teacher, n: int) -> Labels:
    """SPL-B (§3): 2N classes: l when the teacher agrees with the weak label, N + l otherwise."""
    weak, teacher = _check(weak, teacher, n)
    labels = np.where(weak == teacher, weak, n + weak)
    lm = [_entry(l, l, "agree", [(l, l)]) for l in range(n)]
    lm += [_entry(n + l, l, "disagree", [(l, t) for t in range(n) if t != l]) for l in range(n)]
    return Labels(labels, 2 * n, lm, 1.0 if len(weak) else float("nan"))


def weak_label(weak, teacher, n: int) -> Labels:
    """Baseline: train on the weak (query) labels as they are."""
    weak, teacher = _check(weak, teacher, n)
    return Labels(weak.copy(), n, [_entry(l, l, None, [(l, t) for t in range(n)]) for l in range(n)],
                  1.0 if len(weak) else float("nan"))


def teacher_label(weak, teacher, n: int) -> Labels:
    """Baseline: train on the teacher's predictions (pseudo-labels), ignoring the weak labels."""
    weak, teacher = _check(weak, teacher, n)
    return Labels(teacher.copy(), n, [_entry(t, t, t, [(l, t) for l in range(n)]) for t in range(n)],
                  1.0 if len(weak) else float("nan"))


def agreement(weak, teacher, n: int) -> Labels:
    """Baseline: keep a sample only when the teacher agrees with its weak label (label = l)."""
    weak, teacher = _check(weak, teacher, n)
    agree = weak == teacher
    return Labels(np.where(agree, weak, -1), n, [_entry(l, l, l, [(l, l)]) for l in range(n)],
                  float(agree.mean()) if len(weak) else float("nan"))


def make_labels(method: str, weak, teacher, n: int, k: int = 2) -> Labels:
    """One interface over every method of :data:`METHODS` (``k`` is used by SPL-M and SPL-D)."""
    if method in ("spl_m", "spl_d"):
        return (spl_m if method == "spl_m" else spl_d)(weak, teacher, n, k)
    table = {"weak": weak_label, "teacher": teacher_label, "agreement": agreement, "spl_full": spl_full,
             "spl_b": spl_b}
    if method not in table:
        raise ValueError(f"unknown label method {method!r}; expected one of {', '.join(METHODS)}")
    return table[method](weak, teacher, n)


def save_label_map(path: str | Path, result: Labels, method: str, classes: list[str], extra: dict | None = None) -> Path:
    """Write the label map (JSON) beside a manifest: method, class names, new classes and their cells."""
    from ..data.manifest import atomic_write_text

    def name(entry: dict) -> str:
        t = entry["teacher"]
        base = classes[entry["weak"]]
        if t is None or t == entry["weak"]:
            return base
        return f"{base}|{t}" if isinstance(t, str) else f"{base}|{classes[t]}"

    doc = {"method": method, "target_classes": classes, "num_classes": result.num_classes,
           "samples_cover_ratio": result.cover, **(extra or {}),
           "classes": [dict(e, name=name(e)) for e in result.label_map]}
    return atomic_write_text(Path(path), json.dumps(doc, indent=2))
