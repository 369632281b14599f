"""Confusion analysis of two runs (OmniSource, Duan et al. 2020, Appendix Tables 18–19).

The confusion score of a class pair is s_ij = (n_ij + n_ji) / (n_ij + n_ji + n_ii + n_jj), with
n_ij the number of validation samples of class i predicted as class j. The appendix lists the
pairs whose score fell (confusion reduced by web data) or rose most against the baseline.
"""
from __future__ import annotations

import numpy as np


def confusion_scores(cm) -> np.ndarray:
    """(C, C) symmetric matrix of s_ij; NaN on the diagonal and where a pair has no samples."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {cm.shape}")
    pair = cm + cm.T
    diag = np.diag(cm)
    den = pair + diag[:, None] + diag[None, :]
    s = np.full_like(pair, np.nan)
    np.divide(pair, den, out=s, where=den > 0)
    np.fill_diagonal(s, np.nan)
    return s


def pair_changes(cm_run, cm_base, classes: list[str], top: int = 5) -> dict[str, list[dict]]:
    """The ``top`` pairs (i < j) whose s_ij fell most and rose most from ``cm_base`` to ``cm_run``.

    Pairs whose score is undefined in either run, or did not change, are left out. Each entry:
    ``{"pair": (name_i, name_j), "baseline": s_base, "run": s_run, "delta": s_run - s_base}``.
    """
    s_run, s_base = confusion_scores(cm_run), confusion_scores(cm_base)
    if s_run.shape != s_base.shape or s_run.shape[0] != len(classes):
        raise ValueError(f"confusion matrices {s_run.shape} and {s_base.shape} do not match "
                         f"{len(classes)} classes")
    i, j = np.triu_indices(len(classes), 1)
    delta = s_run[i, j] - s_base[i, j]
    valid = ~np.isnan(delta) & (delta != 0)
    i, j, delta = i[valid], j[valid], delta[valid]
    entries = [{"pair": (classes[a], classes[b]), "baseline": float(s_base[a, b]), "run": float(s_run[a, b]),
                "delta": float(d)} for a, b, d in zip(i, j, delta)]
    # sorted() is stable: ties keep the pair order (0,1), (0,2), ..., (1,2), ...
    fell = sorted((e for e in entries if e["delta"] < 0), key=lambda e: e["delta"])[:top]
    rose = sorted((e for e in entries if e["delta"] > 0), key=lambda e: -e["delta"])[:top]
    return {"fell": fell, "rose": rose}
