"""Classification metrics: top-k accuracy, mean class accuracy, confusion matrix; per-clip
predictions saved beside them so that runs can be compared clip by clip."""
from __future__ import annotations

from pathlib import Path

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


def save_predictions(path: Path, ids, labels, scores) -> Path:
    """Write ``ids`` (manifest ids of the validation rows), ``labels`` and ``scores`` (N, C)
    atomically as an .npz (no pickled objects, so reading it back needs no trust)."""
    from ..data.manifest import atomic_write_npz

    ids, labels, scores = np.asarray(list(ids), dtype=str), np.asarray(labels, np.int64), np.asarray(scores)
    if not len(ids) == len(labels) == len(scores):
        raise ValueError(f"predictions: {len(ids)} ids, {len(labels)} labels and {len(scores)} score rows differ")
    return atomic_write_npz(Path(path), ids=ids, labels=labels, scores=scores.astype(np.float32))


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    """{"ids", "labels", "scores"} of a predictions.npz; ValueError when it is not one."""
    import zipfile

    try:
        z = np.load(Path(path), allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with z:
            out = {k: z[k] for k in ("ids", "labels", "scores")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{Path(path).name}: not a predictions file ({err})") from None
    if not len(out["ids"]) == len(out["labels"]) == len(out["scores"]):
        raise ValueError(f"{Path(path).name}: ids, labels and scores differ in length")
    return out
