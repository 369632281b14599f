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
from omnisource.evaluate.metrics import classification_metrics, save_predictions
from omnisource.evaluate.paired import paired_clip_bootstrap
from omnisource.report.headline import RESAMPLES, verdict
from omnisource.report.collect import extremes, per_class_counts, status_counts
from omnisource.report.confusion import confusion_scores, pair_changes
from omnisource.report.samples import bounded, query_counts, thumbnail
from omnisource.report.stage import write_report

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


def _write_run(ws, run, seed, labels, preds, ids=None):
    """metrics.json and predictions.npz of a run that predicted ``preds`` for clips ``ids``
    (default v0, v1, ...) of classes ``labels``, as ``omnisource evaluate`` writes them."""
    ids = ids or [f"v{i}" for i in range(len(labels))]
    scores = np.full((len(labels), len(CLASSES)), 0.1)
    scores[np.arange(len(labels)), preds] = 0.8
    metrics = classification_metrics(scores, np.array(labels), CLASSES)
    metrics.update(seed=seed, predictions="predictions.npz")
    (ws / "runs" / run).mkdir(parents=True, exist_ok=True)
    (ws / "runs" / run / "metrics.json").write_text(json.dumps(metrics))
    save_predictions(ws / "runs" / run / "predictions.npz", ids, labels, scores)


def _workspace(root, web=True, truth=True, student=True):
    """A workspace as the pipeline leaves it, written by hand: target, one web image source
    (filtered), a teacher and a student run with logs and metrics."""
    ws = root / "ws"
    target = [new_row("target", "video", str(write_video(root / f"t{i}.mp4", 6)), label=i % 3,
                      split="train" if i < 6 else "val") for i in range(9)]
    target[0].update(status="corrupt", reason="cannot decode")
    target.append(new_row("target", "video", str(root / "t_unused.mp4"), label=0, split="unused"))  # per_class
    write_manifest(Manifest(target, CLASSES), ws / "manifests" / "target.validated.parquet")
    # Six validation clips, two per class; the predictions give the confusion matrices
    # target_only [[1, 1, 0], [1, 1, 0], [0, 0, 2]] and omnisource [[2, 0, 0], [1, 1, 0], [0, 1, 1]].
    for run, preds in (("target_only", [0, 1, 0, 1, 2, 2]), ("omnisource", [0, 0, 0, 1, 2, 1])):
        if run == "omnisource" and not student:
            continue
        _write_run(ws, run, 0, [0, 0, 1, 1, 2, 2], preds)
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
    assert refs and all(r.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "#")) for r in refs), refs[:5]
    assert not re.search(r"(https?:)?//[a-z]", re.sub(r"data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+", "", text))


def test_full_report_has_every_section_and_no_external_url(tmp_path):
    cfg, ws = _workspace(tmp_path)
    path = write_report(cfg, ws)
    text = path.read_text()
    # 3 kept and 2 dropped samples all show among the highest-confidence ones (4 per group).
    # The hand-made workspace has scores but no scores/images/teachers.json (which teacher scored it).
    # Query a: 2 kept, none dropped; the queries naming no class (zebra): 1 dropped, none kept.
    assert _na(text) == ["images: not scored yet", "no dropped samples", "no kept samples"] + \
        ["no comparisons or sweeps yet (`omnisource compare`, `omnisource sweep grid|labels|teacher|ratio`)"]
    _no_external_urls(text)
    # Counts per stage: 7 collected, 1 corrupt, 1 duplicate, 2 rejected, 3 kept, 3 training samples.
    assert re.search(r"<td>images</td><td>7</td><td>1</td><td>1</td><td>2</td><td>3</td><td>3</td>", text)
    # The target rows the experiment uses, by split; the unused import is a note, not "labeled".
    assert "<td>target: labeled for training</td><td>6</td><td>1</td><td>0</td><td>0</td><td>5</td><td>5</td>" in text
    assert "<td>target: validation</td><td>3</td><td>0</td><td>0</td><td>0</td><td>3</td><td>–</td>" in text
    assert "1 more imported target videos are not used by this experiment" in text
    # Dropped thumbnails say why: from drop_reason, or from an older manifest's reason.
    assert "zebra → a 0.70 · no class" in text and "b 0.30 · low confidence" in text
    # Per query: a names class a, 3 samples (1 duplicate removed before), 2 kept; zebra names none.
    assert "<td>a</td><td>a</td><td>3</td><td>1</td><td>2</td><td>0</td><td>0</td><td>0</td><td>0</td>" in text
    assert "<td>zebra</td><td>–</td><td>1</td><td>0</td><td>0</td><td>1</td><td>1</td><td>0</td><td>0</td>" in text
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
    files = sorted(p for p in (path.parent / "figures").rglob("*") if p.suffix in (".png", ".jpg"))
    assert len(files) == len(embedded) and embedded.count("thumb") == 5
    stale = [path.parent / "figures" / "old.png", path.parent / "figures" / "thumbs" / "old.jpg"]
    for p in stale:
        p.write_bytes(b"x")
    write_report(cfg, ws)
    assert not any(p.exists() for p in stale)


