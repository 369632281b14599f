"""`omnisource run` trains what train.method names (issue 15, defect 2)."""
import json

from typer.testing import CliRunner

from omnisource.cli import app
from media_factory import write_da_media


def _invoke(*args, code=0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == code, r.output
    return r.output


def test_methods_that_need_web_data_refuse_a_config_without_it(tmp_path):
    for method in ("da", "spl", "omnisource"):
        out = _invoke("run", "-w", tmp_path / "ws", f"target.root={tmp_path}", f"train.method={method}", code=2)
        assert f"train.method={method} needs web sources" in out and "Traceback" not in out


def test_run_trains_da_then_spl_reusing_the_target_only_run(tmp_path):
    """Also: `run` de-duplicates the web data against the target's validation videos before
    training on it (clean.dedup, on by default), and skips the dedup it has done."""
    import shutil

    from omnisource.data.manifest import read_manifest

    write_da_media(tmp_path)
    planted = tmp_path / "webvid" / "alpha" / "copy.mp4"  # a validation video (group 01) posted on the web
    shutil.copy(tmp_path / "videos" / "alpha" / "v_alpha_g01_c01.mp4", planted)
    ws = tmp_path / "ws"
    web = (f"web=[{{name: img, kind: image, root: '{tmp_path / 'web'}', query_map: {{beta pics: beta}}}}, "
           f"{{name: vid, kind: trimmed, root: '{tmp_path / 'webvid'}', query_map: {{beta pics: beta}}}}]")
    common = ["-w", ws, f"target.root={tmp_path / 'videos'}", "target.val_groups=['01']", web,
              "train.epochs=1", "train.batch_size=4", "train.device=cpu", "mode=features", "features.size=32",
              "features.frames=2", "features.backbone=resnet18", "features.pretrained=''", "da.adapter_dim=8",
              "da.disc_hidden=8", "media.min_size=16", "da.stages=image"]
    out = _invoke("run", *common, "train.method=da", "clean.dedup=false")
    runs = ws / "runs"
    assert json.loads((runs / "da_image" / "metrics.json").read_text())["num_samples"] == 2
    assert not (runs / "omnisource").exists() and "teacher" in out.splitlines()[-1]
    assert "dedup:" not in out  # skipped when asked
    assert {r["status"] for r in read_manifest(ws / "manifests" / "web_vid.parquet").rows} == {"ok"}
    out = _invoke("run", *common, "train.method=spl", "weak.labels=weak", "clean.dedup=true")  # base: false
    assert "train@target_only: up to date" in out, out
    assert "dedup: web_img.parquet: 0 exact duplicates" in out and "dedup: web_vid.parquet: " in out, out
    rows = {r["path"]: r for r in read_manifest(ws / "manifests" / "web_vid.parquet").rows}
    assert rows[str(planted)]["status"] == "duplicate" and rows[str(planted)]["dup_kind"] == "exact-eval"
    # (the test's web videos are frame-for-frame the same clip, so the dedup flags them all)
    assert all(r["status"] == "ok" for r in read_manifest(ws / "manifests" / "web_img.parquet").rows)
    assert (runs / "pretrain").is_dir() and json.loads((runs / "finetune" / "metrics.json").read_text())["top1"] >= 0
    assert not (runs / "omnisource").exists()
    weak = read_manifest(ws / "manifests" / "weak.parquet").rows
    assert weak and str(planted) not in {r["path"] for r in weak}
    out = _invoke("run", *common, "train.method=spl", "weak.labels=weak", "clean.dedup=true")  # base: false
    assert "dedup: up to date" in out and "weak-labels: up to date" in out, out
