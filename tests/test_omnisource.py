"""The OmniSource chain end to end on tiny synthetic data, including a kill and restart."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from omnisource.cli import app
from omnisource.data.manifest import read_manifest
from omnisource.demo.synthetic import generate, web_manifests
from omnisource.workspace import Workspace

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("omni")
    generate(root, groups=4, clips_per_group=2, web_per_class=6, size=64, frames=12, untrimmed_per_class=1)
    return root, web_manifests(root)


def overrides(data, ws, **extra):
    root, manifests = data
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{manifests['images']}', batch_ratio: 1.0}}, "
           f"{{name: untrimmed, kind: untrimmed, format: manifest, root: '{manifests['untrimmed']}'}}]")
    base = {"target.root": root / "videos", "target.val_groups": "['01']", "features.size": 64,
            "features.frames": 4, "train.epochs": 6, "train.optimizer": "adamw", "train.lr": 0.003,
            "omni.threshold": 0.3, "omni.clip_seconds": 2,
            # dedup (on in `run`) is checked by test_run_chain_produces_every_stage and test_run_methods
            "clean.dedup": "false"}
    base.update(extra)
    return ["-w", str(ws), *[f"{k}={v}" for k, v in base.items()], web]


def _plant_duplicate(root, images_manifest, tmp_path):
    """A copy of the images manifest with one more photo: the middle frame of a validation
    (group 01) video, saved as a JPEG under a query folder."""
    import av
    from PIL import Image

    from omnisource.data.manifest import new_row, write_manifest

    video = sorted((root / "videos").glob("*/v_*_g01_c01.mp4"))[0]
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    cls = video.parent.name
    path = tmp_path / "planted" / cls / "dup_of_val.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(frames[len(frames) // 2]).save(path, quality=95)
    manifest = read_manifest(images_manifest)
    manifest.rows.append(new_row("images", "image", str(path), weak_labels=[cls], true_label=cls))
    out = tmp_path / "planted" / "images.parquet"
    write_manifest(manifest, out)
    return manifest.rows[-1]["path"], out


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("image_to_clip, untrimmed", [("perspective", "snippet"), ("translation", "clips"),
                                                      ("translation", "frames")])
def test_run_chain_produces_every_stage(data, tmp_path, image_to_clip, untrimmed):
    ws = tmp_path / "ws"
    dedup = "true" if image_to_clip == "perspective" else "false"
    root, manifests = data
    planted = None
    if dedup == "true":  # a web photo that is a frame of a validation video: dedup must find it
        planted, images = _plant_duplicate(root, manifests["images"], tmp_path)
        data = (root, {**manifests, "images": images})
    n_images = len(read_manifest(data[1]["images"]).rows)
    out = invoke("run", *overrides(data, ws, **{"omni.image_to_clip": image_to_clip, "omni.untrimmed": untrimmed,
                                               "clean.dedup": dedup}))
    for name in ("target_only", "omnisource"):
        m = json.loads((ws / "runs" / name / "metrics.json").read_text())
        cm = np.array(m["confusion_matrix"])  # top-1 is what the run's own confusion matrix says
        assert m["num_samples"] == 12 == cm.sum() and m["top1"] == pytest.approx(np.trace(cm) / 12)
    # With dedup (the default), web images too close to a validation video are `duplicate` before
    # scoring: the synthetic world renders web images from the target's few scenes, so some are.
    dups = [r for r in read_manifest(ws / "manifests" / "web_images.parquet").rows if r["status"] == "duplicate"]
    assert (len(dups) > 0) == (dedup == "true") and all(r["dup_of"] for r in dups)
    assert planted is None or planted in {r["path"] for r in dups}
    sel = json.loads((ws / "selection" / "images.json").read_text())
    assert sel["scored"] == n_images - len(dups) and 0 < sel["kept"] <= sel["scored"] and "precision" in sel["filter"]
    aux = read_manifest(ws / "manifests" / "aux_images.parquet")
    assert {r["status"] for r in aux.rows} <= {"ok", "rejected", "duplicate"} and len(aux.rows) == n_images
    assert all(r["reason"] for r in aux.rows if r["status"] == "rejected")
    train = read_manifest(ws / "manifests" / "train_images.parquet")
    assert all(r["clip_transform"] == image_to_clip for r in train.rows)
    if image_to_clip == "perspective":
        assert (ws / "motion.npz").exists()
    utrain = read_manifest(ws / "manifests" / "train_untrimmed.parquet").rows
    if untrimmed == "snippet":
        assert utrain and all(len(r["frame_indices"]) == 1 for r in utrain)  # 1 positive + 0 negative
    elif untrimmed == "frames":  # one sample per frame select kept, each with its frame's label
        uaux = [r for r in read_manifest(ws / "manifests" / "aux_untrimmed.parquet").rows if r["status"] == "ok"]
        assert uaux and sorted((r["parent_id"], r["frame_indices"][0], r["label"]) for r in utrain) == sorted(
            (r["id"], i, c) for r in uaux for i, c in zip(r["kept_frames"], r["frame_labels"]))
        usel = json.loads((ws / "selection" / "untrimmed.json").read_text())
        assert usel["frames"]["kept"] == len(utrain) <= usel["frames"]["scored"]
    else:
        assert all(r["end_s"] - r["start_s"] <= 2.0 for r in utrain)
    log = [json.loads(line) for line in (ws / "runs" / "omnisource" / "log.jsonl").read_text().splitlines()]
    assert "images" in log[-1]["train"] and "target" in log[-1]["train"]
    assert "student: images" in out
    if untrimmed == "clips":  # soft targets from the scores of pseudo-clips' images and of clip windows
        out = invoke("student", "--overwrite", *overrides(data, ws, **{
            "omni.image_to_clip": image_to_clip, "omni.untrimmed": untrimmed, "clean.dedup": dedup,
            "omni.soft_targets": 0.5}))
        assert "student: images" in out  # retrained from the new inputs
        assert "soft_targets: 0.5" in (ws / "runs" / "omnisource" / "config.yaml").read_text()


def test_calibrated_thresholds_run_through_score_and_select_into_the_selection_record(data, tmp_path):
    ws = tmp_path / "ws"
    # min_keep 0: every kept image then passed its class's threshold (the query floor keeps others).
    calib = {"omni.calibrate": "keep", "omni.calibrate_value": 0.5, "omni.calibrate_range": "[0.2,0.9]",
             "omni.min_keep": 0}
    out = invoke("run", *overrides(data, ws, **calib))
    assert "out-of-fold teacher probabilities of the target's training clips, 5 folds" in out
    record = json.loads((ws / "scores" / "images" / "calibration.json").read_text())
    assert record["folds"] == 5 and record["teachers"] == ["target_only"]  # 6 training clips per class
    target = read_manifest(Workspace(ws).target_manifest())
    classes, train = target.classes, [r for r in target.rows if r["split"] == "train" and r["status"] == "ok"]
    assert len(record["probs"]) == len(record["labels"]) == len(train) == 6 * len(classes)
    sel = json.loads((ws / "selection" / "images.json").read_text())
    cal = sel["calibration"]
    assert cal["rule"] == "keep" and cal["folds"] == 5 and set(cal["thresholds"]) == set(classes)
    assert all(0.2 <= t <= 0.9 for t in cal["thresholds"].values())
    kept = [r for r in read_manifest(ws / "manifests" / "aux_images.parquet").rows if r["status"] == "ok"]
    assert kept and all(r["class_threshold"] == pytest.approx(cal["thresholds"][classes[r["label"]]], abs=1e-4) and
                        r["teacher_prob"] >= r["class_threshold"] for r in kept)
    assert "thresholds per class" in invoke("select", *overrides(data, ws, **calib))
    # Off again: one threshold, no calibration record, and score drops the stale out-of-fold file.
    off = {**calib, "omni.calibrate": "none"}  # the workspace's config.yaml keeps what `run` was given
    invoke("score", *overrides(data, ws, **off))
    assert "threshold 0.3)" in invoke("select", *overrides(data, ws, **off))
    assert "calibration" not in json.loads((ws / "selection" / "images.json").read_text())
    assert not (ws / "scores" / "images" / "calibration.json").exists()


def _run_cli(args, env):
    return subprocess.Popen([sys.executable, "-m", "omnisource.cli", "run", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(predicate, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_killed_run_restarts_to_the_same_outputs(data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = tmp_path / "straight"
    args = overrides(data, straight, **{"train.epochs": 8})
    assert subprocess.run([sys.executable, "-m", "omnisource.cli", "run", *args], env=env,
                          capture_output=True).returncode == 0
    ws = tmp_path / "killed"
    args = overrides(data, ws, **{"train.epochs": 8})
    kill_points = [
        lambda: any((ws / "features").glob("*/shard-*.safetensors")),  # mid feature extraction
        lambda: (ws / "runs" / "target_only" / "checkpoints" / "epoch_003").exists(),  # mid teacher training
        lambda: (ws / "runs" / "omnisource" / "checkpoints" / "epoch_002").exists(),  # mid student training
    ]
    killed = 0
    for point in kill_points:
        proc = _run_cli(args, env)
        if _wait_for(point, proc):
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 2  # the machine was not so fast that every stage finished before the kill
    assert subprocess.run([sys.executable, "-m", "omnisource.cli", "run", *args], env=env,
                          capture_output=True).returncode == 0
    for name in ("target_only", "omnisource"):
        a = json.loads((straight / "runs" / name / "metrics.json").read_text())
        b = json.loads((ws / "runs" / name / "metrics.json").read_text())
        assert a["confusion_matrix"] == b["confusion_matrix"]
        wa = load_file(str(straight / "runs" / name / "checkpoints" / "epoch_008" / "model.safetensors"))
        wb = load_file(str(ws / "runs" / name / "checkpoints" / "epoch_008" / "model.safetensors"))
        for k in wa:
            np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=1e-6, err_msg=k)
    for name in ("aux_images", "train_untrimmed"):
        ra = read_manifest(straight / "manifests" / f"{name}.parquet").rows
        rb = read_manifest(ws / "manifests" / f"{name}.parquet").rows
        assert [(r["id"], r["status"], r["label"]) for r in ra] == [(r["id"], r["status"], r["label"]) for r in rb]
    assert not list(ws.rglob("*.tmp"))


def test_pixel_mode_chain_with_pseudo_clips_and_snippets(data, tmp_path):
    ws = tmp_path / "ws"
    pixel = {"mode": "pixels", "model.name": "tsn_resnet18", "model.pretrained": "", "model.width": 0.125,
             "media.num_segments": 3, "media.input_size": 32, "media.resize_short": 36, "train.epochs": 1,
             "train.batch_size": 8, "omni.threshold": 0.0, "omni.filter": "none", "omni.frame_threshold": 0.0,
             "omni.image_to_clip": "translation", "train.num_workers": 1}  # decoding in loader workers
    invoke("run", *overrides(data, ws, **pixel))
    from omnisource.teacher.score import read_scores
    untrimmed = [r for r in read_manifest(ws / "manifests" / "web_untrimmed.parquet").rows if r["status"] == "ok"]
    scores = read_scores(ws / "scores" / "untrimmed")
    assert untrimmed and all(len(scores[r["id"]]["frame_probs"]) >= 1 for r in untrimmed)
    log = [json.loads(line) for line in (ws / "runs" / "omnisource" / "log.jsonl").read_text().splitlines()]
    assert {"target", "images", "untrimmed"} <= set(log[-1]["train"])
    snippets = read_manifest(ws / "manifests" / "train_untrimmed.parquet").rows
    assert snippets and all(len(r["frame_indices"]) == 1 for r in snippets)
    m = json.loads((ws / "runs" / "omnisource" / "metrics.json").read_text())
    assert m["num_samples"] == 12


def test_pixel_run_trains_a_2d_and_a_3d_teacher_and_keeps_positive_clips(data, tmp_path):
    """`run` in pixel mode: a TSN teacher for the images, a SlowOnly teacher scoring the
    untrimmed videos' clips (omni.untrimmed=clips), each trained as its own run first."""
    root, manifests = data
    ws = tmp_path / "ws"
    teachers = ("omni.teachers=[{name: t2d, overrides: {model.name: tsn_resnet18}}, "
                "{name: t3d, overrides: {model.name: slowonly_r18, media.sampler: dense, media.num_segments: 4}}]")
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{manifests['images']}', teachers: [t2d]}}, "
           f"{{name: untrimmed, kind: untrimmed, format: manifest, root: '{manifests['untrimmed']}', "
           f"teachers: [t3d]}}]")
    args = overrides(data, ws, **{"mode": "pixels", "model.name": "tsn_resnet18", "model.pretrained": "",
                                  "model.width": 0.125, "media.num_segments": 3, "media.input_size": 32,
                                  "media.resize_short": 36, "train.epochs": 1, "train.batch_size": 8,
                                  "omni.untrimmed": "clips", "omni.filter": "none", "omni.frame_threshold": 0.0,
                                  "omni.score_views": 2})[:-1]
    out = invoke("run", *args, web, teachers)
    for name in ("target_only", "t2d", "t3d", "omnisource"):
        assert json.loads((ws / "runs" / name / "metrics.json").read_text())["num_samples"] == 12, name
    import yaml

    assert yaml.safe_load((ws / "runs" / "t3d" / "config.yaml").read_text())["model"]["name"] == "slowonly_r18"
    info = json.loads((ws / "scores" / "untrimmed" / "teachers.json").read_text())
    assert [(t["run"], t["kind"]) for t in info["teachers"]] == [("t3d", "3d")]
    from omnisource.teacher.score import read_scores
    scores = read_scores(ws / "scores" / "untrimmed")
    clips = read_manifest(ws / "manifests" / "train_untrimmed.parquet").rows
    windows = sum(len(rec["clip_windows"]) for rec in scores.values())
    assert windows > 0 and len(clips) == windows  # no filter: every 2 s clip of every video kept
    assert all(r["end_s"] - r["start_s"] == pytest.approx(2.0) for r in clips)
    log = [json.loads(line) for line in (ws / "runs" / "omnisource" / "log.jsonl").read_text().splitlines()]
    assert {"target", "images", "untrimmed"} <= set(log[-1]["train"])
    assert "t3d" in (ws / "report" / "index.html").read_text() and "score untrimmed" in out