def _grids(text):
    """{grid heading: [flat grey value of each thumbnail, in page order]} of the per-query section."""
    import base64
    from io import BytesIO

    from PIL import Image

    out = {}
    for head, body in re.findall(r'<h3>([^<]*)</h3><div class="thumbs">(.*?)</div>', text):
        pics = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', body)
        out[head.replace("&gt;", ">")] = [int(round(np.asarray(Image.open(BytesIO(base64.b64decode(p)))).mean()))
                                          for p in pics]
    return out


def test_report_puts_planted_kept_and_dropped_images_in_the_right_grid(tmp_path):
    """A raw crawl in miniature: query a (class a) with 14 kept and 14 dropped images, query
    "chess" naming no class. Each image is one flat grey, so the page's thumbnails say which
    image went where. The dropped images of query a are ranked by the teacher's probability of
    class a (from the score shards), planted opposite to their top-1 probability of class b."""
    from omnisource.teacher.score import write_scores

    cfg, ws = _workspace(tmp_path, web=False)
    cfg = load_config(None, [f"workspace={ws}", "web=[{name: raw, root: x}]"])
    (tmp_path / "raw").mkdir()
    grey = iter(range(8, 256, 7))
    rows, scores, value = [], [], {}

    def add(tag, query, status, p_a, pred, top1, **extra):
        v = value[tag] = next(grey)
        row = new_row("raw", "image", str(write_image(tmp_path / "raw" / f"{tag}.png", size=(24, 20), value=v)),
                      weak_labels=[query], status=status, teacher_pred=pred, teacher_prob=top1, **extra)
        rows.append(row)
        scores.append({"id": row["id"], "pred": pred, "prob": top1, "probs": [p_a, top1 if pred == 1 else 0.0, 0.0]})

    for i in range(14):  # kept: p(a) 0.99 ... 0.60
        add(f"k{i}", "a", "ok", 0.99 - 0.03 * i, 0, 0.99 - 0.03 * i, label=0)
    for i in range(14):  # dropped: p(a) 0.45 ... 0.06; top-1 b at 0.50 ... 0.89 (the reverse order)
        p = 0.45 - 0.03 * i
        if i < 2:
            add(f"d{i}", "a", "rejected", p, 0, p, drop_reason="low confidence")
        else:
            add(f"d{i}", "a", "rejected", p, 1, 0.5 + 0.03 * i, drop_reason="disagreement")
    for i, top1 in enumerate([0.3, 0.9, 0.6]):
        add(f"c{i}", "chess", "rejected", 0.0, 2, top1, drop_reason="no class")
    rows.append(new_row("raw", "image", str(tmp_path / "raw" / "gone.png"), weak_labels=["a"], status="corrupt"))
    write_manifest(Manifest(rows, CLASSES), ws / "manifests" / "aux_raw.parquet")
    (ws / "scores" / "raw").mkdir(parents=True)
    write_scores(scores, ws / "scores" / "raw" / "part-00000-test.parquet")

    path = write_report(cfg, ws)
    text = path.read_text()
    grids = _grids(text)
    v = value
    assert grids["raw · a → a: kept, highest confidence (p(a))"] == [v[f"k{i}"] for i in range(6)]
    assert grids["raw · a → a: kept, lowest confidence (p(a))"] == [v[f"k{i}"] for i in (13, 12, 11, 10, 9, 8)]
    assert grids["raw · a → a: dropped, highest confidence (p(a))"] == [v[f"d{i}"] for i in range(6)]
    assert grids["raw · a → a: dropped, lowest confidence (p(a))"] == [v[f"d{i}"] for i in (13, 12, 11, 10, 9, 8)]
    assert grids["raw · (queries that name no class): dropped, all 3 (teacher top-1)"] == \
        [v["c1"], v["c2"], v["c0"]]
    shown = [x for g in grids.values() for x in g]
    assert v["k6"] not in shown and v["d7"] not in shown  # bounded: 6 per grid
    assert "a 0.45 · low confidence" in text and "a 0.39 · top-1 b 0.56 · disagreement" in text
    assert "chess → c 0.90 · no class" in text
    # Per query: 29 samples of a (1 corrupt), 14 kept, 14 dropped (2 low confidence, 12 disagreement).
    assert "<td>a</td><td>a</td><td>29</td><td>1</td><td>14</td><td>14</td><td>0</td><td>2</td><td>12</td>" in text
    assert "<td>chess</td><td>–</td><td>3</td><td>0</td><td>0</td><td>3</td><td>3</td><td>0</td><td>0</td>" in text
    assert "<td>all queries</td><td>–</td><td>32</td><td>1</td><td>14</td><td>17</td><td>3</td><td>2</td><td>12</td>" in text
    # The thumbnails are JPEG files beside the page too, one per embedded one.
    assert len(list((path.parent / "figures" / "thumbs").glob("*.jpg"))) == len(shown) == 27
    _no_external_urls(text)
    # Under filter both the queries naming no class are dropped before scoring: no grid, a reason.
    for r in rows:
        if r["weak_labels"] == ["chess"]:
            r["teacher_prob"] = r["teacher_pred"] = None
    write_manifest(Manifest(rows, CLASSES), ws / "manifests" / "aux_raw.parquet")
    text = write_report(cfg, ws).read_text()
    assert "3 samples, none scored by the teacher: their queries name no class, dropped before scoring" \
        in _na(text) and not any("no class" in head for head in _grids(text))


