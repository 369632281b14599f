"""omni.untrimmed=frames: each 1 fps frame of an untrimmed video filtered by itself, on tiny arrays."""
import numpy as np
import pytest

from omnisource.config import ConfigError, load_config
from omnisource.data.manifest import ManifestError
from omnisource.select.filter import frame_filter
from omnisource.select.stage import evidence_of, select_rows
from omnisource.transform.stage import untrimmed_rows
from omnisource.transform.untrimmed import frame_rows

CLASSES = ["a", "b", "c"]
# Video v0 (query a): frames of a, then c (the teacher is surest of a c frame), then a weak a.
V0 = [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.05, 0.05, 0.9], [0.4, 0.35, 0.25]]
# Video v1 (query b): no frame the teacher puts in b.
V1 = [[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]]


def _rows_scores():
    rows = [dict(id="v0", source="web", path="v0.mp4", status="ok", weak_labels=["a"], true_label="a"),
            dict(id="v1", source="web", path="v1.mp4", status="ok", weak_labels=["b"], true_label="b")]
    scores = {}
    for r, fp in zip(rows, (V0, V1)):
        best = np.max(fp, axis=0)
        scores[r["id"]] = {"pred": int(best.argmax()), "prob": float(best.max()), "probs": best.tolist(),
                           "frame_probs": fp}
    return rows, scores


def test_frame_filter_keeps_the_frames_that_pass_the_rule_by_themselves():
    masks, labels = frame_filter([np.array(V0), np.array(V1)], np.array([0, 1]), "both", 0.5)
    assert masks[0].tolist() == [True, True, False, False] and masks[1].tolist() == [False, False]
    assert labels[0].tolist() == [0, 0, 0, 0]  # agreement rules: the query's class
    masks, labels = frame_filter([np.array(V0)], np.array([0]), "confidence", 0.5)
    assert masks[0].tolist() == [True, True, True, False] and labels[0].tolist() == [0, 0, 2, 0]
    masks, _ = frame_filter([np.array(V0), np.array(V1)], np.array([0, 1]), "none", 0.5)
    assert all(m.all() for m in masks)
    masks, _ = frame_filter([np.zeros((0, 3)), np.array(V1)], np.array([0, -1]), "none", 0.5)
    assert masks[0].shape == (0,) and not masks[1].any()  # a query with no class gives no label


def test_frame_filter_min_keep_ranks_each_query_class_over_its_frames():
    # b's frames (v1): p(b) 0.3, 0.1; min_keep 0.5 keeps the better one, although not top-1.
    masks, _ = frame_filter([np.array(V0), np.array(V1)], np.array([0, 1]), "both", 0.5, min_keep=0.5)
    assert masks[1].tolist() == [True, False]
    assert masks[0].tolist() == [True, True, False, False]  # a's floor (2 of 4 frames) adds nothing
    thresholds = np.array([0.75, 0.5, 0.5])  # per class, at the frame's top-1
    masks, _ = frame_filter([np.array(V0)], np.array([0]), "both", thresholds)
    assert masks[0].tolist() == [True, False, False, False]


def test_select_rows_per_frame_keeps_a_video_the_video_gate_drops_and_records_its_frames():
    rows, scores = _rows_scores()
    out, _ = select_rows(rows, scores, CLASSES, "both", 0.5, {}, min_keep=0.0)
    # The video gate: v0's best-frame top-1 is c (0.9 > 0.8), so the whole video is dropped.
    assert [r["status"] for r in out] == ["rejected", "rejected"]
    out, stats = select_rows(rows, scores, CLASSES, "both", 0.5, {}, min_keep=0.0, evidence="per_frame")
    v0, v1 = out
    assert v0["status"] == "ok" and v0["label"] == 0 and v0["kept_frames"] == [0, 1] and v0["frame_labels"] == [0, 0]
    assert v0["frames_scored"] == 4 and v0["frames_kept"] == 2
    assert v1["status"] == "rejected" and v1["frames_kept"] == 0 and "none of its 2 frames" in v1["reason"]
    assert stats["kept"] == 1 and stats["frames"] == {"scored": 6, "kept": 2}


def test_untrimmed_rows_frames_gives_one_single_frame_sample_per_kept_frame():
    rows, scores = _rows_scores()
    out, _ = select_rows(rows, scores, CLASSES, "confidence", 0.5, {}, evidence="per_frame")
    kept = [r for r in out if r["status"] == "ok"]
    cfg = load_config(None, ["omni.untrimmed=frames"])
    train = untrimmed_rows(kept, scores, cfg)
    got = sorted((r["parent_id"], r["frame_indices"], r["label"]) for r in train)
    assert got == [("v0", [0], 0), ("v0", [1], 0), ("v0", [2], 2), ("v1", [0], 0), ("v1", [1], 2)]
    assert len({r["id"] for r in train}) == 5 and not any("kept_frames" in r for r in train)
    with pytest.raises(ManifestError, match="re-run `omnisource select`"):
        frame_rows(dict(rows[0], label=0))  # selected without per-frame evidence


def test_frames_mode_is_a_feature_mode_option_and_maps_to_per_frame_evidence():
    assert evidence_of(load_config(None, ["omni.untrimmed=frames"])) == "per_frame"
    assert evidence_of(load_config(None, [])) == "frames"
    with pytest.raises(ConfigError, match="omni.untrimmed: frames .* needs mode=features"):
        load_config(None, ["mode=pixels", "omni.untrimmed=frames"])
