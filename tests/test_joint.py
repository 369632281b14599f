"""Joint training pieces of OmniSource's student: web-source prior correction and feature gathering."""
import numpy as np
import pytest
import torch

from omnisource.config import WebSourceConfig, load_config
from omnisource.data.datasets import FeatureDataset, make_loader
from omnisource.models import create_head
from omnisource.train.joint import aux_arrays, aux_source, epoch_steps, prior_offset
from omnisource.train.loop import fit


def test_prior_offset_by_hand():
    cfg = load_config(None, [])
    target = np.repeat(np.arange(3), 4)  # balanced: π_target = 1/3 each
    assert np.allclose(prior_offset(np.repeat(np.arange(3), 10), 3, target, cfg), 0)
    one_class = prior_offset(np.zeros(27, int), 3, target, cfg)  # π_aux = (28, 1, 1) / 30
    assert one_class == pytest.approx(np.log(np.array([28, 1, 1]) / 30) - np.log(1 / 3))
    power = load_config(None, ["omni.resample=power", "omni.resample_power=0.0"])
    # p = 0 draws every class with a sample equally often: no shift left between the two present ones
    off = prior_offset(np.array([0] * 20 + [1] * 2), 3, target, power)
    assert off[0] == pytest.approx(off[1]) and off[2] < off[0]


def _student(prior_correction: bool, tmp_path, web: bool = True):
    """Two balanced target classes that overlap; a web source of class 0 only, 3x larger, at full
    loss weight (the default 0.5 halves the leak the correction removes)."""
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.0], [-1.0, 0.0]])
    y = np.repeat([0, 1], 30)
    x = (centres[y] + rng.normal(0, 1.0, (60, 2)))[:, None, :].astype(np.float32)
    wy = np.zeros(200, int)
    wx = (centres[wy] + rng.normal(0, 1.0, (200, 2)))[:, None, :].astype(np.float32)
    cfg = load_config(None, ["train.device=cpu", "train.optimizer=adamw", "train.lr=0.05", "train.epochs=5",
                             "train.min_steps=300", f"omni.prior_correction={prior_correction}"])
    torch.manual_seed(0)
    head = create_head("linear", 2, 2, 1, dropout=0.0)
    train = make_loader(FeatureDataset(x, y, 1, True), 8, True)
    src = aux_source(cfg, WebSourceConfig(name="web", weight=1.0), FeatureDataset(wx, wy, 1, True), wy, 2,
                     epoch_steps(cfg, train), target_labels=y)
    fit(head, train, None, cfg.train, tmp_path / f"{prior_correction}{web}", ["a", "b"], aux=[src] if web else [])
    with torch.no_grad():  # the point halfway between the classes: a balanced student says 0.5
        return head.eval()(torch.zeros(1, 1, 2)).softmax(-1)[0, 0].item()


def test_prior_correction_keeps_a_one_class_source_from_shifting_the_student(tmp_path):
    alone = _student(True, tmp_path, web=False)
    shifted, corrected = _student(False, tmp_path), _student(True, tmp_path)
    assert shifted - alone > 0.2  # the web source's class prior leaks into the student
    assert abs(corrected - alone) < 0.06  # corrected, the student keeps the target's prior


def test_aux_arrays_gathers_clips_stills_and_snippets():
    clip = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
    still = np.ones((1, 2), np.float32)
    seconds = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    rows = [{"id": "v", "label": 0}, {"id": "i", "label": 1}, {"id": "gone", "label": 2},
            {"id": "s", "parent_id": "u", "frame_indices": [2, 9, 15], "label": 2}]
    x, y = aux_arrays(rows, {"v": clip, "i": still}, {"u": seconds}, 4)
    assert x.shape == (3, 4, 2) and y.tolist() == [0, 1, 2]  # "gone" has no features: left out
    assert np.array_equal(x[1], np.ones((4, 2)))  # a still is replicated
    assert set(x[2][:, 0].tolist()) == {4.0, 18.0}  # seconds 2 and 9 (15 clamps to the last second, 9)
    empty_x, empty_y = aux_arrays([], {}, {}, 4)
    assert empty_x.shape[0] == 0 and empty_y.shape == (0,)


def test_align_offset_recovers_a_domain_shift_under_the_source_class_mix():
    from omnisource.train.joint import align_offset

    rng = np.random.default_rng(1)
    means = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    ty = np.repeat([0, 1, 2], 20)
    tx = (means[ty][:, None, :] + rng.normal(0, 0.1, (60, 2, 3))).astype(np.float32)
    shift = np.array([1.0, -2.0, 0.5])
    wy = np.array([0] * 90 + [1] * 10)  # a source mostly of class 0, none of class 2
    wx = (means[wy][:, None, :] + shift + rng.normal(0, 0.1, (100, 1, 3))).astype(np.float32)
    assert align_offset(wx, wy, tx, ty, 3) == pytest.approx(shift, abs=0.05)
    # A label the target lacks is left out of the mix instead of failing.
    assert align_offset(wx, wy, tx[ty != 1], ty[ty != 1], 3) == pytest.approx(shift, abs=0.05)


def test_align_needs_feature_mode():
    from omnisource.config import ConfigError

    with pytest.raises(ConfigError, match="omni.align"):
        load_config(None, ["mode=pixels", "omni.align=mean"])
    assert load_config(None, ["mode=pixels"]).omni.align == "auto"


