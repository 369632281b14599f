"""``omnisource compare``: arms, intervals, paired differences and differing settings, from runs
written by hand with known numbers; errors in one line; the table reaches the report."""
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from omnisource.cli import app
from omnisource.compare import differing_keys, mean_interval, wilson_interval
from omnisource.config import load_config, to_dict
from omnisource.data.manifest import Manifest, new_row, write_manifest
from omnisource.evaluate.metrics import save_predictions
from omnisource.evaluate.paired import RESAMPLES, paired_clip_bootstrap


def _run(ws, name, top1, mca, *overrides, seed=0, clips=100):
    run = ws / "runs" / name
    run.mkdir(parents=True)
    cfg = to_dict(load_config(None, [f"train.seed={seed}", f"train.run_name={name}", *overrides]))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "metrics.json").write_text(json.dumps({"top1": top1, "mean_class_accuracy": mca, "num_samples": clips}))
    return run


def _predicted_run(ws, name, seed, right, labels, order=None):
    """A run whose saved per-clip predictions get exactly the clips ``right`` (bool per clip) right,
    written in clip order ``order``; metrics.json says what they score."""
    n = len(labels)
    run = _run(ws, name, float(np.mean(right)), float(np.mean(right)), seed=seed, clips=n)
    order = list(range(n)) if order is None else order
    scores = np.full((n, 3), 0.1)
    for k, i in enumerate(order):
        scores[k, labels[i] if right[i] else (labels[i] + 1) % 3] = 0.8
    save_predictions(run / "predictions.npz", [f"v{i}" for i in order], [labels[i] for i in order], scores)


def test_intervals_by_hand():
    m, lo, hi = mean_interval([0.9, 0.8])
    # sd = 0.0707, t(1) = 12.706: half width 12.706 * 0.0707 / sqrt(2) = 0.635
    assert m == pytest.approx(0.85) and hi - m == pytest.approx(0.635, abs=1e-3) and m - lo == pytest.approx(hi - m)
    assert mean_interval([0.7]) == (0.7, 0.7, 0.7)
    lo, hi = wilson_interval(0.9, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.826, 0.945)
    a, b = {"omni": {"threshold": 0.5, "filter": "both"}, "train": {"seed": 0}}, \
        {"omni": {"threshold": 0.8, "filter": "both"}, "train": {"seed": 1}}
    assert differing_keys([a, b]) == ["omni.threshold"]  # seeds are not settings


def test_compare_workspaces_and_runs(tmp_path):
    a, b = tmp_path / "ws_a", tmp_path / "ws_b"
    web = "web=[{name: images, kind: image, root: /x}]"
    _run(a, "target_only", 0.80, 0.78)
    _run(a, "target_only_seed1", 0.70, 0.69, seed=1)
    _run(a, "omnisource", 0.90, 0.88, web, "omni.threshold=0.5")
    _run(a, "omnisource_seed1", 0.80, 0.79, web, "omni.threshold=0.5", seed=1)
    (a / "selection").mkdir()
    (a / "selection" / "images.json").write_text(json.dumps({"kept": 42}))
    _run(b, "omnisource", 0.95, 0.94, web, "omni.threshold=0.8")
    _run(b, "omnisource_seed1", 0.85, 0.86, web, "omni.threshold=0.8", seed=1)

    result = CliRunner().invoke(app, ["compare", "-w", str(a), str(b / "runs" / "omnisource")])
    assert result.exit_code == 0, result.output
    data = json.loads((a / "compare" / "compare.json").read_text())
    rows = {r["arm"]: r for r in data["rows"]}
    assert list(rows) == ["ws_a/target_only", "ws_a/omnisource", "ws_b/omnisource"]
    t, o, single = rows["ws_a/target_only"], rows["ws_a/omnisource"], rows["ws_b/omnisource"]
    assert t["runs"] == 2 and t["top1"] == pytest.approx(0.75) and t["interval"] == "seeds"
    # paired by seed against the first arm: (0.90 - 0.80, 0.80 - 0.70) = (0.1, 0.1)
    assert o["delta_top1"] == pytest.approx(0.1) and o["delta_lo"] == pytest.approx(0.1)
    assert o["kept"] == "images 42" and "kept" not in t  # kept web samples belong to the student
    assert single["runs"] == 1 and single["interval"] == "clips"  # one run: a Wilson interval over clips
    assert (single["top1_lo"], single["top1_hi"]) == pytest.approx(wilson_interval(0.95, 100))
    assert single["delta_top1"] == pytest.approx(0.95 - 0.75)  # no common seeds: unpaired difference
    assert "omni.threshold" in data["differing"] and "train.seed" not in data["differing"]
    assert "omni.threshold=0.8" in single["settings"] and "omni.threshold=0.5" in o["settings"]
    assert (a / "compare" / "compare.csv").read_text().startswith("arm,runs,clips,top1")
    assert (a / "compare" / "compare.png").stat().st_size > 1000
    assert "ws_b/" in result.output and "+20.0" in result.output  # the unpaired Δ of the single run

    from omnisource.report.stage import write_report

    text = write_report(load_config(None, [f"workspace={a}"]), a).read_text()
    assert "<h3>compare</h3>" in text and "ws_b/omnisource" in text
    alone = CliRunner().invoke(app, ["compare", "-w", str(a)])  # one workspace: its own runs
    assert alone.exit_code == 0, alone.output
    assert [r["arm"] for r in json.loads((a / "compare" / "compare.json").read_text())["rows"]] == \
        ["target_only", "omnisource"]


