"""Sweeps: label subsets and pooled filter numbers by hand, then the three sweeps end to end on
tiny synthetic data sharing one feature cache, resumed, and shown by the report."""
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from omnisource.cli import app
from omnisource.config import load_config
from omnisource.data.manifest import read_manifest
from omnisource.demo.synthetic import generate, web_manifests
from omnisource.report.stage import write_report
from omnisource.sweep import label_subset, parse_amount, point_name, pooled_filter, sweep_labels, sweep_ratio, \
    sweep_teacher


def test_label_subset_by_hand():
    labels = np.array([0] * 4 + [1] * 10)
    half = label_subset(labels, "50%", seed=3)
    assert half[:4].sum() == 2 and half[4:].sum() == 5
    three = label_subset(labels, "3")
    assert three[:4].sum() == 3 and three[4:].sum() == 3
    assert label_subset(labels, "1%")[:4].sum() == 1  # at least one video per class
    assert label_subset(labels, "9").sum() == 4 + 9  # at most all of a class
    small, large = label_subset(labels, "10%", seed=1), label_subset(labels, "60%", seed=1)
    assert not (small & ~large).any()  # nested: 10 % ⊂ 60 %
    assert (label_subset(labels, "50%", seed=3) == half).all()
    assert parse_amount("30%") == ("fraction", 0.3) and parse_amount("5") == ("per_class", 5)
    for bad in ("0", "0%", "150%", "ten", ""):
        with pytest.raises(ValueError, match="label amount"):
            parse_amount(bad)


def test_pooled_filter_and_point_names_by_hand():
    stats = [{"kept": 4, "filter": {"kept": 4, "precision": 0.5, "relevant": 10}},
             {"kept": 6, "filter": {"kept": 6, "precision": 1.0, "relevant": 5}}]
    # right = 0.5 * 4 + 1.0 * 6 = 8: precision 8 / 10, recall 8 / 15.
    assert pooled_filter(stats) == {"kept": 10, "precision": pytest.approx(0.8), "recall": pytest.approx(8 / 15)}
    assert pooled_filter([stats[0], {"kept": 3}]) == {"kept": 7}  # one source without ground truth
    assert point_name("10%") == "10pct" and point_name("features.head=linear train.epochs=3") == \
        "features.head-linear-train.epochs-3"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    generate(root, groups=3, clips_per_group=2, web_per_class=3, size=48, frames=8, untrimmed_per_class=1)
    images = web_manifests(root)["images"]
    overrides = [f"target.root={root / 'videos'}", "target.val_groups=['01']", "features.size=32",
                 "features.frames=2", "train.epochs=2", "train.optimizer=adamw", "train.lr=0.003",
                 "omni.threshold=0.2", "clean.dedup=false",  # run's dedup: tests/test_run_methods.py
                 f"web=[{{name: images, kind: image, format: manifest, root: '{images}'}}]"]
    return root, overrides


def test_sweeps_end_to_end_share_features_resume_and_reach_the_report(base):
    root, overrides = base
    ws = root / "ws"
    result = CliRunner().invoke(app, ["run", "-w", str(ws), *overrides])  # `run` ends with the report
    assert result.exit_code == 0 and "report: " in result.output, result.output
    assert "<td>omnisource</td>" in (ws / "report" / "index.html").read_text()
    cfg = load_config(None, [*overrides, f"workspace={ws}"])

    sweep_ratio(cfg, ws, [0.5, 1.0])
    data = json.loads((ws / "sweeps" / "sweep_ratio.json").read_text())
    assert [p["point"] for p in data["points"]] == ["0.5:1", "1:1"]
    for p, ratio in zip(data["points"], (0.5, 1.0)):
        point = ws / "sweeps" / "ratio" / f"r{ratio:g}"
        student = yaml.safe_load((point / "runs" / "omnisource" / "config.yaml").read_text())
        assert student["web"][0]["batch_ratio"] == ratio
        metrics = json.loads((point / "runs" / "omnisource" / "metrics.json").read_text())
        assert p["student_top1"] == metrics["top1"] and p["kept"] > 0 and "error" not in p
        assert not (point / "features").exists()  # the base workspace's cache served every point
    assert (ws / "features").is_dir()
    assert (ws / "sweeps" / "sweep_ratio.csv").read_text().splitlines()[0].startswith("point,student_top1")
    stamp = (ws / "sweeps" / "ratio" / "r0.5" / "point.json").stat().st_mtime_ns
    sweep_ratio(cfg, ws, [0.5, 1.0])  # finished points are skipped
    assert (ws / "sweeps" / "ratio" / "r0.5" / "point.json").stat().st_mtime_ns == stamp

    # A threshold no prediction of a 2-epoch teacher reaches, and no per-query floor: the point's
    # student cannot train, which the sweep records as the point's result and goes on.
    sweep_labels(load_config(None, [*overrides, "omni.threshold=0.999", "omni.min_keep=0", f"workspace={ws}"]), ws,
                 ["50%"])
    full = read_manifest(ws / "sweeps" / "labels" / "_target" / "manifests" / "target.parquet").rows
    sub = read_manifest(ws / "sweeps" / "labels" / "50pct" / "manifests" / "target.validated.parquet").rows
    assert sorted(r["id"] for r in sub if r["split"] == "val") == sorted(r["id"] for r in full if r["split"] == "val")
    n_train = sum(r["split"] == "train" for r in full)
    assert sum(r["split"] == "train" for r in sub) == n_train // 2  # 4 per class -> 2 per class
    labels = json.loads((ws / "sweeps" / "sweep_labels.json").read_text())["points"]
    assert labels[0]["labeled"] == n_train // 2
    assert "no web source has a training sample" in labels[0]["error"] and labels[0]["student_top1"] is None
    base_metrics = json.loads((ws / "sweeps" / "labels" / "50pct" / "runs" / "target_only" / "metrics.json").read_text())
    assert labels[0]["baseline_top1"] == base_metrics["top1"]
    assert not (ws / "sweeps" / "labels" / "50pct" / "point.json").exists()  # tried again next time

    # The plumbing of a teacher sweep, apart from whether a 2-epoch teacher keeps anything: no filter.
    sweep_teacher(load_config(None, [*overrides, "omni.filter=none", f"workspace={ws}"]), ws, ["features.head=linear"])
    point = ws / "sweeps" / "teacher" / "t0-features.head-linear"
    teacher = yaml.safe_load((point / "runs" / "teacher" / "config.yaml").read_text())
    student = yaml.safe_load((point / "runs" / "omnisource" / "config.yaml").read_text())
    assert teacher["features"]["head"] == "linear" and student["features"]["head"] == "tsn"
    assert student["omni"]["teacher_runs"] == ["teacher"]
    t = json.loads((ws / "sweeps" / "sweep_teacher.json").read_text())["points"][0]
    assert t["teacher_top1"] == json.loads((point / "runs" / "teacher" / "metrics.json").read_text())["top1"]

    text = write_report(cfg, ws).read_text()
    for kind in ("labels", "teacher", "ratio"):
        assert f"<h3>sweep {kind}</h3>" in text
    assert "no sweeps yet" not in text


