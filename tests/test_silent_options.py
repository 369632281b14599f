"""Options the code cannot honour are errors, and fallbacks are said and recorded (issue 15, defect 4)."""
from pathlib import Path

import pytest

from omnisource.config import ConfigError, load_config
from omnisource.data.manifest import Manifest, new_row
from omnisource.transform.stage import image_rows


@pytest.mark.parametrize("overrides, message", [
    (["omni.cross_mixup=true"], "omni.cross_mixup: needs train.mixup_alpha > 0"),
    (["omni.cross_mixup=true", "train.mixup_alpha=0"], "omni.cross_mixup: needs train.mixup_alpha > 0"),
    (["media.test_crops=2"], "media.test_crops: must be 1 (centre) or 3 (three crops)"),
    (["media.test_views=0"], "media.test_views: must be at least 1"),
])
def test_options_that_would_do_nothing_are_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides=overrides)
    assert load_config(overrides=["omni.cross_mixup=true", "train.mixup_alpha=0.2"]).omni.cross_mixup


@pytest.mark.parametrize("option", ["media.test_views=3", "media.test_crops=3"])
def test_test_views_in_feature_mode_are_an_error(tmp_path, option):
    from omnisource.train.build import build_model_and_loaders

    cfg = load_config(overrides=["mode=features", option])
    manifest = Manifest([new_row("target", "video", "/a.mp4", label=0, split="train")], ["a", "b"])
    with pytest.raises(ConfigError, match=r"media.test_\w+=3 applies to pixel-mode runs only"):
        build_model_and_loaders(cfg, tmp_path, manifest)


def test_per_class_warp_fallback_is_recorded():
    rows = [dict(new_row("web", "image", f"/w/{c}.jpg", label=i), id=f"{i:08x}") for i, c in enumerate("ab")]
    out = image_rows(rows, "perspective_class", ["a", "b"], Path("/ws/motion.npz"), 1.0, 0, fitted={"agnostic", "a"})
    by_class = {r["label"]: r for r in out}
    assert by_class[0]["motion_key"] == "a" and by_class[0]["motion_note"] == ""
    assert by_class[1]["motion_key"] == "agnostic"
    assert by_class[1]["motion_note"] == "class b has too few homographies for a fit of its own; class-agnostic fit"
