"""The HTML report: confusion scores and counts by hand, a hand-built workspace, a real browser."""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from media_factory import frame_number, write_image, write_video
from omnisource.cli import app
from omnisource.config import load_config
from omnisource.data.manifest import Manifest, new_row, read_manifest, write_manifest
from omnisource.report.collect import extremes, per_class_counts, status_counts
from omnisource.report.confusion import confusion_scores, pair_changes
from omnisource.report.stage import thumbnail, write_report

CLASSES = ["a", "b", "c"]


def test_confusion_scores_by_hand():
    # s_01 = (2 + 1) / (2 + 1 + 8 + 5) = 3/16; class c is never confused: s_02 = s_12 = 0.
    s = confusion_scores([[8, 2, 0], [1, 5, 0], [0, 0, 4]])
    assert s[0, 1] == s[1, 0] == pytest.approx(3 / 16)
    assert s[0, 2] == 0 and s[1, 2] == 0
    assert np.isnan(np.diag(s)).all()
    # A pair with no samples at all has no score.
    assert np.isnan(confusion_scores([[3, 0, 0], [0, 0, 0], [0, 0, 0]])[1, 2])
    with pytest.raises(ValueError, match="square"):
        confusion_scores([[1, 2, 3]])


def test_pair_changes_by_hand():
    base = [[6, 4, 0], [2, 8, 0], [0, 0, 5]]  # s_ab = 6/20 = 0.3, s_ac = s_bc = 0
    run = [[9, 1, 0], [0, 8, 2], [0, 1, 4]]   # s_ab = 1/18, s_ac = 0, s_bc = 3/15 = 0.2
    ch = pair_changes(run, base, CLASSES)
    assert [e["pair"] for e in ch["fell"]] == [("a", "b")]
    assert ch["fell"][0]["baseline"] == pytest.approx(0.3)
    assert ch["fell"][0]["delta"] == pytest.approx(1 / 18 - 0.3)
    assert [e["pair"] for e in ch["rose"]] == [("b", "c")]
    assert ch["rose"][0]["run"] == pytest.approx(0.2)
    assert pair_changes(base, base, CLASSES) == {"fell": [], "rose": []}
    with pytest.raises(ValueError, match="do not match"):
        pair_changes(run, base, ["a", "b"])


def test_per_class_counts_status_counts_and_extremes_by_hand():
    before, after = per_class_counts([0, 0, 1, -1, 2, -1], [0, -1, 1, 0, -1, -1], 3)
    assert before.tolist() == [2, 1, 1, 2]  # last bin: queries naming no class
    assert after.tolist() == [2, 1, 0]
    assert status_counts(["ok", "rejected", "ok", "weird"]) == {"ok": 2, "corrupt": 0, "duplicate": 0,
                                                                "rejected": 1, "weird": 1}
    assert extremes([0.2, 0.9, 0.5, 0.7], 2) == ([1, 3], [0, 2])
    assert extremes([0.2, 0.9, 0.5], 2) == ([1, 2], [0])  # no sample shown twice
    assert extremes([], 3) == ([], [])


def test_thumbnail_of_a_video_is_its_middle_frame(tmp_path):
    from io import BytesIO

    from PIL import Image

    video = write_video(tmp_path / "v.mp4", 9)
    png = thumbnail(new_row("web", "video", str(video)))
    assert frame_number(np.asarray(Image.open(BytesIO(png)).convert("RGB"))) == 4
    clip = new_row("web", "video", str(video), start_s=0.0, end_s=0.2)  # frames 0-4 at 25 fps
    assert frame_number(np.asarray(Image.open(BytesIO(thumbnail(clip))).convert("RGB"))) == 2


