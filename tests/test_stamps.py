"""Stage stamps: run skips what was made from the same inputs (also by hand), and redoes what a
changed input (teacher, target set, config) makes stale; training never destroys silently."""
import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from omnisource.cli import app
from omnisource.config import load_config
from omnisource.data.manifest import Manifest, read_manifest, write_manifest
from omnisource.demo.synthetic import generate, web_manifests
from omnisource.workspace import Workspace

runner = CliRunner()


def test_one_file_digest_serves_stamps_teachers_and_exact_duplicates(tmp_path):
    """digest.file_hash reads in blocks; the stamps (sha1[:16], cached), the exact-duplicate search and
    the model card / predict's backbone check (sha256, None for what is no file) and the teachers'
    weights digest all come from it."""
    from omnisource.clean import exact
    from omnisource.digest import file_hash, file_sha256
    from omnisource.stamps import file_digest

    data = bytes(range(256)) * 41  # 10,496 bytes: several blocks of 1,000 and a partial one
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    assert file_hash(path, "sha1", block=1000) == hashlib.sha1(data).hexdigest() == file_hash(path, "sha1")
    assert file_digest(path) == hashlib.sha1(data).hexdigest()[:16]
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path) is None and file_sha256(tmp_path / "missing") is None
    assert file_digest(tmp_path / "missing") == "missing"
    assert exact.file_sha256 is file_sha256


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stamps")
    generate(root, groups=3, clips_per_group=2, web_per_class=3, size=48, frames=8, untrimmed_per_class=0)
    return root, web_manifests(root)["images"]


def base(data, ws):
    root, images = data
    return ["-w", str(ws), f"target.root={root / 'videos'}", "target.val_groups=['01']", "features.size=32",
            "features.frames=2", "train.epochs=3", "train.optimizer=adamw", "train.lr=0.003", "omni.threshold=0.1",
            "omni.filter=confidence", "clean.dedup=false",  # run's dedup: tests/test_run_methods.py
            f"web=[{{name: images, kind: image, format: manifest, root: '{images}'}}]"]


