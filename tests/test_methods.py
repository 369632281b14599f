"""Pure method functions on tiny synthetic inputs with answers worked out by hand."""
import cv2
import numpy as np
import pytest

from omnisource.data.resample import ResampledSampler, class_weights, sample_weights
from omnisource.select.filter import keep_mask, map_queries, normalise_name, precision_recall, pseudo_labels
from omnisource.transform import image_to_clip as i2c
from omnisource.transform.untrimmed import clip_windows, positive_clips, positive_frames, select_snippet


def test_class_weights_by_hand():
    counts = np.array([100, 25, 4, 0])
    assert class_weights(counts, "none") == pytest.approx([100 / 129, 25 / 129, 4 / 129, 0])
    assert class_weights(counts, "clip", clip=25) == pytest.approx([25 / 54, 25 / 54, 4 / 54, 0])
    assert class_weights(counts, "power", power=0.5) == pytest.approx([10 / 17, 5 / 17, 2 / 17, 0])
    with pytest.raises(ValueError, match="positive clip count"):
        class_weights(counts, "clip")
    with pytest.raises(ValueError, match="unknown resampling mode"):
        class_weights(counts, "sqrt")


def test_sample_weights_marginals():
    labels = np.array([0, 0, 0, 0, 1])
    w = sample_weights(labels, 2, "power", power=0.0)  # p=0: classes equally likely
    assert w.sum() == pytest.approx(1.0)
    assert w[labels == 0].sum() == pytest.approx(0.5) and w[4] == pytest.approx(0.5)


def test_resampled_sampler_same_in_single_and_distributed():
    w = sample_weights(np.array([0] * 90 + [1] * 10), 2, "power", power=0.5)
    single = ResampledSampler(w, 64, seed=1, world_size=1)
    single.set_epoch(3)
    ranks = [ResampledSampler(w, 32, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    merged = sorted(list(ranks[0]) + list(ranks[1]))
    assert merged == sorted(single)
    assert len(set(ranks[0]) & set(range(90, 100))) > 0
    before = list(single)
    single.set_epoch(4)
    assert list(single) != before  # a new epoch draws anew
    assert list(ResampledSampler(w, 64, seed=1)) == list(ResampledSampler(w, 64, seed=1))


def test_query_mapping_and_names():
    classes = ["Archery", "BasketballDunk", "HorseRace", "Surfing"]
    assert normalise_name("HorseRace") == "horse race"
    m = map_queries(["archery", "surfing", "horse race", "basketball dunk", "golf"], classes)
    assert m == {"archery": 0, "surfing": 3, "horse race": 2, "basketball dunk": 1, "golf": -1}
    m = map_queries(["basketball"], classes, {"basketball": "BasketballDunk"})
    assert m == {"basketball": 1}
    with pytest.raises(ValueError, match="not a target class"):
        map_queries(["x"], classes, {"x": "Golf"})


def test_filter_rules_by_hand():
    pred = np.array([0, 1, 2, 0])
    prob = np.array([0.9, 0.4, 0.8, 0.3])
    query = np.array([0, 1, 0, -1])
    assert keep_mask(pred, prob, query, "confidence", 0.5).tolist() == [True, False, True, False]
    assert keep_mask(pred, prob, query, "agreement").tolist() == [True, True, False, False]
    assert keep_mask(pred, prob, query, "both", 0.5).tolist() == [True, False, False, False]
    assert keep_mask(pred, prob, query, "none").all()
    assert pseudo_labels(pred, query, "confidence").tolist() == [0, 1, 2, 0]
    # kept: rows 0, 1 (row 0 right, row 1 wrong label); relevant: rows 0, 1, 2 (row 3 is clutter).
    pr = precision_recall([True, True, False, True], [0, 1, 2, 0], [0, 2, 2, -1])
    assert (pr["precision"], pr["recall"], pr["kept"], pr["relevant"]) == (1 / 3, 1 / 3, 3, 3)
    # Per class: "a" is kept twice (right once, clutter once), "b" once (wrong); of the true "c"
    # samples one was kept as "b" and none as "c", so "c" has recall 0 and no precision.
    pc = precision_recall([True, True, False, True], [0, 1, 2, 0], [0, 2, 2, -1], ["a", "b", "c"])["per_class"]
    assert (pc["a"]["kept"], pc["a"]["precision"], pc["a"]["recall"]) == (2, 0.5, 1.0)
    assert (pc["b"]["kept"], pc["b"]["precision"], pc["b"]["relevant"]) == (1, 0.0, 0)
    assert pc["c"]["recall"] == 0.0 and pc["c"]["relevant"] == 2 and np.isnan(pc["c"]["precision"])


def _textured(size=(64, 80), seed=0):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (16, 20, 3)).astype(np.uint8), size[::-1], interpolation=cv2.INTER_CUBIC)


