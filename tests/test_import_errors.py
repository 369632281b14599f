"""Import paths that used to lose rows or mislead: one-class and empty datasets, folders named like
files, files without extensions, and the two web validators that disagreed."""
from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from media_factory import write_gif, write_image, write_video
from omnisource.cli import app
from omnisource.data.manifest import Manifest, new_row, read_manifest, write_manifest

runner = CliRunner()


def _videos(root, classes, n=2):
    for cls in classes:
        for g in range(1, n + 1):
            write_video(root / cls / f"v_{cls}_g{g:02d}_c01.mp4", 8, size=(48, 40))


def _one_line_error(result, text):
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) <= 2 and text in result.output and "Traceback" not in result.output, result.output


def test_one_class_dataset_fails_at_import(tmp_path):
    _videos(tmp_path / "videos", ["Solo"])
    res = runner.invoke(app, ["import", "-w", str(tmp_path / "ws"), f"target.root={tmp_path / 'videos'}"])
    _one_line_error(res, "only one class (Solo) has usable rows; a classifier needs at least two")


def test_empty_class_folders_fail_at_import(tmp_path):
    _videos(tmp_path / "videos", ["A", "B"])
    (tmp_path / "videos" / "C").mkdir()
    (tmp_path / "videos" / "D").mkdir()
    res = runner.invoke(app, ["run", "-w", str(tmp_path / "ws"), f"target.root={tmp_path / 'videos'}"])
    _one_line_error(res, "class folder(s) without files: C, D")
    assert "omnisource features" not in res.output


def test_train_without_two_usable_classes_says_why(tmp_path):
    _videos(tmp_path / "videos", ["A", "B"])
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["import", "-w", str(ws), f"target.root={tmp_path / 'videos'}",
                               "target.val_groups=['02']"]).exit_code == 0
    for f in (tmp_path / "videos" / "B").iterdir():  # every B video breaks before validation
        f.write_bytes(b"<html>gone</html>")
    assert runner.invoke(app, ["validate", "-w", str(ws)]).exit_code == 0
    res = runner.invoke(app, ["train", "-w", str(ws)])
    _one_line_error(res, "train: only one class (A) has usable train rows")


def test_web_folders_keep_a_row_for_everything_and_type_by_content(tmp_path):
    from omnisource.config import load_config
    from omnisource.web import import_web
    from omnisource.workspace import Workspace

    root = tmp_path / "web"
    q = root / "surfing"
    q.mkdir(parents=True)
    write_image(q / "ok.jpg", size=(48, 40))
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(q / "download_0001", "JPEG")  # no extension
    (q / "x.mp4").mkdir()  # a folder named like a file
    (root / "empty query").mkdir()
    write_image(root / "stray.jpg", size=(48, 40))  # not inside a query folder
    ws = tmp_path / "ws"
    cfg = load_config(None, [f"web=[{{name: img, kind: image, root: '{root}'}}]"])
    import_web(cfg, ws)
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_manifest(Workspace(ws).web("img")).rows}
    assert set(rows) == {"ok.jpg", "download_0001", "x.mp4", "empty query", "stray.jpg"}
    assert rows["download_0001"]["status"] == "ok" and rows["ok.jpg"]["status"] == "ok"
    assert (rows["x.mp4"]["status"], rows["x.mp4"]["reason"]) == ("corrupt", "empty folder, not a file")
    assert rows["empty query"]["status"] == "corrupt" and rows["empty query"]["weak_labels"] == ["empty query"]
    assert rows["stray.jpg"]["reason"] == "not inside a query folder (no weak label)"


def test_import_web_and_clean_validate_agree(tmp_path):
    """An animated GIF, a 20 px image and a 40 px image: import-web and clean validate used to
    disagree on the first two (accepted vs rejected, corrupt vs rejected, 8 px vs 32 px floors)."""
    from omnisource.config import load_config
    from omnisource.web import import_web
    from omnisource.workspace import Workspace

    q = tmp_path / "web" / "q"
    q.mkdir(parents=True)
    files = [write_gif(q / "anim.gif", (10, 200, 90), (40, 40)), write_image(q / "small.png", size=(20, 20)),
             write_image(q / "fine.png", size=(40, 40))]
    ws = tmp_path / "ws"
    import_web(load_config(None, [f"web=[{{name: a, kind: image, root: '{tmp_path / 'web'}'}}]"]), ws)
    via_import = {r["path"].rsplit("/", 1)[-1]: (r["status"], r["reason"]) for r in read_manifest(Workspace(ws).web("a")).rows}
    ws2 = tmp_path / "ws2"
    write_manifest(Manifest([new_row("b", "image", str(f)) for f in files], []), ws2 / "manifests" / "web_b.parquet")
    assert runner.invoke(app, ["clean", "validate", "-w", str(ws2)]).exit_code == 0
    via_clean = {r["path"].rsplit("/", 1)[-1]: (r["status"], r["reason"])
                 for r in read_manifest(ws2 / "manifests" / "web_b.parquet").rows}
    assert via_import == via_clean == {"anim.gif": ("rejected", "animated image (GIF, 3 frames)"),
                                       "small.png": ("rejected", "too small: 20x20 is below min_size=32"),
                                       "fine.png": ("ok", "")}
    # one place for the rules: the config (or its override) changes every path alike
    res = runner.invoke(app, ["clean", "validate", "-w", str(ws2), "media.min_size=16", "media.animated=first-frame"])
    assert res.exit_code == 0, res.output
    assert {r["status"] for r in read_manifest(ws2 / "manifests" / "web_b.parquet").rows} == {"ok"}