def test_sweep_cli_errors_are_one_line(base, tmp_path):
    root, overrides = base
    runner = CliRunner()
    no_web = [o for o in overrides if not o.startswith("web=")]
    for args, message in ((["ratio", *no_web], "no web sources configured"),
                          (["ratio", "--ratios", "1,x", *overrides], "expected numbers"),
                          (["ratio", "--ratios", "0", *overrides], "ratios must be positive"),
                          (["labels", "--amounts", "0%", *overrides], "label amount '0%'"),
                          (["teacher", "-t", "features.head=mlp", *overrides], "features.head")):
        result = runner.invoke(app, ["sweep", args[0], "-w", str(tmp_path / "ws"), *args[1:]])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_grid_points_by_hand():
    from omnisource.sweep import grid_points, split_values

    assert split_values("a,b,[c,d],'e,f'") == ["a", "b", "[c,d]", "'e,f'"]
    assert grid_points(["omni.filter=both,none", "omni.threshold=0.5,0.8", "train.epochs=3"]) == [
        {"omni.filter": f, "omni.threshold": t, "train.epochs": "3"} for f in ("both", "none") for t in ("0.5", "0.8")]
    for bad in (["omni.filter"], ["omni.filter="], ["=1,2"], ["omni.filter=both,"], []):
        with pytest.raises(Exception, match="sweep grid"):
            grid_points(bad)


def test_sweep_grid_over_any_key_with_seeds(base):
    root, overrides = base
    ws = root / "ws_grid"
    runner = CliRunner()
    # The grid's arguments are its axes only: the base config is the workspace's.
    assert runner.invoke(app, ["config", "set", "-w", str(ws), *overrides]).exit_code == 0
    result = runner.invoke(app, ["sweep", "grid", "-w", str(ws), "--seeds", "2", "omni.filter=none,confidence",
                                 "omni.threshold=0.2"])
    assert result.exit_code == 0, result.output
    data = json.loads((ws / "sweeps" / "sweep_grid.json").read_text())["points"]
    assert [p["point"] for p in data] == ["omni.filter=none", "omni.filter=confidence"]  # the fixed key is no axis
    point0 = ws / "sweeps" / "grid" / "omni.filter-none" / "seed0"
    web_ok = sum(r["status"] == "ok" for r in read_manifest(point0 / "manifests" / "web_images.parquet").rows)
    for p, name in zip(data, ("none", "confidence")):
        assert p["seeds"] == 2 and p["settings"] == {"omni.filter": name}
        for seed in (0, 1):
            run = ws / "sweeps" / "grid" / point_name(p["point"]) / f"seed{seed}" / "runs" / "omnisource"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert cfg["omni"]["filter"] == name and cfg["omni"]["threshold"] == 0.2 and cfg["train"]["seed"] == seed
        assert p["student_top1_lo"] <= p["student_top1"] <= p["student_top1_hi"]
    assert data[0]["kept"] == web_ok > 0  # no filter keeps every web sample, on every seed
    assert "delta_top1" in data[1] and "delta_top1" not in data[0]  # paired with the first point
    assert not (ws / "sweeps" / "grid" / point_name(data[0]["point"]) / "seed0" / "features").exists()
    result = runner.invoke(app, ["sweep", "grid", "-w", str(ws), "omni.threshold=2"])
    assert result.exit_code == 2 and "omni.threshold" in result.output, result.output  # checked before any run