def test_query_counts_are_bounded_for_sources_with_many_queries():
    rows = [new_row("w", "image", f"/x/{q}_{i}.jpg", weak_labels=[q], status=s, drop_reason=d)
            for q, n in (("a", 3), ("q1", 5), ("q2", 2), ("q3", 1))
            for i, (s, d) in enumerate([("ok", None), ("rejected", "no class"), ("duplicate", None)] * 2) if i < n]
    counts = query_counts(rows, {"a": 0}, CLASSES)
    assert [c["query"] for c in counts] == ["a", "q1", "q2", "q3"]  # naming a class first, then the largest
    assert counts[1] == {"query": "q1", "class": "", "samples": 5, "removed": 1, "kept": 2, "dropped": 2,
                         "no class": 2, "low confidence": 0, "disagreement": 0}
    table = bounded(counts, 2)
    assert [c["query"] for c in table] == ["a", "q1", "… 2 more queries", "all queries"]
    assert table[2]["samples"] == 3 and table[3]["samples"] == 11 and table[3]["kept"] == 5


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
    assert len(reasons) == 11 and "no manifests in the workspace yet" in reasons
    assert reasons[0] == "no baseline run: target_only has no metrics.json"  # the headline
    assert "no target manifest in the workspace (run `omnisource import`)" in reasons


def _headline(text):
    start = text.index('<section id="headline">')
    return text[start:text.index("</section>", start)]