def test_still_and_translation_clips():
    img = _textured()
    assert (i2c.still_clip(img, 5) == img).all()
    clip = i2c.translation_clip(img, 6, np.random.default_rng(0), "constant")
    assert clip.shape == (6, 64, 80, 3)
    assert not np.array_equal(clip[0], clip[-1])
    rnd = i2c.translation_clip(img, 6, np.random.default_rng(0), "random")
    assert rnd.shape == clip.shape
    with pytest.raises(ValueError):
        i2c.translation_clip(img, 3, np.random.default_rng(0), "fast")


def test_homography_normalisation_round_trip():
    h = np.array([[1.02, 0.01, 3.0], [-0.01, 0.98, -2.0], [1e-5, 0, 1]])
    n = i2c.normalise_homography(h, (240, 320))
    assert np.allclose(i2c.pixel_homography(n, (240, 320)), h / h[2, 2])


def test_gaussian_fit_is_the_mle():
    rng = np.random.default_rng(0)
    hs = np.eye(3)[None] + rng.normal(0, 0.01, (50, 3, 3))
    hs[:, 2, 2] = 1
    mu, cov = i2c.fit_gaussian(hs)
    x = hs.reshape(-1, 9)[:, :8]
    assert np.allclose(mu, x.mean(0)) and np.allclose(cov, np.cov(x.T, bias=True))
    with pytest.raises(ValueError, match="at least 2"):
        i2c.fit_gaussian(hs[:1])


def test_motion_fits_round_trip_through_their_file(tmp_path):
    rng = np.random.default_rng(1)
    fits = {"agnostic": (rng.normal(size=8), np.eye(8)), "jump": (rng.normal(size=8), 2 * np.eye(8))}
    i2c.save_motion(tmp_path / "motion.npz", fits, {"agnostic": 40, "jump": 12})
    back = i2c.load_motion(tmp_path / "motion.npz")
    assert sorted(back) == ["agnostic", "jump"] and [p.name for p in tmp_path.iterdir()] == ["motion.npz"]
    for key, (mu, cov) in fits.items():
        assert np.array_equal(back[key][0], mu) and np.array_equal(back[key][1], cov)


def test_estimate_recovers_a_known_shift_and_warp_composes():
    img = _textured((120, 160), seed=1)
    shifted = cv2.warpAffine(img, np.float32([[1, 0, 4], [0, 1, 0]]), (160, 120), borderMode=cv2.BORDER_REFLECT)
    hs = i2c.estimate_homographies(np.stack([img, shifted]))
    assert len(hs) == 1
    pix = i2c.pixel_homography(hs[0], (120, 160))
    assert pix[0, 2] == pytest.approx(4, abs=0.6) and pix[0, 0] == pytest.approx(1, abs=0.02)
    # Zero covariance at the identity: the warped clip is the still clip.
    mu = np.eye(3).ravel()[:8]
    clip = i2c.perspective_clip(img, 4, mu, np.zeros((8, 8)), np.random.default_rng(0))
    assert np.abs(clip.astype(int) - img).max() <= 1
    # A pure translation of 2 px per frame composes to 2*t px.
    mu_shift = i2c.normalise_homography(np.array([[1, 0, 2.0], [0, 1, 0], [0, 0, 1]]), (120, 160)).ravel()[:8]
    clip = i2c.perspective_clip(img, 4, mu_shift, np.zeros((8, 8)), np.random.default_rng(0))
    assert np.array_equal(clip[3][:, 10:150], img[:, 4:144])


