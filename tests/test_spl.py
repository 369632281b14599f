"""Sub-Pseudo Labels on a 3-class confusion matrix whose answers are worked out by hand."""
import json

import numpy as np
import pytest

from omnisource.select import spl

# Rows: weak label l, columns: teacher prediction T(x).
C = np.array([[5, 3, 1],
              [1, 4, 2],
              [0, 2, 6]])
# Off-diagonal cells by count: (0,1)=3, (1,2)=2, (2,1)=2, (0,2)=1, (1,0)=1, (2,0)=0.
# K=2 keeps (K-1)*N = 3 of them: (0,1), (1,2), (2,1); (0,2) and (1,0) are not selected.


def samples(c=C, seed=0):
    weak = np.repeat(np.arange(3), c.sum(1))
    teacher = np.concatenate([np.repeat(np.arange(3), row) for row in c])
    perm = np.random.default_rng(seed).permutation(len(weak))
    return weak[perm], teacher[perm]


def test_confusion_and_noise_ratio():
    weak, teacher = samples()
    assert (spl.confusion(weak, teacher, 3) == C).all()
    assert spl.noise_ratio(C) == pytest.approx(9 / 24)
    assert spl.noise_ratio(np.eye(3) * 4) == 0.0


def test_spl_full_is_n_times_weak_plus_teacher():
    weak, teacher = samples()
    r = spl.spl_full(weak, teacher, 3)
    assert r.num_classes == 9
    assert (r.labels == 3 * weak + teacher).all()
    assert (np.bincount(r.labels, minlength=9) == C.ravel()).all()
    assert r.label_map[5] == {"label": 5, "weak": 1, "teacher": 2, "cells": [[1, 2]]}


def test_top_cells_k2():
    mask = spl.top_cells(C, 2)
    expected = np.eye(3, dtype=bool)
    expected[0, 1] = expected[1, 2] = expected[2, 1] = True
    assert (mask == expected).all()
    assert spl.samples_cover_ratio(C, mask) == pytest.approx(22 / 24)
    assert (spl.top_cells(C, 1) == np.eye(3, dtype=bool)).all()
    # K=3 asks for 6 off-diagonal cells, but (2,0) is empty and is never a class.
    assert spl.top_cells(C, 3).sum() == 3 + 5 and not spl.top_cells(C, 3)[2, 0]


def test_top_cells_ties_go_to_row_major_order():
    c = np.array([[4, 1, 1], [1, 4, 0], [0, 0, 4]])
    mask = spl.top_cells(c, 2)  # three cells tie at 1 and (K-1)*N = 3: all three kept
    assert mask[0, 1] and mask[0, 2] and mask[1, 0]
    c2 = np.array([[4, 1, 1, 1], [1, 4, 0, 0], [0, 0, 4, 0], [0, 0, 0, 4]])
    mask2 = spl.top_cells(c2, 2)  # four non-empty off-diagonal cells, (K-1)*N = 4 slots
    assert mask2.sum() == 4 + 4
    c3 = np.array([[4, 1, 1], [1, 4, 1], [1, 0, 4]])  # five tied cells, three slots
    mask3 = spl.top_cells(c3, 2)
    assert mask3[0, 1] and mask3[0, 2] and mask3[1, 0] and not mask3[1, 2] and not mask3[2, 0]


def test_spl_m_merges_unselected_cells_into_the_row_diagonal():
    weak, teacher = samples()
    r = spl.spl_m(weak, teacher, 3, k=2)
    assert r.num_classes == 6  # K*N
    # Diagonal cells are classes 0..2; (0,1) -> 3, (1,2) -> 4, (2,1) -> 5 in row-major order.
    expected = {(0, 0): 0, (1, 1): 1, (2, 2): 2, (0, 1): 3, (1, 2): 4, (2, 1): 5, (0, 2): 0, (1, 0): 1}
    for l, t, y in zip(weak, teacher, r.labels):
        assert y == expected[(l, t)]
    assert (np.bincount(r.labels, minlength=6) == [5 + 1, 4 + 1, 6, 3, 2, 2]).all()
    assert r.cover == pytest.approx(22 / 24)
    assert r.label_map[0]["cells"] == [[0, 0], [0, 2]] and r.label_map[1]["cells"] == [[1, 1], [1, 0]]
    assert r.label_map[4] == {"label": 4, "weak": 1, "teacher": 2, "cells": [[1, 2]]}


def test_spl_d_drops_exactly_the_unselected_samples():
    weak, teacher = samples()
    r = spl.spl_d(weak, teacher, 3, k=2)
    dropped = r.labels < 0
    assert dropped.sum() == 2
    assert set(zip(weak[dropped], teacher[dropped])) == {(0, 2), (1, 0)}
    m = spl.spl_m(weak, teacher, 3, k=2)
    assert (r.labels[~dropped] == m.labels[~dropped]).all()
    assert r.cover == pytest.approx(22 / 24) and r.num_classes == 6


def test_spl_b_gives_2n_classes():
    weak, teacher = samples()
    r = spl.spl_b(weak, teacher, 3)
    assert r.num_classes == 6
    assert (np.bincount(r.labels, minlength=6) == [5, 4, 6, 4, 3, 2]).all()
    assert r.label_map[3] == {"label": 3, "weak": 0, "teacher": "disagree", "cells": [[0, 1], [0, 2]]}


def test_baselines():
    weak, teacher = samples()
    assert (spl.make_labels("weak", weak, teacher, 3).labels == weak).all()
    assert (spl.make_labels("teacher", weak, teacher, 3).labels == teacher).all()
    a = spl.make_labels("agreement", weak, teacher, 3)
    assert (a.labels >= 0).sum() == 15 and a.cover == pytest.approx(15 / 24)
    assert (a.labels[a.labels >= 0] == weak[a.labels >= 0]).all()
    assert spl.make_labels("spl_m", weak, teacher, 3, k=1).labels.tolist() == weak.tolist()


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="K must be in"):
        spl.spl_m([0, 1], [1, 0], 2, k=3)
    with pytest.raises(ValueError, match=r"class index in \[0, 2\)"):
        spl.confusion([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="same length"):
        spl.confusion([0, 1], [0], 2)
    with pytest.raises(ValueError, match="unknown label method"):
        spl.make_labels("spl_x", [0], [0], 2)


def test_label_map_file(tmp_path):
    weak, teacher = samples()
    r = spl.spl_m(weak, teacher, 3, k=2)
    path = spl.save_label_map(tmp_path / "m.labelmap.json", r, "spl_m", ["a", "b", "c"], {"noise_ratio": 0.375})
    doc = json.loads(path.read_text())
    assert doc["num_classes"] == 6 and doc["noise_ratio"] == 0.375
    assert [c["name"] for c in doc["classes"]] == ["a", "b", "c", "a|b", "b|c", "c|b"]