def test_compare_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    _run(tmp_path / "one", "target_only", 0.8, 0.8)
    runner = CliRunner()
    for args, message in (([str(tmp_path / "missing"), str(tmp_path / "one")], "neither a workspace nor a run"),
                          ([str(tmp_path / "empty"), str(tmp_path / "one")], "has no evaluated runs"),
                          (["-w", str(tmp_path / "one")], "need at least two"),
                          ([], "no workspace given")):
        result = runner.invoke(app, ["compare", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_compare_pairs_clip_by_clip_from_saved_predictions(tmp_path):
    """120 validation clips in 12 groups, 3 seeds. The baseline gets a random 70 % right per seed;
    "better" fixes 12 of its wrong clips of that seed (+10 points, planted), "same" moves as many
    right answers as it breaks (0 planted). The clip-by-clip interval finds the first and not the
    second, and is the evaluate.paired bootstrap over the groups and the seeds."""
    rng = np.random.default_rng(0)
    ws = tmp_path / "ws"
    n, labels = 120, [i % 3 for i in range(120)]
    groups = [f"{i // 10:02d}" for i in range(n)]
    rows = [new_row("target", "video", f"/x/v{i}.mp4", id=f"v{i}", label=labels[i], group=groups[i], split="val")
            for i in range(n)]
    write_manifest(Manifest(rows, ["a", "b", "c"]), ws / "manifests" / "target.validated.parquet")
    base_c, better_c, same_c = [], [], []
    for seed in range(3):
        suffix = f"_seed{seed}" if seed else ""
        base = rng.random(n) < 0.7
        better, same = base.copy(), base.copy()
        wrong, right = np.flatnonzero(~base), np.flatnonzero(base)
        better[rng.choice(wrong, 12, replace=False)] = True
        same[rng.choice(wrong, 6, replace=False)] = True
        same[rng.choice(right, 6, replace=False)] = False
        _predicted_run(ws, "target_only" + suffix, seed, base, labels)
        _predicted_run(ws, "better" + suffix, seed, better, labels, order=list(rng.permutation(n)))
        _predicted_run(ws, "same" + suffix, seed, same, labels)
        base_c.append(base)
        better_c.append(better)
        same_c.append(same)
    result = CliRunner().invoke(app, ["compare", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    rows = {r["arm"]: r for r in json.loads((ws / "compare" / "compare.json").read_text())["rows"]}
    b, s = rows["better"], rows["same"]
    g = [f"{y}/{grp}" for y, grp in zip(labels, groups)]
    want = paired_clip_bootstrap(np.array(better_c, float), np.array(base_c, float), RESAMPLES, groups=g)
    assert b["delta_top1"] == pytest.approx(0.1) and b["delta_lo"] > 0  # the planted +10 points, found
    assert (b["delta_lo"], b["delta_hi"]) == pytest.approx((want["lo"], want["hi"]))
    assert b["delta_paired"] == "clips: 3 seeds × 120 clips in 36 groups"
    assert s["delta_top1"] == pytest.approx(0.0) and s["delta_lo"] < 0 < s["delta_hi"]  # nothing planted
    # Without predictions the pairing falls back to the seeds: every seed gains exactly 12 clips,
    # so the t interval collapses to a point, blind to the clips being a sample of 120.
    for seed in range(3):
        (ws / "runs" / ("better" + (f"_seed{seed}" if seed else "")) / "predictions.npz").unlink()
    assert CliRunner().invoke(app, ["compare", "-w", str(ws)]).exit_code == 0
    rows = {r["arm"]: r for r in json.loads((ws / "compare" / "compare.json").read_text())["rows"]}
    assert rows["better"]["delta_paired"] == "seeds: 3 (no per-clip predictions to pair)"
    assert rows["better"]["delta_top1"] == pytest.approx(0.1)
    assert rows["better"]["delta_lo"] == pytest.approx(0.1) == rows["better"]["delta_hi"]
    # Predictions on other clips than the baseline's cannot be paired clip by clip: the row says why.
    save_predictions(ws / "runs" / "same" / "predictions.npz", [f"w{i}" for i in range(n)], labels, np.eye(3)[labels])
    assert CliRunner().invoke(app, ["compare", "-w", str(ws)]).exit_code == 0
    rows = {r["arm"]: r for r in json.loads((ws / "compare" / "compare.json").read_text())["rows"]}
    assert rows["same"]["delta_paired"] == "seeds: 3 (seed 0: validated on other clips than the baseline)"