def test_headline_pairs_clips_and_seeds_and_shows_the_no_filter_variant(tmp_path):
    cfg, ws = _workspace(tmp_path)
    labels = [i % 3 for i in range(20)]
    wrong = [(y + 1) % 3 for y in labels]
    base_right = {0: 12, 1: 13, 2: 11}  # clips 0..k-1 right, per seed
    base_c, omni_c, nof_c = [], [], []
    for seed, k in base_right.items():
        suffix = f"_seed{seed}" if seed else ""
        base = [labels[i] if i < k else wrong[i] for i in range(20)]
        # OmniSource: 3 more clips right than the same seed's baseline (+15 points), written in
        # another clip order, so pairing must go by id; no-filter: 2 fewer right (-10 points).
        omni = [labels[i] if i < k + 3 else wrong[i] for i in range(20)]
        nof = [labels[i] if i < k - 2 else wrong[i] for i in range(20)]
        _write_run(ws, "target_only" + suffix, seed, labels, base)
        order = list(range(20))[::-1]
        _write_run(ws, "omnisource" + suffix, seed, [labels[i] for i in order], [omni[i] for i in order],
                   [f"v{i}" for i in order])
        _write_run(ws / "variants" / "nofilter", "omnisource_nofilter" + suffix, seed, labels, nof)
        base_c.append([p == y for p, y in zip(base, labels)])
        omni_c.append([p == y for p, y in zip(omni, labels)])
        nof_c.append([p == y for p, y in zip(nof, labels)])
    # The variant re-trains the teacher (seed 0 only): it must not replace the workspace's.
    _write_run(ws / "variants" / "nofilter", "target_only", 0, labels, labels)
    variant = ws / "variants" / "nofilter"
    (variant / "config.yaml").write_text("omni: {filter: none, student_run: omnisource_nofilter}\n"
                                         "web: [{name: images, root: x}]\n")
    (variant / "selection").mkdir()
    (variant / "selection" / "images.json").write_text(json.dumps(
        {"scored": 5, "kept": 5, "filter": {"kept": 5, "total": 5, "relevant": 4, "precision": 0.6, "recall": 0.75}}))
    text = write_report(cfg, ws).read_text()
    assert text.index('<section id="headline">') < text.index('<section id="counts">')  # the first section
    head = _headline(text)
    want = paired_clip_bootstrap(np.array(omni_c, float), np.array(base_c, float), RESAMPLES)
    assert want["delta"] == pytest.approx(0.15) and want["lo"] > 0
    assert (f"Web data helped: +15.0 top-1 points (95 % interval {100 * want['lo']:+.1f} to "
            f"{100 * want['hi']:+.1f}) over target-only on 20 validation clips") in head
    assert "mean over 3 seeds" in head and "bootstrap resamples of the 20 validation clips and of the 3 seeds" in head
    # One row per arm: the baseline (3 seeds, 60 % on average), OmniSource, the no-filter variant.
    nof = paired_clip_bootstrap(np.array(nof_c, float), np.array(base_c, float), RESAMPLES)
    assert "<td>target_only (baseline)</td><td>3</td><td>60.0 ± 4.1</td>" in head
    assert (f"<td>omnisource</td><td>3</td><td>75.0 ± 4.1</td><td>+15.0</td>"
            f"<td>{100 * want['lo']:+.1f} to {100 * want['hi']:+.1f}</td><td>0, 1, 2</td>") in head
    assert (f"<td>omnisource_nofilter</td><td>3</td><td>50.0 ± 4.1</td><td>-10.0</td>"
            f"<td>{100 * nof['lo']:+.1f} to {100 * nof['hi']:+.1f}</td>") in head
    # What each source kept, and at what precision, for the filtered and the unfiltered student.
    assert "<td>omnisource</td><td>images</td><td>image</td><td>both, threshold 0.5</td><td>5</td>" \
           "<td>3 (60 %)</td><td>1.000</td><td>0.750</td>" in head
    assert "<td>omnisource_nofilter</td><td>images</td><td>image</td><td>none (query labels)</td><td>5</td>" \
           "<td>5 (100 %)</td><td>0.600</td>" in head
    # Settings: the training rows of the target manifest (one row is corrupt), backbone, filter, seeds.
    assert "1 to 2 labeled videos per class · backbone efficientnet_lite0 (imagenet" in head
    assert "teacher filter both, threshold 0.5" in head and "seeds 0, 1, 2." in head
    # The results table lists the variant's student runs too.
    assert "<td>nofilter/omnisource_nofilter</td>" in text and "<td>nofilter/target_only</td>" not in text