def test_snippets_by_hand():
    pos = positive_frames(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]]), 0, 0.5)
    assert pos.tolist() == [True, False, True, False]
    rng = np.random.default_rng(0)
    s = select_snippet(pos, 1, 2, rng)
    assert len(s) == 3 and pos[s].sum() == 1 and list(s) == sorted(s)
    s = select_snippet(np.array([True, True, False]), 1, 2, rng)  # one negative only: fill with positives
    assert len(s) == 3 and (~np.array([True, True, False])[s]).sum() == 1
    assert select_snippet(np.zeros(4, bool), 1, 2, rng) is None
    assert clip_windows(25.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert clip_windows(21.0) == [(0.0, 10.0), (10.0, 20.0)]
    assert clip_windows(1.5) == [(0.0, 1.5)]  # shorter than a clip: the whole video
    assert clip_windows(3.5, 1.0) == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]  # clips shorter than min_s are kept
    assert positive_clips(np.array([0.2, 0.6, 0.9]), 0, 0.5).tolist() == [1, 2]


def test_shuffling_sampler_covers_each_sample_once_per_pass():
    s = ResampledSampler(None, 10, seed=0, size=5)
    drawn = list(s)
    assert sorted(drawn[:5]) == list(range(5)) and sorted(drawn[5:]) == list(range(5))
    with pytest.raises(ValueError, match="empty"):
        ResampledSampler(None, 3, size=0)


def test_query_floor_keeps_the_best_ranked_share_of_each_query():
    from omnisource.select.filter import query_floor

    qprob = np.array([0.9, 0.2, 0.1, 0.3, 0.05, 0.4, 0.7])
    qcls = np.array([0, 1, 1, 1, 1, -1, 0])
    floor = query_floor(qprob, qcls, 0.5)
    assert floor[[0, 6]].tolist() == [0.9, 0.9]  # query 0: the better of its two samples
    assert floor[[1, 2, 3, 4]].tolist() == [0.2] * 4  # query 1: its two best of four (0.3, 0.2)
    assert floor[5] == np.inf  # no class, no floor
    assert np.isinf(query_floor(qprob, qcls, 0.0)).all()


def test_select_min_keep_gives_a_doubted_class_its_best_samples():
    from omnisource.select.stage import select_rows

    classes = ["a", "b"]
    rows = [dict(id=f"r{i}", status="ok", weak_labels=[q], true_label=q) for i, q in enumerate("aaabbbb")]
    # The teacher is sure of class a and doubts every b sample (b is never its top-1).
    pb = [0.05, 0.1, 0.2, 0.45, 0.3, 0.2, 0.1]
    scores = {r["id"]: {"pred": int(p > 0.5), "prob": max(p, 1 - p), "probs": [1 - p, p]} for r, p in zip(rows, pb)}
    out, stats = select_rows(rows, scores, classes, "both", 0.5, {}, min_keep=0.0)
    assert [r["id"] for r in out if r["status"] == "ok"] == ["r0", "r1", "r2"]  # no b at all
    out, stats = select_rows(rows, scores, classes, "both", 0.5, {}, min_keep=0.5)
    kept = {r["id"]: r for r in out if r["status"] == "ok"}
    assert set(kept) == {"r0", "r1", "r2", "r3", "r4"}  # b keeps its two most probable samples
    assert kept["r3"]["label"] == 1 and kept["r4"]["query_floor"] == pytest.approx(0.3)
    assert "query_floor" not in kept["r0"]  # kept by the rule itself
    assert stats["kept_per_class"] == {"a": 3, "b": 2}
    out, _ = select_rows(rows, scores, classes, "confidence", 0.9, {}, min_keep=0.5)
    kept = {r["id"]: r["label"] for r in out if r["status"] == "ok"}
    # confidence: r0, r1 pass 0.9; query b keeps its two most confident (top-1 0.9, 0.8), labelled by the teacher
    assert kept == {"r0": 0, "r1": 0, "r5": 0, "r6": 0}


