"""Range checks of a loaded config that its types alone cannot express (``config.load_config``
runs them; each failure is one ``ConfigError`` line naming the field)."""
from __future__ import annotations

from .config import Config, ConfigError, teacher_config


def validate(cfg: Config, teachers: bool = True) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        ("train.epochs", cfg.train.epochs >= 1, "must be at least 1"),
        ("train.batch_size", cfg.train.batch_size >= 1, "must be at least 1"),
        ("train.lr", cfg.train.lr > 0, "must be positive"),
        ("train.min_steps", cfg.train.min_steps >= 0, "must be 0 (off) or more"),
        ("train.mixup_alpha", cfg.train.mixup_alpha >= 0, "must be 0 (off) or positive"),
        ("train.label_smoothing", 0 <= cfg.train.label_smoothing < 1, "must be in [0, 1)"),
        ("train.num_workers", cfg.train.num_workers >= 0, "must be 0 or more"),
        ("features.workers", cfg.features.workers >= 0, "must be 0 (one per core) or more"),
        ("train.accumulate", cfg.train.accumulate >= 1, "must be at least 1"),
        ("train.keep_checkpoints", cfg.train.keep_checkpoints >= 0, "must be 0 (keep all) or more"),
        ("media.num_segments", cfg.media.num_segments >= 1, "must be at least 1"),
        ("media.input_size", cfg.media.input_size >= 8, "must be at least 8"),
        ("media.max_pixels", cfg.media.max_pixels >= 1, "must be positive"),
        ("media.min_size", cfg.media.min_size >= 0, "must be 0 or more"),
        ("features.frames", cfg.features.frames >= 1, "must be at least 1"),
        ("features.size", cfg.features.size >= 32, "must be at least 32"),
        ("features.head", cfg.features.head != "frames" or cfg.mode == "features",
         "frames (frame-level training of a head on cached features) needs mode=features; pixel-mode networks "
         "train on whole clips"),
        ("target.val_fraction", 0 <= cfg.target.val_fraction < 1, "must be in [0, 1)"),
        ("target.per_class", cfg.target.per_class >= 0, "must be 0 (all) or more"),
        ("omni.threshold", 0 <= cfg.omni.threshold <= 1, "must be in [0, 1]"),
        ("omni.min_keep", 0 <= cfg.omni.min_keep <= 1, "must be in [0, 1]"),
        ("omni.calibrate_value", 0 <= cfg.omni.calibrate_value <= 1, "must be in [0, 1]"),
        ("omni.calibrate", cfg.omni.calibrate == "none" or cfg.mode == "features",
         "per-class thresholds cross-fit teacher heads on cached features: they need mode=features (set it to none)"),
        ("omni.calibrate", cfg.omni.calibrate == "none" or cfg.omni.filter in ("confidence", "both"),
         f"the {cfg.omni.filter!r} filter uses no threshold to calibrate (use confidence or both, or set it to none)"),
        ("omni.calibrate_range", len(cfg.omni.calibrate_range) == 2
         and 0 <= cfg.omni.calibrate_range[0] <= cfg.omni.calibrate_range[-1] <= 1, "must be [low, high] in [0, 1]"),
        ("omni.calibrate_folds", cfg.omni.calibrate_folds >= 2, "must be at least 2"),
        ("omni.align", cfg.omni.align != "mean" or cfg.mode == "features",
         "mean alignment shifts cached features: it needs mode=features (use auto or none)"),
        ("omni.soft_targets", 0 <= cfg.omni.soft_targets <= 1, "must be in [0, 1]"),
        ("omni.soft_targets", cfg.omni.soft_targets == 0 or cfg.mode == "features",
         "soft targets need mode=features (pixel-mode clips train on their labels; set it to 0)"),
        ("omni.soft_temperature", cfg.omni.soft_temperature > 0, "must be positive"),
        ("omni.frame_threshold", 0 <= cfg.omni.frame_threshold <= 1, "must be in [0, 1]"),
        ("omni.untrimmed", cfg.omni.untrimmed != "frames" or cfg.mode == "features",
         "frames filters each cached 1 fps frame by itself: it needs mode=features (use snippet or clips)"),
        ("omni.snippet_pos", cfg.omni.snippet_pos >= 1, "must be at least 1"),
        ("omni.snippet_neg", cfg.omni.snippet_neg >= 0, "must be 0 or more"),
        ("omni.resample_clip", cfg.omni.resample != "clip" or cfg.omni.resample_clip > 0,
         "must be positive when omni.resample=clip"),
        # Options that would otherwise do nothing without a word (issue 15, defect 4).
        ("omni.cross_mixup", not cfg.omni.cross_mixup or cfg.train.mixup_alpha > 0,
         "needs train.mixup_alpha > 0 (at 0 mixup is off, so nothing would be mixed)"),
        ("media.test_views", cfg.media.test_views >= 1, "must be at least 1"),
        ("media.test_crops", cfg.media.test_crops in (1, 3), "must be 1 (centre) or 3 (three crops)"),
        ("da.beta", cfg.da.beta >= 0, "must be 0 or more"),
        ("da.tau", cfg.da.tau > 0, "must be positive"),
        ("da.top_ratio", 0 < cfg.da.top_ratio <= 1, "must be in (0, 1]"),
        ("da.temporal_kernel", cfg.da.temporal_kernel >= 1 and cfg.da.temporal_kernel % 2 == 1, "must be odd and positive"),
        ("da.adapter_dim", cfg.da.adapter_dim >= 1, "must be at least 1"),
        ("da.disc_hidden", cfg.da.disc_hidden >= 1, "must be at least 1"),
        ("da.dropout", 0 <= cfg.da.dropout < 1, "must be in [0, 1)"),
        ("da.video_epochs", cfg.da.video_epochs >= 0, "must be 0 (= train.epochs) or more"),
        ("da.video_lr_scale", cfg.da.video_lr_scale > 0, "must be positive"),
        ("da.chunk_seconds", cfg.da.chunk_seconds > 0, "must be positive"),
        ("omni.clip_seconds", cfg.omni.clip_seconds > 0, "must be positive"),
        ("weak.k", cfg.weak.k >= 1, "must be at least 1"),
        ("weak.budget_samples", cfg.weak.budget_samples >= 0, "must be 0 (all) or more"),
        ("weak.budget_videos", cfg.weak.budget_videos >= 0, "must be 0 (all) or more"),
        ("weak.budget_minutes", cfg.weak.budget_minutes >= 0, "must be 0 (all) or more"),
        ("weak.clips_per_video", cfg.weak.clips_per_video >= 0, "must be 0 (all) or more"),
        ("weak.body_lr_scale", cfg.weak.body_lr_scale >= 0, "must be 0 or more"),
    ]
    names = [w.name for w in cfg.web]
    for i, w in enumerate(cfg.web):
        checks.append((f"web[{i}].name", bool(w.name) and names.count(w.name) == 1,
                       "must be set and unique across web sources"))
        checks.append((f"web[{i}].name", all(c.isalnum() or c in "-_" for c in w.name),
                       "may use letters, digits, '-' and '_' only"))
        checks.append((f"web[{i}].batch_ratio", w.batch_ratio > 0, "must be positive"))
        checks.append((f"web[{i}].weight", w.weight is None or w.weight >= 0, "must be 0 or more"))
    checks.append(("omni.score_views", cfg.omni.score_views >= 1, "must be at least 1"))
    tnames = [t.name for t in cfg.omni.teachers]
    for i, t in enumerate(cfg.omni.teachers if teachers else []):
        checks.append((f"omni.teachers[{i}].name", bool(t.name) and tnames.count(t.name) == 1 and
                       all(c.isalnum() or c in "-_" for c in t.name),
                       "must be set, unique, and use letters, digits, '-' and '_' only"))
        checks.append((f"omni.teachers[{i}].name", t.name != cfg.train.run_name,
                       f"{t.name!r} is train.run_name, the target-only run; pick another name"))
    for name, ok, msg in checks:
        if not ok:
            raise ConfigError(f"{name}: {msg}")
    if teachers:
        for t in cfg.omni.teachers:
            teacher_config(cfg, t.name)
