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


def test_predictions_file_round_trip_and_bad_files(tmp_path):
    from omnisource.evaluate.metrics import load_predictions, save_predictions

    scores = np.array([[.9, .1], [.2, .8], [.6, .4]])
    path = save_predictions(tmp_path / "predictions.npz", ["a1", "b2", "c3"], [0, 1, 1], scores)
    p = load_predictions(path)
    assert p["ids"].tolist() == ["a1", "b2", "c3"] and p["labels"].tolist() == [0, 1, 1]
    np.testing.assert_allclose(p["scores"], scores, rtol=1e-6)
    with pytest.raises(ValueError, match="differ"):
        save_predictions(tmp_path / "x.npz", ["a"], [0, 1], scores[:2])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a predictions file"):
        load_predictions(tmp_path / "bad.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a predictions file"):
        load_predictions(tmp_path / "single.npy")


def test_paired_clip_bootstrap_by_hand():
    from omnisource.evaluate.paired import paired_clip_bootstrap

    base = np.array([[1, 0, 1, 0, 1, 0, 1, 0]] * 3)  # 3 seeds x 8 clips, 50 %
    # Every clip gains the same: every resample has the same mean, the interval is a point.
    r = paired_clip_bootstrap(np.ones_like(base), np.zeros_like(base))
    assert (r["delta"], r["lo"], r["hi"], r["clips"], r["seeds"]) == (1.0, 1.0, 1.0, 8, 3)
    # The run gets every clip right: +50 points; half the clips gain, so resampling clips
    # spreads the mean around 0.5, but never down to 0 or up to 1 in 95 % of resamples.
    r = paired_clip_bootstrap(np.ones_like(base), base)
    assert r["delta"] == 0.5 and 0 < r["lo"] < 0.5 < r["hi"] < 1
    # Same predictions: no difference at all, whatever is resampled.
    same = paired_clip_bootstrap(base, base)
    assert same["delta"] == same["lo"] == same["hi"] == 0.0
    # Pairing: the run fixes clip 1 and breaks clip 0 in every seed -> mean 0; clip resampling
    # alone spreads it, the interval straddles 0.
    run = base.copy()
    run[:, 0], run[:, 1] = 0, 1
    r = paired_clip_bootstrap(run, base)
    assert r["delta"] == 0.0 and r["lo"] < 0 < r["hi"]
    # Seeds are resampled too: seed 0 gains on every clip, seed 1 on none. Clip resampling
    # alone would give the point 0.5; drawing 2 seeds with replacement gives 0, 0.5 or 1.
    two = paired_clip_bootstrap(np.array([[1] * 8, [0] * 8]), np.zeros((2, 8)))
    assert two["delta"] == 0.5 and two["lo"] == 0.0 and two["hi"] == 1.0
    # Groups: the first four clips (one group) gain, the last four (another) do not. Clips drawn
    # one by one stay near 0.5; drawing whole groups gives 0, 0.5 or 1.
    by_clip = paired_clip_bootstrap(np.array([[1] * 4 + [0] * 4]), np.zeros((1, 8)))
    by_group = paired_clip_bootstrap(np.array([[1] * 4 + [0] * 4]), np.zeros((1, 8)), groups=list("aaaabbbb"))
    assert 0 < by_clip["lo"] < 0.5 < by_clip["hi"] < 1 and by_clip["groups"] == 8
    assert (by_group["delta"], by_group["lo"], by_group["hi"], by_group["groups"]) == (0.5, 0.0, 1.0, 2)
    # Unequal groups: a resample's mean is over the clips it drew.
    r = paired_clip_bootstrap(np.array([[1, 1, 1, 0]]), np.zeros((1, 4)), groups=[1, 1, 1, 2])
    assert r["delta"] == 0.75 and r["lo"] == 0.0 and r["hi"] == 1.0
    with pytest.raises(ValueError, match="group labels"):
        paired_clip_bootstrap(np.ones((1, 4)), np.ones((1, 4)), groups=[1, 2])
    with pytest.raises(ValueError, match="not paired"):
        paired_clip_bootstrap(np.ones((3, 8)), np.ones((2, 8)))
    with pytest.raises(ValueError, match="at least one clip"):
        paired_clip_bootstrap(np.zeros((1, 0)), np.zeros((1, 0)))


def test_paired_clip_bootstrap_matches_the_normal_interval_on_many_clips():
    from omnisource.evaluate.paired import paired_clip_bootstrap

    rng = np.random.default_rng(0)
    n = 4000
    base = (rng.random(n) < 0.7).astype(float)
    run = np.where(rng.random(n) < 0.1, 1 - base, base)  # 10 % of clips flip, either way
    r = paired_clip_bootstrap(run, base, n_boot=4000)
    d = run - base
    half = 1.96 * d.std() / np.sqrt(n)
    assert r["delta"] == pytest.approx(d.mean())
    assert r["lo"] == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert r["hi"] == pytest.approx(d.mean() + half, abs=0.15 * half)


def test_paired_clip_bootstrap_finds_a_planted_gain_and_no_gain_where_none_is_planted():
    from omnisource.evaluate.paired import paired_clip_bootstrap

    rng = np.random.default_rng(1)
    seeds, n = 3, 600
    hard = rng.random(n) < 0.3  # clips that no seed of either setting gets right
    base = np.array([~hard & (rng.random(n) < 0.9) for _ in range(seeds)], float)
    # The run fixes a planted 6 % of the clips, ones that every seed of the baseline got wrong,
    # and otherwise agrees with the same seed's baseline.
    fixed = rng.choice(np.flatnonzero(base.max(0) == 0), 36, replace=False)
    run = base.copy()
    run[:, fixed] = 1
    r = paired_clip_bootstrap(run, base)
    assert r["delta"] == pytest.approx(36 / n) and 0 < r["lo"] < 36 / n < r["hi"] < 0.1
    # A run as good as the baseline, differing by chance only (each seed gets another 90 % of the
    # clips that are not hard): the interval covers 0.
    noisy = np.array([~hard & (rng.random(n) < 0.9) for _ in range(seeds)], float)
    r = paired_clip_bootstrap(noisy, base)
    assert r["lo"] < 0 < r["hi"] and abs(r["delta"]) < 0.02
