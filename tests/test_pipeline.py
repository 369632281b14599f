"""End to end through the CLI on tiny synthetic data: feature mode, pixel mode, bad files, resume."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from omnisource.cli import app
from omnisource.data.manifest import read_manifest
from omnisource.demo.synthetic import generate
from omnisource.features.cache import cached_ids, extract_features, load_features
from omnisource.models import create_backbone

runner = CliRunner()
FAST = ["features.size=96", "features.frames=4", "train.epochs=30", "train.optimizer=adamw", "train.lr=0.003",
        "train.eval_every=10", "target.val_groups=['01']", "model.dropout=0.2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate(root, groups=4, clips_per_group=2, web_per_class=2, size=96, frames=12, untrimmed_per_class=1)
    (root / "videos" / "sliding_box" / "v_sliding_box_g03_c09.mp4").write_bytes(b"")  # zero-byte
    (root / "videos" / "growing_ring" / "v_growing_ring_g02_c09.mp4").write_bytes(b"<html>nope</html>")
    return root


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_feature_mode_run_end_to_end_and_skips_finished_stages(data, tmp_path):
    ws = tmp_path / "ws"
    out = invoke("run", "-w", ws, f"target.root={data / 'videos'}", *FAST)
    metrics = json.loads((ws / "runs" / "target_only" / "metrics.json").read_text())
    assert metrics["num_samples"] == 12  # group 01: 6 classes x 2 clips
    assert metrics["top1"] >= 0.5  # chance is 1/6
    assert np.array(metrics["confusion_matrix"]).sum() == 12
    validated = read_manifest(ws / "manifests" / "target.validated.parquet")
    bad = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in validated.rows if r["status"] == "corrupt"}
    assert set(bad) == {"v_sliding_box_g03_c09.mp4", "v_growing_ring_g02_c09.mp4"}
    assert "zero-byte" in bad["v_sliding_box_g03_c09.mp4"]
    assert "corrupt: " in out
    again = invoke("run", "-w", ws)  # the workspace remembers its config
    assert again.count("up to date") == 5
    changed = invoke("run", "-w", ws, "train.epochs=31")
    assert "import: up to date" in changed and "epoch 31/31" in changed


def test_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["train", "-w", tmp_path, "train.optimizer=adam"])
    assert result.exit_code == 2
    assert "train.optimizer: 'adam' is not allowed" in result.output
    result = runner.invoke(app, ["import", "-w", tmp_path, f"target.root={tmp_path / 'nothing'}"])
    assert result.exit_code == 2 and "not a folder of class sub-folders" in result.output
    result = runner.invoke(app, ["config", "show", "train.epochs=3"])
    assert result.exit_code == 0 and "epochs: 3" in result.output


def test_pixel_mode_train_resume_and_multiview_eval(data, tmp_path):
    ws = tmp_path / "ws"
    common = [f"target.root={data / 'videos'}", "target.val_groups=['01']", "mode=pixels",
              "model.name=tsn_resnet18", "model.pretrained=", "model.width=0.125", "media.num_segments=2",
              "media.input_size=32", "media.resize_short=36", "train.batch_size=8", "train.epochs=2",
              "train.lr=0.01"]
    invoke("import", "-w", ws, *common)
    invoke("validate", "-w", ws)
    invoke("train", "-w", ws, "train.epochs=1")
    out = invoke("train", "-w", ws, "--resume", "train.epochs=2")
    assert "resumed from" in out and "epoch 2/2" in out
    invoke("evaluate", "-w", ws, "--epoch", "last", "media.test_views=2", "media.test_crops=3")  # the resumed epoch
    metrics = json.loads((ws / "runs" / "target_only" / "metrics.json").read_text())
    assert metrics["num_samples"] == 12 and metrics["checkpoint"].endswith("epoch_002")


def test_feature_cache_resumes_and_is_keyed_by_id(data, tmp_path):
    from omnisource.data.importers import from_folders

    rows = [r for r in from_folders(data / "videos").rows if r["status"] == "ok"][:10]
    backbone = create_backbone("efficientnet_lite0", pretrained="imagenet")
    full = tmp_path / "full"
    extract_features(rows, backbone, full, size=64, frames=4, shard_size=4, workers=0, progress=False)
    part = tmp_path / "part"
    extract_features(rows[:5], backbone, part, size=64, frames=4, shard_size=4, workers=0, progress=False)
    shards_before = sorted(p.name for p in part.glob("shard-*"))
    extract_features(rows, backbone, part, size=64, frames=4, shard_size=4, workers=0, progress=False)
    assert set(shards_before) <= {p.name for p in part.glob("shard-*")}  # finished shards are kept
    ids = [r["id"] for r in rows]
    a, b = load_features(full, ids), load_features(part, ids)
    assert len(cached_ids(part)) == 10
    for rid in ids:
        assert a[rid].shape == (4, 1280)
        np.testing.assert_allclose(a[rid].astype(np.float32), b[rid].astype(np.float32), atol=2e-2)


def test_feature_cache_records_decode_failures(tmp_path):
    from omnisource.data.manifest import new_row

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    rows = [new_row("web", "video", str(bad))]
    failures = extract_features(rows, create_backbone("efficientnet_lite0"), tmp_path / "c", size=64, frames=2,
                                workers=0, progress=False)
    assert list(failures) == [rows[0]["id"]] and failures[rows[0]["id"]]