def test_crossfit_folds_hold_out_every_class_and_need_two_clips_per_class():
    from omnisource.select.filter import crossfit_folds

    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    f = crossfit_folds(y, 5, seed=1)
    assert f.max() + 1 == 3  # capped by the fewest clips of a class (3)
    for fold in range(3):  # each fold holds out clips of every class, the 4th clip of class 1 in one of them
        assert set(y[f == fold].tolist()) == {0, 1, 2}
    assert sorted(np.bincount(f).tolist()) == [3, 3, 4]
    assert crossfit_folds(y, 2).max() == 1
    assert crossfit_folds(np.array([0, 1, 1, 2, 2]), 5) is None  # class 0 has one clip: nothing to hold out


def test_class_thresholds_keep_a_share_of_each_class_and_clip_to_the_range():
    from omnisource.select.filter import class_thresholds

    # Out-of-fold probabilities of the true class: class 0 known surely, class 1 doubted, class 2 no clips.
    probs = np.zeros((8, 3))
    probs[:4, 0] = [0.99, 0.97, 0.95, 0.9]
    probs[4:, 1] = [0.6, 0.4, 0.3, 0.2]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    t = class_thresholds(probs, y, keep=0.75, low=0.1, high=0.92, default=0.5)
    assert t[0] == pytest.approx(0.92)  # the 25 % quantile 0.9375, clipped to high
    assert t[1] == pytest.approx(0.275)  # between 0.2 and 0.3: three of the four clips pass
    assert t[2] == 0.5  # no clip of class 2: the default
    assert (probs[4:, 1] >= t[1]).sum() == 3
    assert class_thresholds(probs, y, 0.75, 0.3, 0.92, 0.5)[1] == pytest.approx(0.3)


def test_precision_thresholds_rise_for_a_class_the_teacher_confuses():
    from omnisource.select.filter import precision_thresholds

    # Top-1 class 0 for five clips: right at 0.9, 0.8, 0.7, wrong at 0.6 and right at 0.5; class 1 always right.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5 - 1e-3],
                      [0.2, 0.8], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1, 0, 1, 1])
    t = precision_thresholds(probs, y, 1.0, 0.0, 1.0, 0.5)
    assert t[0] == pytest.approx(0.7) and t[1] == pytest.approx(0.6)  # everything above is right
    assert precision_thresholds(probs, y, 0.8, 0.0, 1.0, 0.5)[0] == pytest.approx(0.5)  # 4 of 5 right
    assert precision_thresholds(probs, y, 1.0, 0.75, 0.95, 0.5).tolist() == [0.75, 0.75]  # clipped to low
    wrong = np.array([1, 1, 1, 1, 1, 1, 1])  # the teacher is never right about class 0: high
    assert precision_thresholds(probs, wrong, 0.9, 0.1, 0.95, 0.5)[0] == 0.95
    assert precision_thresholds(np.array([[0.9, 0.1]]), np.array([0]), 0.9, 0.1, 0.95, 0.42)[1] == 0.42


