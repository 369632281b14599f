"""Cross-validation folds and paired bootstrap intervals of the benchmark protocol."""
import numpy as np
import pytest

from omnisource.evaluate.folds import group_folds, fold_paired_interval, summarise_setting

def test_group_folds_partition_the_groups_in_balanced_folds():
    groups = [f"{g:02d}" for g in range(8, 26)]
    folds = group_folds(groups[::-1] + groups[:3], 4)  # order and repeats do not matter
    assert [len(f) for f in folds] == [5, 5, 4, 4]
    assert sorted(g for f in folds for g in f) == groups
    assert folds[0] == ["08", "12", "16", "20", "24"]

@pytest.mark.parametrize("n", [1, 19])
def test_group_folds_rejects_impossible_counts(n):
    with pytest.raises(ValueError, match="n_folds"):
        group_folds([f"{g:02d}" for g in range(8, 26)], n)

def test_bootstrap_interval_excludes_zero_for_a_consistent_gain_and_covers_it_for_noise():
    rng = np.random.default_rng(0)
    gain = 0.02 + rng.normal(0, 0.01, 12)
    mean, lo, hi = fold_paired_interval(gain, strata=np.repeat(np.arange(4), 3))
    assert lo > 0 and lo < mean < hi
    assert mean == pytest.approx(gain.mean())
    noise = rng.normal(0, 0.01, 12)
    noise -= noise.mean()
    _, lo, hi = fold_paired_interval(noise)
    assert lo < 0 < hi

def test_bootstrap_within_strata_keeps_each_stratum_weight():
    # Stratum 0 always +1, stratum 1 always -1: every stratified replicate has mean 0.
    d = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
    assert fold_paired_interval(d, strata=[0, 0, 0, 1, 1, 1]) == (0.0, 0.0, 0.0)
    _, lo, hi = fold_paired_interval(d)  # unstratified replicates vary
    assert lo < 0 < hi

def test_summarise_setting_pairs_runs_with_the_same_fold_and_seed():
    base = {(f, s): {"top1": 0.8 + 0.05 * f} for f in range(2) for s in range(3)}
    runs = {(f, s): {"top1": base[(f, s)]["top1"] + 0.1} for f in range(2) for s in range(3)}
    out = summarise_setting(runs, base)
    assert out["delta_mean"] == pytest.approx(0.1)
    assert out["delta_lo"] == pytest.approx(0.1) and out["delta_hi"] == pytest.approx(0.1)
    assert out["top1_mean"] == pytest.approx(0.925)
    assert out["folds"] == 2 and out["runs"] == 6

