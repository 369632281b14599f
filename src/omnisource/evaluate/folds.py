"""Paired comparisons of a setting against its baseline over cross-validation runs.

A *run* is one (fold, seed) pair: the same labelled subset, the same validation clips and the
same training seed for the setting and for its baseline, so their difference removes the large
variance of which k videos were drawn. Intervals come from a percentile bootstrap over the runs,
resampled within each fold so that every replicate keeps the folds' balance.
"""
from __future__ import annotations

import numpy as np


def group_folds(groups: list[str], n_folds: int) -> list[list[str]]:
    """Split sorted ``groups`` into ``n_folds`` folds by dealing them out in turn
    (08, 12, 16, … / 09, 13, …): folds differ in size by at most one group and each spans the range."""
    unique = sorted(set(groups))
    if not 2 <= n_folds <= len(unique):
        raise ValueError(f"n_folds must be between 2 and the number of groups ({len(unique)}), got {n_folds}")
    return [unique[i::n_folds] for i in range(n_folds)]


def fold_paired_interval(deltas, strata=None, n_boot: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of paired differences ``deltas`` (one per run), with a
    percentile bootstrap interval at ``level``; ``strata`` (one label per run, e.g. the fold)
    resamples runs within each stratum. One run gives an interval of zero width."""
    d = np.asarray(deltas, dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    strata = np.zeros(len(d), int) if strata is None else np.asarray(strata)
    if len(strata) != len(d):
        raise ValueError(f"{len(strata)} strata for {len(d)} differences")
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for s in np.unique(strata):
        part = d[strata == s]
        total += part[rng.integers(0, len(part), size=(n_boot, len(part)))].sum(1)
    means = total / len(d)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(d.mean()), float(lo), float(hi)


def summarise_setting(runs: dict, baseline: dict, key: str = "top1") -> dict:
    """Mean ± std of ``key`` over a setting's runs and its paired difference with the baseline.

    ``runs`` / ``baseline``: (fold, seed) -> metrics dict. Only runs present in both are paired.
    """
    pairs = sorted(set(runs) & set(baseline))
    values = np.array([runs[p][key] for p in sorted(runs)], dtype=np.float64)
    deltas = [runs[p][key] - baseline[p][key] for p in pairs]
    mean, lo, hi = fold_paired_interval(deltas, [p[0] for p in pairs]) if pairs else (float("nan"),) * 3
    return {f"{key}_mean": float(values.mean()), f"{key}_std": float(values.std()), "delta_mean": mean,
            "delta_lo": lo, "delta_hi": hi, "runs": len(runs), "folds": len({p[0] for p in runs})}
