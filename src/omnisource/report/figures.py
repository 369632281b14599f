"""The report's plots, drawn with matplotlib's object API (no pyplot state, Agg canvas).

Every function returns a ``Figure``; ``png_bytes`` renders it for embedding and saving.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

COLORS = {"ok": "#2b8a3e", "kept": "#2b8a3e", "rejected": "#e8590c", "duplicate": "#7048e8", "corrupt": "#c92a2a"}


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def stage_counts_figure(rows: list[dict]) -> Figure:
    """Stacked bars per source: kept, rejected by the teacher, duplicates, corrupt."""
    fig = Figure(figsize=(max(4.0, 1.4 * len(rows) + 2), 3.2))
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
    """OmniSource Fig. 3: per-class counts of one web source before and after filtering."""
    before = list(before)
    if len(before) > len(classes) and not before[-1]:
        before = before[:len(classes)]  # every query names a class: no "(no class)" bar
    labels = list(classes) + ["(no class)"] * (len(before) - len(classes))
    after = list(after) + [0] * (len(labels) - len(after))
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(4.5, 0.45 * len(labels) + 2), 3.2))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, before, 0.4, label="before filtering", color="#adb5bd")
    ax.bar(x + 0.2, after, 0.4, label="kept", color=COLORS["kept"])
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("samples")
    ax.set_title(f"{name}: samples per class")
    ax.legend(fontsize=8, frameon=False)
    return fig


def curves_figure(name: str, records: list[dict]) -> Figure:
    """Training loss per source and validation top-1 over epochs of one run."""
    fig = Figure(figsize=(8, 3))
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in records]
    sources = sorted({s for r in records for s in r.get("train", {})})
    for s in sources:
        pts = [(r["epoch"], r["train"][s]) for r in records if s in r.get("train", {})]
        loss_ax.plot([e for e, _ in pts], [v["loss"] for _, v in pts], marker=".", label=s)
        acc_ax.plot([e for e, _ in pts], [v["acc"] for _, v in pts], marker=".", label=f"train {s}")
    val = [(r["epoch"], r["val"]["top1"]) for r in records if "val" in r]
    if val:
        acc_ax.plot([e for e, _ in val], [v for _, v in val], "k-o", label="validation top-1")
    loss_ax.set(title=f"{name}: training loss", xlabel="epoch")
    acc_ax.set(title=f"{name}: accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.legend(fontsize=7, frameon=False)
        if epochs:
            ax.set_xlim(min(epochs) - 0.2, max(epochs) + 0.2)
    return fig


def confusion_figure(name: str, cm, classes: list[str]) -> Figure:
    cm = np.asarray(cm)
    n = len(classes)
    fig = Figure(figsize=(max(3.5, 0.45 * n + 2.0), max(3.0, 0.45 * n + 1.5)))
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=f"{name}: confusion matrix")
    if n <= 20:
        top = cm.max() if cm.size else 0
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > top / 2 else "black")
    return fig


def histogram_figure(title: str, values) -> Figure:
    fig = Figure(figsize=(4.5, 2.8))
    ax = fig.add_subplot()
    ax.hist(np.asarray(values, dtype=float), bins=30, color="#1c7ed6")
    ax.set(title=title, xlabel="weight", ylabel="samples")
    return fig


def sweep_figure(kind: str, points: list[dict], x_label: str) -> Figure:
    """Validation top-1 of the student and the target-only baseline at every sweep point."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    names = [str(p["point"]) for p in points]
    x = np.arange(len(points))
    for key, label, style in (("student_top1", "OmniSource student", "o-"), ("baseline_top1", "target only", "s--"),
                              ("teacher_top1", "teacher", "^:")):
        ys = [p.get(key) for p in points]
        if any(y is not None for y in ys) and not (key == "teacher_top1" and kind != "teacher"):
            ax.plot(x, [np.nan if y is None else y for y in ys], style, label=label)
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set(xlabel=x_label, ylabel="validation top-1", title=f"sweep {kind}")
    ax.legend(fontsize=8, frameon=False)
    return fig
