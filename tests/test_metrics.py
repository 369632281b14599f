import numpy as np
import pytest

from omnisource.evaluate.metrics import classification_metrics, confusion_matrix, topk_accuracy


def test_metrics_by_hand():
    # 3 classes; class 0 has 3 samples (2 right), class 1 has 1 (right), class 2 has 1 (wrong).
    scores = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .5, .3], [.1, .7, .2], [.5, .1, .4]])
    labels = np.array([0, 0, 0, 1, 2])
    m = classification_metrics(scores, labels, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(3 / 5)
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert topk_accuracy(scores, labels, 2) == pytest.approx(4 / 5)  # sample 3 ([.2, .5, .3], label 0) misses
    assert m["per_class_accuracy"]["c"] == 0.0


def test_confusion_ignores_absent_classes_in_mca():
    cm = confusion_matrix(np.array([0, 0]), np.array([0, 1]), 3)
    assert cm.sum() == 2
    m = classification_metrics(np.array([[1, 0, 0], [0, 1, 0.]]), np.array([0, 0]), ["a", "b", "c"])
    assert m["mean_class_accuracy"] == pytest.approx(0.5)
    assert m["per_class_accuracy"]["b"] is None
