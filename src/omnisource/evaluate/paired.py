"""Paired comparison of two settings on the same validation clips and training seeds.

A setting's gain over a baseline is measured clip by clip against the baseline trained with the
same seed: the difference of two accuracies on the same clips has far less noise than either
accuracy, because most clips are easy (or hard) for both. The interval is a bootstrap over the
two sources of chance here, the validation clips (a sample of the videos one could have
labelled) and the training seeds.
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 2000  # bootstrap resamples of the report's and of `omnisource compare`'s paired intervals


def paired_clip_bootstrap(run_correct, base_correct, n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0, groups=None) -> dict:
    """Mean paired difference ``run − base`` of accuracy and its bootstrap interval.

    ``run_correct``, ``base_correct``: (S, N) arrays of 0/1 (or per-clip scores), row s of both
    trained with the same seed, column j the same validation clip in both ((N,) = one seed).
    Each of ``n_boot`` resamples draws N clips and S seeds with replacement, the same draw for
    both settings (pairs stay together), and takes the mean difference; the interval is the
    ``level`` percentile interval of those means. ``groups`` (N labels): draw whole groups
    instead of clips, for clips that are not independent (UCF101's clips of one group film one
    actor in one scene). Returns {"delta", "lo", "hi", "clips", "groups", "seeds", "resamples",
    "level"}; differences are fractions (0.031 = 3.1 points).
    """
    run = np.atleast_2d(np.asarray(run_correct, dtype=np.float64))
    base = np.atleast_2d(np.asarray(base_correct, dtype=np.float64))
    if run.shape != base.shape:
        raise ValueError(f"paired_clip_bootstrap: run {run.shape} and baseline {base.shape} are not paired "
                         "(same seeds x same clips)")
    if run.ndim != 2 or run.size == 0:
        raise ValueError(f"paired_clip_bootstrap: expected (seeds, clips) with at least one clip, got {run.shape}")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"paired_clip_bootstrap: level must lie in (0, 1) and n_boot >= 1, got {level}, {n_boot}")
    diff = run - base
    s, n = diff.shape
    if groups is None:
        index = np.arange(n)
    else:
        if len(groups) != n:
            raise ValueError(f"paired_clip_bootstrap: {len(groups)} group labels for {n} clips")
        index = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
    g = int(index.max()) + 1
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks keep memory at 256 x N whatever N is
        b = min(256, n_boot - start)
        ws = rng.multinomial(s, np.full(s, 1 / s), size=b)  # how often each seed is drawn
        wn = rng.multinomial(g, np.full(g, 1 / g), size=b)[:, index]  # ... each clip (with its group)
        means[start:start + b] = np.einsum("bs,sn,bn->b", ws, diff, wn) / (s * wn.sum(1))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {"delta": float(diff.mean()), "lo": float(lo), "hi": float(hi), "clips": int(n), "groups": g,
            "seeds": int(s), "resamples": int(n_boot), "level": float(level)}


def paired_correct(run: dict, base: dict) -> tuple[np.ndarray, np.ndarray, list, list[str]]:
    """(S, N) correctness of a setting and of the baseline on the S seeds both have, and the N
    clip ids of the columns (the order of the baseline's first seed). ``run``, ``base``: {seed:
    predictions ({"ids", "labels", "scores"}, ``metrics.load_predictions``)}; clips are matched by
    id, so the runs may list them in any order. ValueError when they share no seed or were
    validated on other clips."""
    seeds = sorted(s for s in run if s in base)
    if not seeds:
        raise ValueError(f"no seed in common with the baseline (seeds {sorted(run)} vs {sorted(base)})")
    ids = [str(i) for i in base[seeds[0]]["ids"]]

    def correct(p: dict, s) -> np.ndarray:
        where = {str(i): k for k, i in enumerate(p["ids"])}
        if len(where) != len(p["ids"]) or len(where) != len(ids) or set(where) != set(ids):
            raise ValueError(f"seed {s}: validated on other clips than the baseline")
        idx = np.array([where[i] for i in ids], dtype=np.int64)
        return p["scores"][idx].argmax(1) == p["labels"][idx]

    return (np.array([correct(run[s], s) for s in seeds], float),
            np.array([correct(base[s], s) for s in seeds], float), seeds, ids)


def clip_groups(rows: list[dict], ids: list[str]) -> list[str] | None:
    """The group of each validation clip ``ids`` from manifest ``rows``: its class and UCF101-style
    ``_gGG_`` group (group 01 of one class and of another are different scenes); None where some
    clip has no group."""
    group = {r["id"]: (r.get("label"), r.get("group")) for r in rows}
    out = [group.get(i, (None, None)) for i in ids]
    return [f"{c}/{g}" for c, g in out] if all(g not in (None, "") for _, g in out) else None