def invoke(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_run_skips_stages_made_by_hand(data, tmp_path):
    """In the README's order; `student` embeds the pseudo-clips `transform` made (they were left
    out, and the "student" trained on the target alone)."""
    ws = tmp_path / "ws"
    invoke("import", *base(data, ws), "omni.image_to_clip=translation")
    for command in ("validate", "import-web", "features", "train", "evaluate", "score", "select", "transform"):
        invoke(command, "-w", ws)
    assert "student: images: 18 samples" in invoke("student", "-w", ws)
    log = [json.loads(line) for line in (Workspace(ws).run("omnisource") / "log.jsonl").read_text().splitlines()]
    assert "images" in log[-1]["train"]
    invoke("evaluate", "-w", ws, "--run", "omnisource")
    for name in ("features", "train@target_only", "score", "student@omnisource"):  # plain and training stages
        stamp = Workspace(ws).read_stamp(name)
        assert stamp["state"] == "done" and stamp["seconds"] > 0, (name, stamp)
    out = invoke("run", "-w", ws)
    for name in ("import", "validate", "import-web", "features", "train@target_only", "evaluate@target_only",
                 "score", "select", "transform", "student@omnisource", "evaluate@omnisource"):
        assert f"{name}: up to date" in out, (name, out)
    assert "epoch 1/" not in out
    assert out.strip().splitlines()[-1].startswith("teacher ") and "→ student" in out  # the one-line summary


def test_a_finished_stage_stamps_its_wall_time(tmp_path):
    """A running stage's stamp has no time yet; the finished one holds the seconds it took."""
    import time

    from omnisource.stamps import stage

    @stage("nap", inputs=lambda cfg, ws: {"config x": "1"})
    def nap(cfg, ws):
        assert ws.read_stamp("nap") == {"state": "running", "inputs": {"config x": "1"}}
        time.sleep(0.3)

    nap(None, tmp_path)
    stamp = Workspace(tmp_path).read_stamp("nap")
    assert stamp["state"] == "done" and 0.3 <= stamp["seconds"] < 10, stamp


def _probs(ws):
    from omnisource.teacher.score import read_scores

    return {k: np.array(v["probs"]) for k, v in read_scores(Workspace(ws).scores("images")).items()}


def test_scores_follow_the_teacher(data, tmp_path):
    """Score shards were keyed by row ids only: after the teacher changed, `score` kept the old ones."""
    ws = tmp_path / "ws"
    invoke("import", *base(data, ws))
    for command in ("validate", "import-web", "features", "train", "score"):
        invoke(command, "-w", ws)
    before = _probs(ws)
    invoke("train", "-w", ws, "--overwrite", "train.epochs=1")  # another teacher
    invoke("score", "-w", ws, "train.epochs=1")
    after = _probs(ws)
    assert before.keys() == after.keys() and len(after) == 18
    assert any(not np.allclose(before[k], after[k]) for k in after)
    Workspace(ws).scores("images").joinpath("teacher.json").unlink()
    for shard in Workspace(ws).scores("images").glob("part-*"):  # from scratch: the same as rescored
        shard.unlink()
    invoke("score", "-w", ws, "train.epochs=1")
    fresh = _probs(ws)
    assert all(np.allclose(fresh[k], after[k]) for k in after)
    # `run` with the first config trains that teacher again (moving the other aside) and rescores.
    out = invoke("run", "-w", ws, "train.epochs=3")
    assert "moved to" in out and "score: running again" in out
    assert all(np.allclose(before[k], v, atol=1e-6) for k, v in _probs(ws).items())


def test_motion_is_refit_when_the_target_set_changes(data, tmp_path):
    """transform fitted motion.npz once and kept it whatever the target set became."""
    from omnisource.pipeline import import_target
    from omnisource.transform.stage import fit_motion, transform_stage

    root, images = data
    ws = Workspace(tmp_path / "ws")
    args = [f"target.root={root / 'videos'}", "target.val_groups=['01']", "omni.image_to_clip=perspective",
            f"web=[{{name: images, kind: image, format: manifest, root: '{images}'}}]"]
    rows = [dict(r, label=0) for r in read_manifest(images).rows]
    counts, written = [], []
    for per_class in (0, 3):
        cfg = load_config(None, [*args, f"target.per_class={per_class}"])
        import_target(cfg, ws)
        target = read_manifest(ws.target())
        write_manifest(Manifest(rows, target.classes), ws.web("images", "aux"))
        transform_stage(cfg, ws)
        train = [r for r in target.rows if r["split"] == "train"]
        _, expected = fit_motion(train, target.classes, cfg.media.max_pixels)
        counts.append(int(np.load(ws.motion)["agnostic/count"]))
        written.append(ws.motion.stat().st_mtime_ns)
        assert counts[-1] == expected["agnostic"]  # the fit of this target set
    assert len(train) == 18 and written[1] > written[0]  # three per class: refitted on fewer videos
    transform_stage(cfg, ws)
    assert ws.motion.stat().st_mtime_ns == written[1]  # the same target set: not fitted again


def test_retrain_refuses_to_destroy_and_never_leaves_stale_metrics(data, tmp_path):
    ws = tmp_path / "ws"
    run = Workspace(ws).run("target_only")
    invoke("import", *base(data, ws))
    for command in ("validate", "features", "train", "evaluate"):
        invoke(command, "-w", ws)
    assert "up to date" in invoke("train", "-w", ws)  # same inputs: nothing to do
    out = invoke("train", "-w", ws, "train.epochs=2", code=2)
    assert "--resume" in out and "--overwrite" in out and len(out.strip().splitlines()) == 1
    assert (run / "checkpoints" / "epoch_003").is_dir() and (run / "metrics.json").is_file()
    invoke("train", "-w", ws, "--overwrite", "train.epochs=2")
    assert not (run / "metrics.json").exists()  # the old number cannot pass for the new run
    assert not (run / "checkpoints" / "epoch_003").exists() and (run / "checkpoints" / "epoch_002").is_dir()
    report = invoke("report", ws)
    html = Workspace(ws).report_dir.joinpath("index.html").read_text()
    assert "report:" in report and "no evaluated runs" in html
    out = invoke("run", "-w", ws, "train.epochs=3")  # the 2-epoch run is moved aside
    moved = list((Workspace(ws).runs_dir / ".previous").iterdir())
    assert len(moved) == 1 and (moved[0] / "checkpoints" / "epoch_002").is_dir() and "moved to" in out
    best = json.loads((run / "checkpoints" / "best.json").read_text())["epoch"]  # evaluate takes the best epoch
    assert (run / "checkpoints" / "epoch_003").is_dir()  # of the new 3-epoch run
    assert json.loads((run / "metrics.json").read_text())["checkpoint"] == str(run / "checkpoints" / f"epoch_{best:03d}")