def test_distill_targets_mix_the_pseudo_label_with_the_sharpened_teacher():
    from omnisource.train.joint import distill_targets

    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    labels = np.array([0, 1])
    assert np.array_equal(distill_targets(probs, labels, 0.0), np.eye(3)[labels])  # weight 0: today's hard labels
    assert distill_targets(probs, labels, 1.0) == pytest.approx(probs)
    sharp = distill_targets(probs, labels, 1.0, temperature=0.5)  # p^2, renormalised
    assert sharp[0] == pytest.approx(np.array([0.36, 0.09, 0.01]) / 0.46, abs=1e-6)
    mixed = distill_targets(probs, labels, 0.5, temperature=2.0)
    q = np.sqrt(probs[1]) / np.sqrt(probs[1]).sum()
    assert mixed[1] == pytest.approx(0.5 * np.eye(3)[1] + 0.5 * q, abs=1e-6)
    assert mixed.sum(1) == pytest.approx(1.0) and mixed.dtype == np.float32


def test_teacher_probs_of_stills_pseudo_clips_snippets_and_windows():
    from omnisource.data.manifest import ManifestError
    from omnisource.train.joint import soft_labels, teacher_probs

    scores = {"img": {"probs": [0.7, 0.2, 0.1]},
              "vid": {"probs": [0.1, 0.1, 0.8], "frame_probs": [[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.2, 0.8]],
                      "clip_windows": [[0.0, 2.0], [2.0, 3.0]], "clip_probs": [[0.5, 0.5, 0.0], [0.0, 0.1, 0.9]]}}
    rows = [{"id": "img", "label": 0},
            {"id": "img#warp", "parent_id": "img", "label": 0},  # a derived pseudo-clip: its image's scores
            {"id": "snip", "parent_id": "vid", "frame_indices": [0, 1, 7], "label": 1},  # 7 clamps to frame 2
            {"id": "win", "parent_id": "vid", "start_s": 2.0, "end_s": 3.0, "label": 2}]
    got = np.stack([teacher_probs(r, scores) for r in rows])
    assert got[:2] == pytest.approx(np.array([[0.7, 0.2, 0.1]] * 2))
    assert got[2] == pytest.approx(np.array([1.0, 1.2, 0.8]) / 3)
    assert got[3] == pytest.approx([0.0, 0.1, 0.9])
    labels = np.array([r["label"] for r in rows])
    assert soft_labels(load_config(None, []), rows, scores, labels) is None  # off by default
    soft = soft_labels(load_config(None, ["omni.soft_targets=1"]), rows, scores, labels)
    assert soft == pytest.approx(got)
    with pytest.raises(ManifestError, match="no teacher score"):
        teacher_probs({"id": "unscored", "label": 0, "path": "x.jpg"}, scores)


def test_soft_targets_reach_the_student_and_hard_labels_still_drive_resampling(tmp_path):
    """A web source at one point whose teacher says (0.7, 0.3): with soft targets the student's
    probability there tends to 0.7; with the hard pseudo-label, towards 1."""
    from omnisource.train.joint import feature_source

    def student(soft_targets: float) -> float:
        cfg = load_config(None, ["train.device=cpu", "train.optimizer=adamw", "train.lr=0.05", "train.epochs=4",
                                 "train.min_steps=300", "omni.prior_correction=false", "omni.align=none"])
        rng = np.random.default_rng(0)
        y = np.repeat([0, 1], 10)  # the target set sits far from the web point, one class either side
        x = (np.array([[0.0, 3.0], [0.0, -3.0]])[y] + rng.normal(0, 0.3, (20, 2)))[:, None, :].astype(np.float32)
        wx = np.tile(np.array([[[3.0, 0.0]]], np.float32), (40, 1, 1))
        wy = np.zeros(40, np.int64)
        soft = np.tile(np.float32([[0.7, 0.3]]), (40, 1)) if soft_targets else None
        torch.manual_seed(0)
        head = create_head("linear", 2, 2, 1, dropout=0.0)
        train = make_loader(FeatureDataset(x, y, 1, True), 8, True)
        src = feature_source(cfg, WebSourceConfig(name="web", weight=1.0), wx, wy, x, y, 2,
                             epoch_steps(cfg, train), soft)
        batch = next(iter(src.loader))
        assert batch[1].shape == ((4, 2) if soft_targets else (4,))
        fit(head, train, None, cfg.train, tmp_path / str(soft_targets), ["a", "b"], aux=[src])
        with torch.no_grad():
            return head.eval()(torch.from_numpy(wx[:1])).softmax(-1)[0, 0].item()

    hard, soft = student(0.0), student(1.0)
    assert hard > 0.9
    assert soft == pytest.approx(0.7, abs=0.08)


def test_soft_targets_need_feature_mode_and_a_valid_range():
    from omnisource.config import ConfigError

    with pytest.raises(ConfigError, match="omni.soft_targets: soft targets need mode=features"):
        load_config(None, ["mode=pixels", "omni.soft_targets=0.5"])
    with pytest.raises(ConfigError, match=r"omni.soft_targets: must be in \[0, 1\]"):
        load_config(None, ["omni.soft_targets=1.5"])
    with pytest.raises(ConfigError, match="omni.soft_temperature: must be positive"):
        load_config(None, ["omni.soft_temperature=0"])
    assert load_config(None, ["mode=pixels"]).omni.soft_targets == 0.0