def _workspace(root, web=True, truth=True, student=True):
    """A workspace as the pipeline leaves it, written by hand: target, one web image source
    (filtered), a teacher and a student run with logs and metrics."""
    ws = root / "ws"
    target = [new_row("target", "video", str(write_video(root / f"t{i}.mp4", 6)), label=i % 3,
                      split="train" if i < 6 else "val") for i in range(9)]
    target[0].update(status="corrupt", reason="cannot decode")
    target.append(new_row("target", "video", str(root / "t_unused.mp4"), label=0, split="unused"))  # per_class
    write_manifest(Manifest(target, CLASSES), ws / "manifests" / "target.validated.parquet")
    for run, cm in (("target_only", [[1, 1, 0], [1, 1, 0], [0, 0, 2]]),
                    ("omnisource", [[2, 0, 0], [1, 1, 0], [0, 1, 1]])):
        if run == "omnisource" and not student:
            continue
        (ws / "runs" / run).mkdir(parents=True)
        top1 = np.trace(cm) / np.sum(cm)
        (ws / "runs" / run / "metrics.json").write_text(json.dumps(
            {"num_samples": 6, "top1": top1, "top5": 1.0, "mean_class_accuracy": top1,
             "confusion_matrix": cm, "classes": CLASSES}))
        sources = ["target", "images"] if run == "omnisource" else ["target"]
        log = [{"epoch": e, "train": {s: {"loss": 1.0 / e, "acc": 0.2 * e} for s in sources},
                "val": {"top1": 0.1 * e}} for e in (1, 2, 3)]
        (ws / "runs" / run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n{\"epo")
    cfg = load_config(None, [f"workspace={ws}"])
    if not web:
        return cfg, ws
    cfg = load_config(None, [f"workspace={ws}", "web=[{name: images, root: x}]"])
    rows = []
    (root / "web").mkdir()
    for i, (query, status, prob) in enumerate([("a", "ok", 0.9), ("a", "ok", 0.6), ("b", "rejected", 0.3),
                                               ("b", "ok", 0.8), ("zebra", "rejected", 0.7),
                                               ("a", "duplicate", None), ("c", "corrupt", None)]):
        path = write_image(root / "web" / f"{i}.png", size=(24, 20), value=20 * i)
        row = new_row("images", "image", str(path), weak_labels=[query], status=status,
                      true_label=(query if query in CLASSES else None) if truth else None)
        if prob is not None:
            row.update(teacher_prob=prob, teacher_pred=CLASSES.index(query) if query in CLASSES else 0)
        if status == "ok":
            row["label"] = CLASSES.index(query)
        if query == "b" and status == "rejected":  # a manifest of before drop_reason: read from the reason
            row["reason"] = "teacher confidence 0.30 < 0.50"
        if query == "zebra":
            row.update(reason="query names no target class", drop_reason="no class")
        rows.append(row)
    write_manifest(Manifest(rows, CLASSES), ws / "manifests" / "aux_images.parquet")
    write_manifest(Manifest(rows[:5], []), ws / "manifests" / "web_images.parquet")
    write_manifest(Manifest([r for r in rows if r["status"] == "ok"], CLASSES),
                   ws / "manifests" / "train_images.parquet")
    stats = {"scored": 5, "kept": 3}
    if truth:
        stats["filter"] = {"kept": 3, "total": 5, "relevant": 4, "precision": 1.0, "recall": 0.75}
    (ws / "selection").mkdir()
    (ws / "selection" / "images.json").write_text(json.dumps(stats))
    return cfg, ws


def _na(text):
    return re.findall(r'<p class="na">not available: ([^<]*)</p>', text)


def _no_external_urls(text):
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', text)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs[:5]
    assert not re.search(r"(https?:)?//[a-z]", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text))


def test_full_report_has_every_section_and_no_external_url(tmp_path):
    cfg, ws = _workspace(tmp_path)
    path = write_report(cfg, ws)
    text = path.read_text()
    # 3 kept and 2 dropped samples all show among the highest-confidence ones (4 per group).
    assert _na(text) == ["no samples beyond those shown above"] * 2 + \
        ["no comparisons or sweeps yet (`omnisource compare`, `omnisource sweep grid|labels|teacher|ratio`)"]
    _no_external_urls(text)
    # Counts per stage: 7 collected, 1 corrupt, 1 duplicate, 2 rejected, 3 kept, 3 training samples.
    assert re.search(r"<td>images</td><td>7</td><td>1</td><td>1</td><td>2</td><td>3</td><td>3</td>", text)
    # The target rows the experiment uses, by split; the unused import is a note, not "labeled".
    assert "<td>target: labeled for training</td><td>6</td><td>1</td><td>0</td><td>0</td><td>5</td><td>5</td>" in text
    assert "<td>target: validation</td><td>3</td><td>0</td><td>0</td><td>0</td><td>3</td><td>–</td>" in text
    assert "1 more imported target videos are not used by this experiment" in text
    # Dropped thumbnails say why: from drop_reason, or from an older manifest's reason.
    assert "zebra → a (0.70) · no class" in text and "b → b (0.30) · low confidence" in text
    # Teacher and student on shared axes, and their confusion difference: one figure each.
    assert text.count('alt="training curves of every run"') == 1 and "curves_target_only" not in text
    assert text.count('alt="confusion matrices and their differences with the baseline"') == 1
    # Fig. 3 rows: class a had 2 clean samples, both kept; "zebra" names no class.
    assert "<td>a</td><td>2</td><td>2</td>" in text and "<td>(no class)</td><td>1</td><td>0</td>" in text
    assert "<td>0.750</td>" in text  # recall
    # Pair a-b: baseline s = 2/4 = 0.5, student s = 1/4 = 0.25; pair b-c rose from 0 to 1/3.
    assert "<td>a – b</td><td>0.500</td><td>0.250</td><td>-0.250</td>" in text
    assert "<td>b – c</td><td>0.000</td><td>0.333</td><td>0.333</td>" in text
    # Every embedded image is also a file next to the page (thumbnails too), and no stale ones stay.
    embedded = re.findall(r'<img class="(\w+)"', text)
    files = sorted((path.parent / "figures").rglob("*.png"))
    assert len(files) == len(embedded) and embedded.count("thumb") == 5
    stale = path.parent / "figures" / "old.png"
    stale.write_bytes(b"x")
    write_report(cfg, ws)
    assert not stale.exists()


