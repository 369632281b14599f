"""Report sections on the training runs: every arm on shared axes, and confusion differences.

An *arm* is one setting trained with one or more seeds (``omnisource``, ``omnisource_seed1``,
... form the arm ``omnisource``). The teacher (the baseline) and the student are drawn on the
same axes, seeds as thin lines around their mean, instead of one plot per run; the confusion
matrices are averaged over seeds and shown beside their difference with the baseline's.
"""
from __future__ import annotations

import re

import numpy as np

from . import collect, figures
from . import html as H
from .collect import Unavailable

SEED_SUFFIX = re.compile(r"_seed\d+$")


def arm_of(run: str) -> str:
    """``omnisource_seed2`` -> ``omnisource``."""
    return SEED_SUFFIX.sub("", run)


def group_arms(runs: dict[str, object]) -> dict[str, list]:
    """{arm: [value of each of its runs]} in the order the runs come."""
    out: dict[str, list] = {}
    for name, value in runs.items():
        out.setdefault(arm_of(name), []).append(value)
    return out


def mean_confusion(metrics: list[dict]) -> np.ndarray:
    """The confusion matrix averaged over the seeds of an arm (counts of one seed's run)."""
    return np.mean([np.asarray(m["confusion_matrix"], dtype=np.float64) for m in metrics], axis=0)


def _ordered(arms: dict, first: str) -> dict:
    return {k: arms[k] for k in sorted(arms, key=lambda a: (a != first, a))}


def curves_section(cfg, ws, w, baseline: str | None = None) -> str:
    arms = group_arms(collect.gather_curves(ws))
    try:
        first = arm_of(collect.baseline_run(cfg, collect.gather_metrics(ws), baseline))
    except Unavailable:
        first = ""
    arms = _ordered(arms, first)
    seeds = ", ".join(f"{a}: {len(r)} seed{'s' if len(r) > 1 else ''}" for a, r in arms.items())
    return (f"<p>{H.esc(seeds)}; solid: loss on target batches, dashed: on web batches.</p>"
            + w.figure(figures.arm_curves_figure(arms), "curves", "training curves of every run"))


def confusion_section(cfg, ws, w, baseline: str | None = None) -> str:
    metrics = {n: m for n, m in collect.gather_metrics(ws).items() if "confusion_matrix" in m}
    if not metrics:
        raise Unavailable("no run's metrics.json holds a confusion matrix")
    try:
        base_arm = arm_of(collect.baseline_run(cfg, metrics, baseline))
    except Unavailable:
        base_arm = arm_of(next(iter(metrics)))
    arms = group_arms(metrics)
    base = arms[base_arm]
    classes = base[0]["classes"]
    others, skipped = [], []
    for arm, ms in _ordered(arms, base_arm).items():
        if arm == base_arm:
            continue
        (others if ms[0].get("classes") == classes else skipped).append((arm, ms))
    label = {a: f"{a} (mean of {len(ms)} seeds)" if len(ms) > 1 else a for a, ms in arms.items()}
    if not others:
        return w.figure(figures.confusion_figure(label[base_arm], mean_confusion(base), classes),
                        "confusion", f"{base_arm}: confusion matrix")
    fig = figures.confusion_compare_figure(label[base_arm], mean_confusion(base),
                                           [(label[a], mean_confusion(ms)) for a, ms in others], classes)
    note = "".join(H.unavailable(f"{a}: its classes differ from {base_arm}'s") for a, _ in skipped)
    return (f"<p>rows: true class, columns: predicted; the right-hand panels are each run minus "
            f"<b>{H.esc(base_arm)}</b> (red: more validation clips in that cell, blue: fewer).</p>" + note
            + w.figure(fig, "confusion", "confusion matrices and their differences with the baseline"))