def test_select_with_per_class_thresholds_keeps_the_doubted_class_and_records_them():
    from omnisource.select.stage import select_rows

    classes = ["a", "b"]
    rows = [dict(id=f"r{i}", status="ok", weak_labels=[q], true_label=q) for i, q in enumerate("aaabbb")]
    pa = [0.95, 0.7, 0.6, 0.4, 0.45, 0.3]  # probability of class a; b samples are b's top-1 at 0.6, 0.55, 0.7
    scores = {r["id"]: {"pred": int(p < 0.5), "prob": max(p, 1 - p), "probs": [p, 1 - p]} for r, p in zip(rows, pa)}
    out, _ = select_rows(rows, scores, classes, "both", 0.8, {})
    assert [r["id"] for r in out if r["status"] == "ok"] == ["r0"]
    out, stats = select_rows(rows, scores, classes, "both", 0.8, {}, thresholds=np.array([0.9, 0.58]))
    kept = {r["id"]: r for r in out if r["status"] == "ok"}
    assert set(kept) == {"r0", "r3", "r5"}  # class b at 0.58 keeps its samples at 0.6 and 0.7, not 0.55
    assert kept["r3"]["class_threshold"] == pytest.approx(0.58) and kept["r0"]["class_threshold"] == 0.9
    dropped = {r["id"]: r["reason"] for r in out if r["status"] == "rejected"}
    assert dropped["r4"] == "teacher confidence 0.55 < 0.58" and dropped["r1"] == "teacher confidence 0.70 < 0.90"
    assert stats["kept_per_class"] == {"a": 1, "b": 2}


def test_calibrated_thresholds_fall_back_to_the_global_threshold_without_folds():
    from omnisource.config import load_config
    from omnisource.select.stage import calibrated_thresholds

    classes = ["a", "b"]
    cfg = load_config(overrides=["omni.calibrate=keep", "omni.calibrate_value=0.5", "omni.calibrate_range=[0.1,0.9]"])
    record = {"folds": 2, "labels": [0, 0, 1, 1], "probs": [[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.8, 0.2]]}
    t, info = calibrated_thresholds(cfg, record, classes)
    assert t.tolist() == pytest.approx([0.8, 0.3]) and info["thresholds"] == {"a": 0.8, "b": 0.3}
    assert info["rule"] == "keep" and info["folds"] == 2 and info["clips"] == 4
    t, info = calibrated_thresholds(cfg, {"folds": 0, "reason": "fewer than 2"}, classes)
    assert t is None and info["thresholds"] == {"a": 0.5, "b": 0.5} and info["note"] == "fewer than 2"
    assert calibrated_thresholds(load_config(), record, classes) == (None, {})


def test_crossfit_scores_each_clip_with_a_head_that_never_saw_it():
    from omnisource.config import load_config
    from omnisource.teacher.calibrate import crossfit

    rng = np.random.default_rng(0)
    # Two classes, 4 clips each, 3 frames of 8 features: class c has mean +-1 on feature 0.
    y = np.repeat([0, 1], 4)
    x = rng.normal(0, 0.3, (8, 3, 8)).astype(np.float32)
    x[:, :, 0] += np.where(y == 0, -1.0, 1.0)[:, None]
    x[7, :, 0] = -1.0  # a class-1 clip that looks like class 0: only a head that trained on it could know
    cfg = load_config(overrides=["train.device=cpu", "train.epochs=30", "train.optimizer=adamw", "train.lr=0.01",
                                 "features.frames=3", "train.batch_size=4"])
    rec = crossfit(cfg, x, y, ["a", "b"], folds=4)
    assert rec["folds"] == 4 and len(rec["heads"]) == 4 and rec["probs"].shape == (8, 2)
    assert np.allclose(rec["probs"].sum(1), 1.0)
    assert (rec["probs"][:7].argmax(1) == y[:7]).all()
    assert rec["probs"][7].argmax() == 0  # out of fold, the odd clip is scored as it looks
    assert crossfit(cfg, x[:5], y[:5], ["a", "b"])["folds"] == 0  # class b has one clip (k = 1)