def test_report_lists_the_lowest_and_highest_weighted_web_samples_of_a_da_run(tmp_path):
    cfg, ws = _workspace(tmp_path)
    (ws / "runs" / "da_image").mkdir()
    web = read_manifest(ws / "manifests" / "web_images.parquet").rows  # images 0..4, queries a a b b zebra
    weights = [0.2, 0.5, 0.9, 1.4, 2.0]  # sorted ascending, as train.transfer writes them
    records = [{"id": r["id"], "source": "image", "weight": w, "draws": 3} for r, w in zip(web, weights)]
    records.append({"id": "not-in-any-manifest", "source": "frame", "weight": 3.0, "draws": 1})
    (ws / "runs" / "da_image" / "attention.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    text = write_report(cfg, ws).read_text()
    section = text[text.index("lowest-weighted web samples"):]
    low = re.findall(r"<td>image</td><td>(\w+)</td><td>\w*</td><td>([\d.]+)</td><td>(\d).png</td>", section)
    # lowest first: images 0..4 (the 5 lowest); highest first: the unknown frame sample, then images 4..1
    assert low[:5] == [("a", "0.200", "0"), ("a", "0.500", "1"), ("b", "0.900", "2"), ("b", "1.400", "3"),
                       ("zebra", "2.000", "4")]
    assert low[5:] == [("zebra", "2.000", "4"), ("b", "1.400", "3"), ("b", "0.900", "2"), ("a", "0.500", "1")]
    assert "<td>frame</td><td>?</td><td></td><td>3.000</td><td>not-in-any-manifest</td>" in section
    _no_external_urls(text)


def test_report_degrades_to_short_reasons(tmp_path):
    cfg, ws = _workspace(tmp_path, web=False, student=False)
    text = write_report(cfg, ws).read_text()
    reasons = _na(text)
    assert "no filtered web source (no web sources)" in reasons
    assert "only the baseline run target_only is evaluated; nothing to compare" in reasons
    assert "<td>target_only (baseline)</td>" in text
    _no_external_urls(text)

    cfg, ws = _workspace(tmp_path / "nt", truth=False)
    assert "images: no ground truth (true_label) to compare with" in _na(write_report(cfg, ws).read_text())

    empty = tmp_path / "empty"
    empty.mkdir()
    reasons = _na(write_report(load_config(None, [f"workspace={empty}"]), empty).read_text())
    assert len(reasons) == 9 and "no manifests in the workspace yet" in reasons
    assert "no target manifest in the workspace (run `omnisource import`)" in reasons


def test_report_cli_and_its_errors(tmp_path):
    runner = CliRunner()
    _, ws = _workspace(tmp_path, web=False)
    out = tmp_path / "elsewhere" / "r.html"
    result = runner.invoke(app, ["report", str(ws), "--out", str(out), "--baseline", "omnisource"])
    assert result.exit_code == 0, result.output
    assert "<td>omnisource (baseline)</td>" in out.read_text() and (out.parent / "figures").is_dir()
    result = runner.invoke(app, ["report", str(ws), "--baseline", "nope"])
    assert result.exit_code == 0 and "no baseline run: nope has no metrics.json" in \
        (ws / "report" / "index.html").read_text()
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "workspace folder not found" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_report_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser check needs it")
    cfg, ws = _workspace(tmp_path)
    path = write_report(cfg, ws, self_check=True)
    # Chromium refuses to run headless in some sandboxes; a clear failure beats a silent pass.
    proc = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="report-check">([^<]*)</pre>', proc.stdout)
    assert found, f"chromium exited {proc.returncode} without the check result: {proc.stderr[-500:]}"
    check = json.loads(found.group(1))
    assert check["broken"] == [] and check["images"] == len(re.findall("<img ", path.read_text())) >= 9
    assert check["tables"] >= 6


def test_figures_read_small_counts_per_class_axes_and_confusion_differences():
    from omnisource.report import figures
    from omnisource.report.runs import group_arms, mean_confusion

    fig = figures.class_counts_figure("images", ["HorseRace", "Archery"], [73, 60, 1181], [6, 50])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # 6 kept beside 1,181 "(no class)" stays visible
    assert {t.get_text() for t in ax.texts} >= {"6", "1181", "50"}
    assert figures.sweep_axis("labels", [{"point": "1"}, {"point": "5"}]) == "labeled training videos per class"
    assert figures.sweep_axis("labels", [{"point": "3%"}]) == "labeled training videos (% of each class)"
    assert group_arms({"omnisource": 1, "target_only": 2, "omnisource_seed1": 3}) == \
        {"omnisource": [1, 3], "target_only": [2]}
    base = [{"confusion_matrix": [[2, 0], [1, 1]]}, {"confusion_matrix": [[1, 1], [1, 1]]}]
    assert mean_confusion(base).tolist() == [[1.5, 0.5], [1.0, 1.0]]
    fig = figures.confusion_compare_figure("target_only", [[2, 0], [1, 1]], [("omnisource", [[2, 0], [0, 2]])],
                                           ["a", "b"])
    diff = next(ax for ax in fig.axes if ax.get_title() == "omnisource − target_only")
    assert sorted(t.get_text() for t in diff.texts) == ["+1", "-1"]