def _ucf_tree(root, classes=("A", "B"), groups=range(8, 26), clips=2):
    for c in classes:
        d = root / "ucf101-6" / "videos" / c
        d.mkdir(parents=True)
        for g in groups:
            for i in range(clips):
                # An MP4 signature is enough: the importer types files by content, never decodes here.
                (d / f"v_{c}_g{g:02d}_c{i + 1:02d}.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(16))
    return root

def test_fold_split_labels_k_per_class_outside_the_validation_groups(tmp_path):
    from omnisource.evaluate import protocol

    data = _ucf_tree(tmp_path)
    seen_val = set()
    for val in protocol.folds():
        split = protocol.target_split(data, 3, seed=1, val_groups=val)
        va, tr, unused = split.rows("val"), split.rows("train"), split.rows("unused")
        assert {r["group"] for r in va} == set(val)
        assert not {r["group"] for r in tr + unused} & set(val)
        assert [sum(r["label"] == c for r in tr) for c in range(2)] == [3, 3]
        assert len(tr) + len(unused) + len(va) == 2 * 18 * 2
        seen_val |= {r["id"] for r in va}
    assert len(seen_val) == 2 * 18 * 2  # every clip is validated exactly once over the folds

def test_test_root_split_trains_from_every_group(tmp_path):
    from omnisource.evaluate import protocol

    data = _ucf_tree(tmp_path)
    test = _ucf_tree(tmp_path / "test", groups=range(1, 3), clips=1) / "ucf101-6" / "videos"
    split = protocol.target_split(data, 0, seed=0, test_root=test)
    assert len(split.rows("train")) == 2 * 18 * 2
    assert {r["path"].split("_g")[1][:2] for r in split.rows("val")} == {"01", "02"}

def _ucf_web():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ucf_web.py"
    spec = importlib.util.spec_from_file_location("ucf_web", path)
    mod = sys.modules["ucf_web"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(mod)
    return mod

def _runs(folds, gain):
    metrics = {"top1": 0.0, "mean_class_accuracy": 0.0, "num_samples": 10, "classes": ["A"],
               "per_class_accuracy": {"A": 0.0}, "n_aux": 0}
    out = []
    for f in folds:
        for seed in range(2):
            base = 0.7 + 0.05 * f + 0.01 * seed
            out.append(dict(metrics, setting="baseline", k=3, fold=f, seed=seed, top1=base))
            out.append(dict(metrics, setting="all", k=3, fold=f, seed=seed, top1=base + gain[f] + (0.02 if seed else -0.02)))
    return out

def test_merge_pairs_the_runs_of_folds_run_in_separate_processes(tmp_path):
    import json

    ucf_web = _ucf_web()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    gain = {0: 0.02, 1: 0.04, 2: 0.06, 3: 0.08}
    (tmp_path / "a" / "runs.json").write_text(json.dumps(_runs([0, 1], gain)))
    (tmp_path / "b" / "runs.json").write_text(json.dumps(_runs([2, 3], gain)))
    # The filter records of each half: one per run, and raw per-query counts summed over its runs.
    for half, (kept, prec) in {"a": (10, 0.5), "b": (30, 0.9)}.items():
        record = {"kept": kept, "scored": 100, "samples": kept, "precision": prec, "recall": 0.2,
                  "kept_per_class": {"A": kept}, "per_class": {"A": {"precision": prec, "recall": 0.2}}}
        (tmp_path / half / "diag.json").write_text(json.dumps(
            [[["all", 3, "images"], [record] * 4], [["per_query", 3, "all"], {"q": [kept * 4, 4]}]]))
    assert ucf_web.merge(tmp_path / "m", [tmp_path / "a", tmp_path / "b"]) == 0
    filters = json.loads((tmp_path / "m" / "filters.json").read_text())
    assert [(f["kept"], f["precision"], f["per_class"]["A"]["precision"]) for f in filters] == [(20, 0.7, 0.7)]
    raw = json.loads((tmp_path / "m" / "raw_per_query.json").read_text())
    assert raw == {"all k=3": {"q": {"kept": 20.0, "dropped": 1.0}}}  # per run, over the 8 runs
    rows = {r["setting"]: r for r in json.loads((tmp_path / "m" / "results.json").read_text())}
    assert rows["all"]["folds"] == 4 and rows["all"]["runs"] == 8
    assert rows["all"]["delta_mean"] == pytest.approx(0.05)
    # Resampled within folds: only the seed-to-seed spread (±0.02) widens the interval.
    assert 0.03 <= rows["all"]["delta_lo"] < 0.05 < rows["all"]["delta_hi"] <= 0.07
    # A later run of more settings trains the same baseline again: merged once, the others added.
    (tmp_path / "c").mkdir()
    more = [dict(r, setting="all+web.weight=0.5", top1=r["top1"] + 0.01) if r["setting"] == "all" else r
            for r in _runs([0, 1, 2, 3], gain)]
    (tmp_path / "c" / "runs.json").write_text(json.dumps(more))
    assert ucf_web.merge(tmp_path / "m", [tmp_path / "a", tmp_path / "b", tmp_path / "c"],
                         ["all+web.weight=0.5:all"]) == 0
    rows = {r["setting"]: r for r in json.loads((tmp_path / "m" / "results.json").read_text())}
    assert rows["baseline"]["runs"] == 8 and rows["all+web.weight=0.5"]["delta_mean"] == pytest.approx(0.06)
    pair, = json.loads((tmp_path / "m" / "pairs.json").read_text())
    assert (pair["runs"], pair["k"]) == (8, 3) and pair["delta_mean"] == pytest.approx(0.01)
    assert pair["delta_lo"] == pytest.approx(0.01) == pair["delta_hi"]  # the same +0.01 in every run
    # The same run with other metrics is two different runs under one name: an error.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "runs.json").write_text(json.dumps([dict(r, top1=r["top1"] + 0.1) for r in _runs([0], gain)]))
    with pytest.raises(SystemExit, match="in two runs"):
        ucf_web.merge(tmp_path / "m", [tmp_path / "a", tmp_path / "d"])
    with pytest.raises(SystemExit, match="no runs.json"):  # a folder that is no run's output
        ucf_web.merge(tmp_path / "m", [tmp_path / "a", tmp_path / "nothing"])

def test_arms_with_the_same_training_share_one_head_and_others_do_not():
    import numpy as np

    ucf_web = _ucf_web()
    cfg = ucf_web.base_config(0)
    images, trimmed = ucf_web.source_config("images", []), ucf_web.source_config("trimmed", [])
    x, y = np.ones((4, 8, 3), np.float32), np.array([0, 1, 0, 1])
    empty = (np.zeros((0, 8, 0), np.float32), np.zeros(0, np.int64), None)
    key = ucf_web.student_key(cfg, [(images, x, y, None)])
    # A source without samples (no video left to act as a web video) changes nothing, and a
    # data-only option (snippet frames) does not either once the samples are the same ...
    assert ucf_web.student_key(cfg, [(images, x, y, None), (trimmed, *empty)]) == key
    assert ucf_web.student_key(ucf_web.base_config(0, ["omni.snippet_neg=2"]), [(images, x, y, None)]) == key
    assert ucf_web.student_key(cfg, [(trimmed, *empty)]) == ucf_web.student_key(cfg)  # = the baseline
    # ... but other samples, another loss weight or a training option make another head.
    assert ucf_web.student_key(cfg, [(images, x, 1 - y, None)]) != key
    assert ucf_web.student_key(cfg, [(ucf_web.source_config("images", ["web.weight=1"]), x, y, None)]) != key
    assert ucf_web.student_key(ucf_web.base_config(0, ["omni.prior_correction=false"]), [(images, x, y, None)]) != key
    assert ucf_web.student_key(ucf_web.base_config(1), [(images, x, y, None)]) != key
    soft = np.full((4, 2), 0.5, np.float32)  # soft targets of the same samples: another head
    assert ucf_web.student_key(ucf_web.base_config(0, ["omni.soft_targets=0.5"]), [(images, x, y, soft)]) != key

def test_a_setting_sets_the_loss_weight_per_kind_of_web_source():
    ucf_web = _ucf_web()
    # web.<kind>.<field> wins over web.<field> for that kind, whatever the order.
    overrides = ["web.image.weight=0.25", "web.weight=0.125", "web.untrimmed.weight=0.3"]
    weights = {n: ucf_web.source_config(n, overrides).loss_weight() for n in ("images", "images_raw", "trimmed", "untrimmed")}
    assert weights == {"images": 0.25, "images_raw": 0.25, "trimmed": 0.125, "untrimmed": 0.3}
    default = ucf_web.source_config("trimmed", []).loss_weight()
    assert ucf_web.source_config("trimmed", ["web.image.weight=0.25"]).loss_weight() == default == 0.5
    setting, sources, overrides = ucf_web.parse_setting("all+web.image.weight=0.25+omni.threshold=0.3")
    assert sources == ucf_web.ALL and overrides == ["web.image.weight=0.25", "omni.threshold=0.3"]
    # An unknown kind or field, or a bad value, stops the run before anything is trained.
    for bad, message in [("all+web.video.weight=1", "with a kind of image, trimmed, untrimmed"),
                         ("all+web.image.wieght=1", "no field 'wieght'"),
                         ("all+web.image.kind=trimmed", "no field 'kind'"),
                         ("baseline+web.image.weight=x", "expected a number")]:
        with pytest.raises(SystemExit, match=message):
            ucf_web.parse_setting(bad)

def test_naive_frames_are_samples_and_a_clip_scores_the_mean_of_its_frames():
    import numpy as np

    ucf_web = _ucf_web()
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # 2 clips of 3 frames
    frames = ucf_web.frame_samples(x)
    assert frames.shape == (6, 1, 2) and frames[4, 0].tolist() == x[1, 1].tolist()
    probs = np.array([[1, 0], [0, 1], [1, 0], [0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])
    assert np.allclose(ucf_web.frame_average(probs, 3), [[2 / 3, 1 / 3], [0.2, 0.8]])
    keep = ucf_web.frame_keep(np.array([[0.6, 0.4], [0.4, 0.6], [0.5, 0.5], [0.45, 0.55]]), 0)
    assert keep.tolist() == [True, False, True, False]  # top-1 = the query and p >= 0.5
    _, sources, _ = ucf_web.parse_setting("naive")
    assert sources == ucf_web.ALL and ucf_web.parse_setting("naive_baseline")[1] == ()

def test_the_naive_arm_keeps_agreeing_web_frames_and_drops_planted_wrong_ones():
    import numpy as np

    ucf_web = _ucf_web()
    rng = np.random.default_rng(0)
    classes, dim = ["a", "b", "c"], 8
    centres = 4 * rng.normal(size=(3, dim))

    def clips(labels, t=4):
        return (centres[labels][:, None] + rng.normal(size=(len(labels), t, dim))).astype(np.float32)

    y, yv = np.repeat([0, 1, 2], 4), np.repeat([0, 1, 2], 5)
    data = (clips(y), y, clips(yv), yv)
    # Web frames: 30 showing their query's class, 30 planted under another query.
    true = rng.integers(0, 3, 60)
    query = np.where(np.arange(60) < 30, true, (true + 1) % 3)
    fx = clips(true, t=1)[:, 0]
    web = {"images": (fx, query, query == true)}
    cfg = ucf_web.base_config(0, ["train.epochs=20"])
    cache = {}
    base, base_scores, n0, rec0 = ucf_web.naive_arm(cfg, data, classes, {}, 4, cache)
    assert n0 == 0 and rec0 == {} and base["top1"] > 0.9 and base_scores.shape == (15, 3)
    m, scores, n_aux, records = ucf_web.naive_arm(cfg, data, classes, web, 4, cache)
    r = records["images"]
    assert r["scored"] == 60 and 20 <= n_aux == r["kept"] <= 30  # most true frames kept ...
    assert r["precision"] > 0.95 and r["recall"] > 0.65  # ... the planted ones dropped
    assert m["top1"] > 0.9 and np.allclose(scores.sum(1), 1)

def test_a_setting_may_train_its_own_teacher():
    ucf_web = _ucf_web()
    _, _, overrides = ucf_web.parse_setting("all+teacher.features.head=frames+features.head=frames")
    assert ucf_web.teacher_overrides(overrides) == ["features.head=frames"]
    with pytest.raises(SystemExit, match="teacher.features.head=nope|features.head: 'nope' is not allowed"):
        ucf_web.parse_setting("all+teacher.features.head=nope")

def test_a_run_records_the_clips_it_gets_wrong_and_merge_names_those_a_setting_changes(tmp_path):
    import json

    ucf_web = _ucf_web()
    labels = np.array([0, 1, 2, 0, 1])
    onehot = np.eye(3)
    base = ucf_web.run_record({"top1": 0.6}, 0, onehot[[0, 2, 2, 1, 1]], labels)  # clips 1 and 3 wrong
    assert base["wrong"] == [1, 3] and "fixed" not in base
    run = ucf_web.run_record({"top1": 0.6}, 7, onehot[[0, 1, 0, 1, 1]], labels, base["wrong"])  # fixes 1, breaks 2
    assert (run["wrong"], run["fixed"], run["broken"], run["n_aux"]) == ([2, 3], 1, 1, 7)
    # Over runs paired by fold and seed: clip 1 of fold 0 is fixed in both seeds, clip 2 broken in one.
    metrics = {"mean_class_accuracy": 0.6, "num_samples": 5, "classes": ["A"], "per_class_accuracy": {"A": 0.6},
               "n_aux": 0}
    rows = [dict(metrics, setting="baseline", k=10, fold=0, seed=s, top1=0.6, wrong=[1, 3]) for s in (0, 1)]
    rows += [dict(metrics, setting="all", k=10, fold=0, seed=0, top1=0.6, wrong=[2, 3]),
             dict(metrics, setting="all", k=10, fold=0, seed=1, top1=0.8, wrong=[3])]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "runs.json").write_text(json.dumps(rows))
    assert ucf_web.merge(tmp_path / "m", [tmp_path / "a"], ["all:baseline"]) == 0
    pair, = json.loads((tmp_path / "m" / "pairs.json").read_text())
    assert pair["clips"] == {"0:2": [0, 1], "0:1": [2, 0]}  # most broken first
    # Runs of an older run without the record are left out of the tally, not counted as right.
    results = {("all", 10): {(0, 0): {"top1": 0.5}}, ("baseline", 10): {(0, 0): {"top1": 0.5, "wrong": [1]}}}
    assert ucf_web.clip_changes(results, "all", "baseline", 10) == {}

def test_a_second_round_exists_for_untrimmed_videos_alone():
    ucf_web = _ucf_web()
    setting, sources, overrides = ucf_web.parse_setting("untrimmed_round2+omni.frame_threshold=0.7")
    assert sources == ("untrimmed",) and overrides == ["omni.frame_threshold=0.7"]
    assert ucf_web.ROUNDS["untrimmed_round2"] == ucf_web.ROUNDS["all_round2"] == 2

def test_a_setting_names_its_teacher_ensemble_and_filters_report_calibrated_thresholds():
    ucf_web = _ucf_web()
    setting, sources, overrides = ucf_web.parse_setting("all+teacher=base,seed1,temporal+omni.calibrate=keep")
    assert overrides == ["teacher=base,seed1,temporal", "omni.calibrate=keep"]
    assert ucf_web.teacher_members(overrides[0]) == ["base", "seed1", "temporal"]
    assert ucf_web.teacher_members("teacher=crossfit") == ["crossfit"]
    for bad in ("all+teacher=base,seedx", "all+teacher=resnet"):
        with pytest.raises(SystemExit, match="unknown teacher member"):
            ucf_web.parse_setting(bad)
    # filters.json: the calibrated thresholds per class, mean over the runs that had them.
    runs = [{"kept": 2, "scored": 4, "samples": 2, "kept_per_class": {"a": 2}, "thresholds": {"a": 0.4, "b": 0.9}},
            {"kept": 4, "scored": 4, "samples": 4, "kept_per_class": {"a": 4}, "thresholds": {"a": 0.6, "b": 0.7}}]
    (row,) = ucf_web.diag_rows({("all+omni.calibrate=keep", 3, "images"): runs})
    assert row["thresholds"] == pytest.approx({"a": 0.5, "b": 0.8}) and row["kept"] == 3
    (row,) = ucf_web.diag_rows({("all", 3, "images"): [{k: v for k, v in runs[0].items() if k != "thresholds"}]})
    assert "thresholds" not in row


def test_an_ensemble_and_an_own_teacher_are_not_combined_in_one_setting():
    ucf_web = _ucf_web()
    with pytest.raises(SystemExit, match="cannot be combined"):
        ucf_web.parse_setting("all+teacher=base,seed1+teacher.features.head=frames")


def test_every_fold_s_web_videos_are_embedded_at_one_fps():
    # Fold 0's validation videos are web videos of the other folds: leaving them out of the
    # 1 fps cache made fold 1 fail on a cache warmed by a fold-0 run.
    ucf_web = _ucf_web()
    videos = [{"id": "a", "split": "train"}, {"id": "b", "split": "val"}]
    assert [r["id"] for r in ucf_web.per_second_rows(videos, None)] == ["a", "b"]
    assert [r["id"] for r in ucf_web.per_second_rows(videos, ucf_web.Path("test"))] == ["a"]
