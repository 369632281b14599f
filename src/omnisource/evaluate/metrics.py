"""Classification metrics: top-k accuracy, mean class accuracy, confusion matrix."""
from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, int), np.asarray(preds, int)), 1)
    return cm


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    topk = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean(np.any(topk == np.asarray(labels)[:, None], axis=1)))


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Average over classes present in the labels of per-class recall."""
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def classification_metrics(scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    preds = scores.argmax(axis=1) if len(labels) else np.zeros(0, int)
    cm = confusion_matrix(labels, preds, len(classes))
    support = cm.sum(axis=1)
    per_class = {name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(classes)}
    return {
        "num_samples": int(len(labels)),
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def metrics_table(metrics: dict, title: str = "Evaluation"):
    """A rich Table with the headline numbers and per-class accuracy."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("num_samples", "top1", "top5", "mean_class_accuracy"):
        value = metrics[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for name, acc in metrics["per_class_accuracy"].items():
        table.add_row(escape(f"  accuracy of {name}"), "n/a" if acc is None else f"{acc:.4f}")
    return table