def test_headline_draws_the_clips_of_one_group_together(tmp_path):
    # 20 validation clips in 4 groups of 5 (classes a and b, groups 01 and 02 of each). The student
    # fixes every clip of group a/01 and changes nothing else: +25 points, all from one scene.
    cfg, ws = _workspace(tmp_path, web=False)
    labels = [i // 10 for i in range(20)]
    groups = [f"{i % 10 // 5 + 1:02d}" for i in range(20)]
    rows = [new_row("target", "video", f"/x/v{i}.mp4", id=f"v{i}", label=labels[i], group=groups[i], split="val")
            for i in range(20)]
    rows += [new_row("target", "video", f"/x/t{i}.mp4", label=i % 3, group="09", split="train") for i in range(3)]
    write_manifest(Manifest(rows, CLASSES), ws / "manifests" / "target.validated.parquet")
    base = [2 if i < 5 else labels[i] for i in range(20)]  # group a/01 wrong
    _write_run(ws, "target_only", 0, labels, base)
    _write_run(ws, "omnisource", 0, labels, labels)
    run_c, base_c = np.ones((1, 20)), np.array([[float(i >= 5) for i in range(20)]])
    by_clip = paired_clip_bootstrap(run_c, base_c, RESAMPLES)
    by_group = paired_clip_bootstrap(run_c, base_c, RESAMPLES, groups=[f"{y}/{g}" for y, g in zip(labels, groups)])
    # Clip by clip the gain would look certain; by group, one scene in four may be missing from a draw.
    assert by_clip["lo"] > 0 and by_group["lo"] == 0.0 and by_group["groups"] == 4
    head = _headline(write_report(cfg, ws).read_text())
    assert (f"No clear effect of web data: +25.0 top-1 points (95 % interval +0.0 to {100 * by_group['hi']:+.1f}) "
            "over target-only on 20 validation clips") in head
    assert "resamples of the 4 groups of the 20 validation clips (the clips of one group film one scene" in head
    assert "1 labeled videos per class" in head and "seeds 0." in head


def test_headline_says_no_clear_effect_or_why_it_cannot_compare(tmp_path):
    cfg, ws = _workspace(tmp_path)  # one seed; the student fixes clip 1 and breaks clip 5
    head = _headline(write_report(cfg, ws).read_text())
    assert "No clear effect of web data: +0.0 top-1 points (95 % interval -" in head
    assert "over target-only on 6 validation clips" in head
    assert verdict({"delta": -0.05, "lo": -0.08, "hi": -0.01, "clips": 40}, "target-only") == \
        "Web data hurt: -5.0 top-1 points (95 % interval -8.0 to -1.0) over target-only on 40 validation clips"
    # Runs evaluated before predictions were saved: the headline says so instead of guessing.
    (ws / "runs" / "omnisource" / "predictions.npz").unlink()
    assert _na(_headline(write_report(cfg, ws).read_text())) == [
        "no run can be compared clip by clip with target_only: omnisource: no per-clip predictions "
        "(predictions.npz)"]
    # Validated on other clips than the baseline: no pairing possible.
    _write_run(ws, "omnisource", 0, [0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 2, 1], ids=[f"w{i}" for i in range(6)])
    assert "seed 0: validated on other clips than the baseline" in _headline(write_report(cfg, ws).read_text())
    # A corrupt predictions file is a reason, not a traceback.
    (ws / "runs" / "omnisource" / "predictions.npz").write_bytes(b"garbage")
    assert "predictions.npz: not a predictions file" in _headline(write_report(cfg, ws).read_text())


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
