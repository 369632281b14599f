"""The report's plots, drawn with matplotlib's object API (no pyplot state, Agg canvas).

Every function returns a ``Figure``; ``png_bytes`` renders it for embedding and saving.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

COLORS = {"ok": "#2b8a3e", "kept": "#2b8a3e", "rejected": "#e8590c", "duplicate": "#7048e8", "corrupt": "#c92a2a"}
WIDTH = 10.0  # inches: at the default dpi a figure is as wide as the report page (1100 px)
ARM_COLORS = ["#1c7ed6", "#e8590c", "#2b8a3e", "#7048e8", "#c2255c", "#5c940d", "#495057"]


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def stage_counts_figure(rows: list[dict]) -> Figure:
    """Stacked bars per source: kept, rejected by the teacher, duplicates, corrupt."""
    fig = Figure(figsize=(WIDTH, 3.4))
    ax = fig.add_subplot()
    names = [r["source"] for r in rows]
    bottom = np.zeros(len(rows))
    for status in ("ok", "rejected", "duplicate", "corrupt"):
        values = np.array([r.get(status, 0) or 0 for r in rows], dtype=float)
        label = "kept" if status == "ok" else status
        ax.bar(names, values, bottom=bottom, label=label, color=COLORS[status])
        bottom += values
    ax.set_ylabel("samples")
    ax.set_title("Samples per stage and source")
    ax.legend(fontsize=8, frameon=False)
    fig.autofmt_xdate(rotation=20)
    return fig


def class_counts_figure(name: str, classes: list[str], before, after) -> Figure:
    """OmniSource Fig. 3: per-class counts of one web source before and after filtering, on a
    log axis with each bar's count written on it, so 6 kept images of one class stay readable
    beside 1,181 of queries that name no class."""
    before = list(before)
    if len(before) > len(classes) and not before[-1]:
        before = before[:len(classes)]  # every query names a class: no "(no class)" bar
    labels = list(classes) + ["(no class)"] * (len(before) - len(classes))
    after = list(after) + [0] * (len(labels) - len(after))
    x = np.arange(len(labels))
    fig = Figure(figsize=(WIDTH, 3.6))
    ax = fig.add_subplot()
    for offset, values, label, color in ((-0.2, before, "before filtering", "#adb5bd"),
                                         (0.2, after, "kept", COLORS["kept"])):
        bars = ax.bar(x + offset, values, 0.4, label=label, color=color)
        ax.bar_label(bars, labels=[str(v) if v else "" for v in values], fontsize=7, padding=1)
    ax.set_yscale("log")
    top = max([*before, *after, 1])
    ax.set_ylim(0.7, top * 3)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("samples (log scale)")
    ax.set_title(f"{name}: samples per class")
    ax.legend(fontsize=8, frameon=False)
    return fig


def _confusion_panel(fig, ax, cm, classes: list[str], title: str, diverging: bool = False) -> None:
    cm = np.asarray(cm, dtype=np.float64)
    whole = bool(np.all(cm == np.round(cm)))
    n = len(classes)
    span = max(1.0, float(np.abs(cm).max())) if cm.size else 1.0
    im = ax.imshow(cm, cmap="RdBu_r" if diverging else "Blues", vmin=-span if diverging else 0, vmax=span)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    strong = abs(cm[i, j]) > span / 2
                    text = f"{cm[i, j]:{'+' if diverging else ''}.{0 if whole else 1}f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if strong else "black")


def confusion_figure(name: str, cm, classes: list[str]) -> Figure:
    n = len(classes)
    fig = Figure(figsize=(max(3.5, 0.45 * n + 2.0), max(3.0, 0.45 * n + 1.5)))
    _confusion_panel(fig, fig.add_subplot(), cm, classes, f"{name}: confusion matrix")
    return fig


def confusion_compare_figure(base: str, base_cm, others: list[tuple[str, object]], classes: list[str]) -> Figure:
    """The baseline's confusion matrix, each other run's, and each other minus the baseline
    (blue: fewer samples in that cell than the baseline, red: more) in one row per run."""
    n = len(classes)
    side = max(3.2, 0.42 * n + 1.8)
    fig = Figure(figsize=(max(WIDTH, 3 * side), side * len(others)))
    axes = np.atleast_2d(fig.subplots(len(others), 3, squeeze=False))
    base_cm = np.asarray(base_cm, dtype=np.float64)
    for row, (name, cm) in zip(axes, others):
        cm = np.asarray(cm, dtype=np.float64)
        _confusion_panel(fig, row[0], base_cm, classes, base)
        _confusion_panel(fig, row[1], cm, classes, name)
        _confusion_panel(fig, row[2], cm - base_cm, classes, f"{name} − {base}", diverging=True)
    fig.tight_layout()
    return fig


def arm_curves_figure(arms: dict[str, list[list[dict]]]) -> Figure:
    """Every arm (teacher, student, ...) on shared axes: training loss on the target batch
    (solid) and on web batches (dashed), and validation top-1; one thin line per seed, a thick
    one for the mean over seeds."""
    fig = Figure(figsize=(WIDTH, 3.6))
    loss_ax, acc_ax = fig.subplots(1, 2, sharex=True)
    for k, (arm, runs) in enumerate(arms.items()):
        color = ARM_COLORS[k % len(ARM_COLORS)]
        sources = sorted({s for recs in runs for r in recs for s in r.get("train", {})},
                         key=lambda s: (s != "target", s))
        for s in sources:
            series = [[(r["epoch"], r["train"][s]["loss"]) for r in recs if s in r.get("train", {})] for recs in runs]
            _seeds_and_mean(loss_ax, series, color, "-" if s == "target" else "--",
                            f"{arm}: {s}" if len(sources) > 1 else arm)
        val = [[(r["epoch"], r["val"]["top1"]) for r in recs if "val" in r] for recs in runs]
        _seeds_and_mean(acc_ax, val, color, "-", arm + (f" ({len(runs)} seeds)" if len(runs) > 1 else ""))
    loss_ax.set(title="training loss", xlabel="epoch")
    acc_ax.set(title="validation top-1", xlabel="epoch", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        if ax.lines:
            ax.legend(fontsize=7, frameon=False)
    return fig


def _seeds_and_mean(ax, series: list[list[tuple[float, float]]], color: str, style: str, label: str) -> None:
    series = [s for s in series if s]
    if not series:
        return
    if len(series) == 1:
        ax.plot(*zip(*series[0]), style, color=color, marker=".", label=label)
        return
    for s in series:
        ax.plot(*zip(*s), style, color=color, alpha=0.3, linewidth=0.8)
    common = sorted(set.intersection(*[{e for e, _ in s} for s in series]))
    if common:
        by_epoch = [dict(s) for s in series]
        ax.plot(common, [np.mean([d[e] for d in by_epoch]) for e in common], style, color=color, linewidth=2,
                marker=".", label=f"{label}, mean")


def histogram_figure(title: str, values) -> Figure:
    fig = Figure(figsize=(WIDTH, 3.0))
    ax = fig.add_subplot()
    ax.hist(np.asarray(values, dtype=float), bins=30, color="#1c7ed6")
    ax.set(title=title, xlabel="weight", ylabel="samples")
    return fig


def _values(points: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if p.get(key) is None else p[key] for p in points], dtype=float)


def sweep_axis(kind: str, points: list[dict]) -> str:
    """The x-axis label of a sweep: what its point values count."""
    if kind == "labels":
        kinds = {"fraction" if str(p["point"]).strip().endswith("%") else "per_class" for p in points}
        return {frozenset({"per_class"}): "labeled training videos per class",
                frozenset({"fraction"}): "labeled training videos (% of each class)"}.get(
            frozenset(kinds), "labeled training videos per class, or % of each class")
    if kind == "grid":
        keys = sorted({k for p in points for k in p.get("settings", {})})
        return ", ".join(keys) or "setting"
    return {"teacher": "teacher (its overrides)", "ratio": "|B_A| : |B_T|"}.get(kind, kind)


def sweep_figure(kind: str, points: list[dict], x_label: str | None = None) -> Figure:
    """Validation top-1 of the student and the target-only baseline at every sweep point, with
    the points' intervals where they have them (``<key>_lo`` / ``<key>_hi``)."""
    fig = Figure(figsize=(WIDTH, 3.6))
    ax = fig.add_subplot()
    names = [str(p["point"]) + (f"\n({p['labeled']} videos)" if p.get("labeled") is not None else "")
             for p in points]
    x = np.arange(len(points))
    for key, label, style in (("student_top1", "OmniSource student", "o-"), ("baseline_top1", "target only", "s--"),
                              ("teacher_top1", "teacher", "^:")):
        ys, lo, hi = (_values(points, k) for k in (key, f"{key}_lo", f"{key}_hi"))
        if np.isnan(ys).all() or (key == "teacher_top1" and kind != "teacher"):
            continue
        if np.isfinite(lo).any():
            err = np.nan_to_num(np.stack([ys - lo, hi - ys]), nan=0.0)
            ax.errorbar(x, ys, yerr=err, fmt=style, capsize=3, label=label + " (95% interval)")
        else:
            ax.plot(x, ys, style, label=label)
    ax.set_xticks(x, names, fontsize=8)
    ax.set(xlabel=x_label or sweep_axis(kind, points), ylabel="validation top-1", title=f"sweep {kind}")
    ax.legend(fontsize=8, frameon=False)
    return fig


def compare_figure(rows: list[dict]) -> Figure:
    """``omnisource compare``: top-1 and mean class accuracy of each arm with its 95 % interval."""
    fig = Figure(figsize=(WIDTH, 0.9 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for key, label, offset, color in (("top1", "top-1", 0.12, ARM_COLORS[0]),
                                      ("mca", "mean class accuracy", -0.12, ARM_COLORS[1])):
        xs, lo, hi = (_values(rows, k) for k in (key, f"{key}_lo", f"{key}_hi"))
        err = np.nan_to_num(np.stack([xs - lo, hi - xs]), nan=0.0)
        ax.errorbar(100 * xs, y + offset, xerr=100 * err, fmt="o", capsize=3, color=color,
                    label=label + " (95 % interval)")
    ax.set_yticks(y, [f"{r['arm']} ({r['runs']} run{'s' if r['runs'] > 1 else ''})" for r in rows], fontsize=8)
    ax.set(xlabel="validation accuracy %", title="compare")
    ax.legend(fontsize=8, frameon=False)
    return fig
