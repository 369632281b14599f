"""`omnisource demo mode=pixels` end to end on a shrunken dataset and tiny networks."""
import json

from typer.testing import CliRunner

from omnisource.cli import app

runner = CliRunner()


def test_pixel_demo_trains_both_teachers_and_every_source_keeps_samples(tmp_path, monkeypatch):
    import omnisource.demo.pixels as demo

    monkeypatch.setattr(demo, "DATA", dict(groups=3, clips_per_group=2, web_per_class=3, untrimmed_per_class=1,
                                           size=48, frames=12))
    # The demo's wiring with tiny networks from scratch (its EfficientNet-Lite0 has a fixed width):
    # a 3D target-only run / student and a 2D teacher for the images.
    tiny = ["model.name=slowonly_r18", "model.width=0.125", "model.pretrained=",
            "omni.teachers=[{name: tsn2d, overrides: {model.name: tsn_resnet18, model.width: 0.125, "
            "model.pretrained: '', media.sampler: tsn, media.num_segments: 2}}]",
            "target.val_groups=['01']", "media.input_size=32", "media.resize_short=36",
            "media.num_segments=4", "train.epochs=1", "train.eval_every=1", "train.num_workers=0",
            "omni.filter=none", "omni.frame_threshold=0.0", "omni.image_to_clip=translation", "omni.clip_seconds=1"]
    result = runner.invoke(app, ["demo", "-w", str(tmp_path), "mode=pixels", *tiny])
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "pixels" / "demo_results.json").read_text())
    assert set(out["runs"]) == {"target_only", "tsn2d", "omnisource"}
    assert out["sources"]["images"]["teachers"] == ["tsn2d"]
    assert out["sources"]["untrimmed"]["teachers"] == ["target_only"]
    assert all(s["training_samples"] > 0 for s in out["sources"].values())
    info = json.loads((tmp_path / "pixels" / "scores" / "untrimmed" / "teachers.json").read_text())
    assert info["teachers"][0]["kind"] == "3d" and info["teachers"][0]["model"] == "slowonly_r18"
    assert (tmp_path / "pixels" / "report" / "index.html").exists()
    assert "web sources" in result.output and "pixel mode" in result.output
