"""Typed experiment configuration: dataclasses loaded from YAML, overridable with ``a.b=value``.

Every error names the offending field and what it accepts, in one line, so a typo in a
config or on the command line fails before any work starts.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad config file or override; the message is one line naming the field."""


@dataclass
class TargetConfig:
    # Where the labeled target videos come from (see data.importers for the formats).
    root: str = ""
    format: Literal["folders", "csv", "mmaction", "mmaction_frames", "kinetics", "manifest"] = "folders"
    annotations: str = ""  # CSV / list file for the non-folder formats
    val_annotations: str = ""  # optional separate validation list; otherwise split by group
    group_regex: str = r"_g(\d+)_"  # UCF101-style group id inside file names
    val_groups: list[str] = field(default_factory=lambda: ["08", "09", "10", "11"])
    train_groups: list[str] = field(default_factory=list)  # empty = every non-validation group
    val_fraction: float = 0.2  # used when file names carry no group
    per_class: int = 0  # keep k labeled training videos per class (0 = all)
    seed: int = 0


@dataclass
class MediaConfig:
    num_segments: int = 8  # TSN segments, or frames of a dense clip
    frame_interval: int = 1  # stride between frames of a dense clip
    sampler: Literal["tsn", "dense"] = "tsn"
    input_size: int = 112
    resize_short: int = 128
    test_views: int = 1
    test_crops: int = 1
    # The rules of the one validator (clean.validate), on every path that gives files a verdict:
    max_pixels: int = 4096 * 4096  # decompression-bomb guard for images and video frames
    min_size: int = 32  # smallest accepted width and height (icons, tracking pixels, thumbnails)
    animated: Literal["reject", "first-frame"] = "reject"  # animated images: refuse, or keep the first frame


@dataclass
class ModelConfig:
    name: str = "tsn_efficientnet_lite0"
    pretrained: str = "imagenet"  # "", "imagenet" or a path to a checkpoint
    dropout: float = 0.5
    width: float = 1.0  # channel multiplier (small widths for CPU tests)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: list[int] = field(default_factory=list)
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # 0 disables intra-dataset mixup
    clip_grad: float = 0.0  # 0 disables gradient clipping
    amp: bool = False  # autocast; fp16 trains with a GradScaler, bf16 without (omnisource.train.precision)
    amp_dtype: Literal["auto", "float16", "bfloat16"] = "auto"  # auto: fp16 on CUDA, bf16 on CPU
    channels_last: bool = False  # channels_last (2D nets) / channels_last_3d (3D nets) weights and inputs
    compile: bool = False  # torch.compile the training forward pass
    compile_backend: str = "inductor"
    accumulate: int = 1  # gradient accumulation: one optimizer step per `accumulate` iterations
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    eval_every: int = 1
    run_name: str = "target_only"  # folder under <workspace>/runs/
    method: Literal["supervised", "da"] = "supervised"  # da: Kae & Song domain adaptation (the `da` section)


@dataclass
class FeatureConfig:
    backbone: str = "efficientnet_lite0"
    pretrained: str = "imagenet"
    size: int = 128  # short side the frames are resized and centre-cropped to
    frames: int = 8  # frames embedded per video (evenly spaced segment centres)
    batch_size: int = 64
    shard_size: int = 256  # rows per cache shard
    workers: int = 1  # decoding processes feeding the backbone
    cache_root: str = ""  # default <workspace>/features; set to share one cache between workspaces
    head: Literal["tsn", "linear", "temporal"] = "tsn"


@dataclass
class WebSourceConfig:
    """One web source: a folder of query sub-folders (the folder name is the weak label)."""
    name: str = ""
    root: str = ""
    kind: Literal["image", "trimmed", "untrimmed"] = "image"
    format: Literal["folders", "manifest"] = "folders"  # "manifest": root is a Parquet web manifest
    weight: float = 1.0  # loss weight of this source's batch
    batch_ratio: float = 0.5  # |B_A| = batch_ratio * |B_T|
    query_map: dict[str, str] = field(default_factory=dict)  # query -> target class name
    teachers: list[str] = field(default_factory=list)  # teacher runs scoring this source (empty = omni.teacher_runs)


@dataclass
class TeacherConfig:
    """A teacher that ``omnisource run`` trains on the target set as its own run (``runs/<name>``):
    the experiment's config with ``overrides`` (dotted keys of the model, media, train and
    features sections) applied, e.g. a TSN for web images and a SlowOnly for web videos
    (OmniSource §3.2: deflating a 3D teacher for images hurts; 3D teachers are better for videos)."""
    name: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class OmniConfig:
    """OmniSource (Duan et al. 2020): teacher filtering, format transforms, joint training."""
    teacher_runs: list[str] = field(default_factory=lambda: ["target_only"])  # several = ensemble
    teachers: list[TeacherConfig] = field(default_factory=list)  # extra teacher runs trained by `run`
    score_views: int = 3  # pixel mode: temporal views per clip a teacher averages when scoring
    student_run: str = "omnisource"
    # "both" (teacher agrees with the query and is confident) is the default: in a small label
    # space a softmax is confident on off-topic images, so confidence alone lets them through.
    filter: Literal["confidence", "agreement", "both", "none"] = "both"
    threshold: float = 0.5
    image_to_clip: Literal["still", "translation", "translation_random", "perspective",
                           "perspective_class"] = "still"
    warp_scale: float = 1.0  # scales the fitted homography covariance
    untrimmed: Literal["snippet", "clips"] = "snippet"
    frame_threshold: float = 0.5  # a frame of an untrimmed video is positive at this probability
    snippet_pos: int = 1
    snippet_neg: int = 2
    snippets_per_video: int = 4
    clip_seconds: float = 10.0
    resample: Literal["none", "clip", "power"] = "none"
    resample_clip: int = 0
    resample_power: float = 0.2
    cross_mixup: bool = False  # mix target and auxiliary samples (needs train.mixup_alpha > 0)
    seed: int = 0


@dataclass
class DAConfig:
    """Image-to-video domain adaptation (Kae & Song 2020), run by `omnisource train` with train.method=da:
    web images + web video frames (weak labels) + unlabeled target frames; see omnisource.train.transfer."""
    stages: Literal["image", "video", "both"] = "both"  # stage 1 (2D triplet), stage 2 ((2+1)D), or both
    attention: bool = True  # weight web samples by bilinear attention to the target batch
    adversarial: bool = True  # domain discriminators through gradient reversal
    discriminators: list[Literal["target_image", "target_frame", "image_frame"]] = field(
        default_factory=lambda: ["target_image", "target_frame", "image_frame"])
    multi_layer: bool = True  # discriminators see pooled features of every encoder stage
    beta: float = 0.5  # gradient reversal weight
    beta_schedule: Literal["constant", "dann"] = "constant"
    dann_gamma: float = 10.0
    top_ratio: float = 0.9  # T = top_ratio * target batch size
    tau: float = 1.0  # attention softmax temperature
    learn_w: bool = False  # train the bilinear W (through the weighted loss alone it collapses α; see models.domain)
    disc_hidden: int = 256
    adapter_dim: int = 256  # feature mode: width of the trainable encoder on frozen features
    temporal_kernel: int = 3  # stage 2: k_t of the zero-initialised temporal convs
    chunk_seconds: float = 10.0  # untrimmed web videos are cut into chunks of this length
    video_epochs: int = 0  # stage 2 epochs (0 = train.epochs)
    video_lr_scale: float = 1.0  # stage 2 learning rate = train.lr * video_lr_scale
    image_run: str = "da_image"  # run folders under <workspace>/runs/
    video_run: str = "da_video"


@dataclass
class WeakConfig:
    """Weak-label pre-training (Ghadiyaram et al. 2019) and Sub-Pseudo Labels (SPL): `omnisource weak-labels`,
    `pretrain`, `finetune`, `probe` (see omnisource.weak)."""
    labels: Literal["weak", "teacher", "agreement", "spl_full", "spl_m", "spl_d", "spl_b"] = "spl_b"
    sources: list[str] = field(default_factory=list)  # web sources used (empty = all)
    k: int = 2  # SPL-M / SPL-D keep K*N classes
    resample_power: float = 0.5  # class draw probability ∝ N_c^p in pre-training (0.5: square root)
    budget_samples: int = 0  # tail-preserving subsampling to this many samples (0 = all)
    budget_videos: int = 0  # untrimmed videos used (0 = all)
    budget_minutes: float = 0.0  # minutes of untrimmed video used (0 = all)
    prefer: Literal["short", "long", "random"] = "short"  # which videos a budget takes first
    clip_position: Literal["centre", "random"] = "centre"
    clips_per_video: int = 0  # clips of omni.clip_seconds per untrimmed video (0 = every whole clip)
    body_lr_scale: float = 0.1  # fine-tuning: lr of the body / lr of the new classifier
    pretrain_run: str = "pretrain"  # run folders under <workspace>/runs/
    finetune_run: str = "finetune"
    probe_run: str = "probe"
    seed: int = 0


@dataclass
class Config:
    workspace: str = "workspace"
    mode: Literal["features", "pixels"] = "features"
    target: TargetConfig = field(default_factory=TargetConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    web: list[WebSourceConfig] = field(default_factory=list)
    omni: OmniConfig = field(default_factory=OmniConfig)
    da: DAConfig = field(default_factory=DAConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; expected {_type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        return {_coerce(k, key_tp, f"{where}.{k}"): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=5`` -> ("train.epochs", 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"{text}: overrides look like section.field=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{text}: missing field name before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or defaults when ``path`` is None) and apply ``a.b=value`` overrides."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        data = loaded or {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


TEACHER_SECTIONS = ("model", "media", "train", "features")
# Feature-mode teachers read the experiment's feature cache, so they cannot change what it holds.
CACHE_FIELDS = ("features.backbone", "features.pretrained", "features.size", "features.frames", "features.cache_root")


def source_teachers(cfg: Config, source: WebSourceConfig) -> list[str]:
    """The teacher runs scoring a web source: its own ``teachers`` or ``omni.teacher_runs``."""
    return list(source.teachers or cfg.omni.teacher_runs)


def teacher_config(cfg: Config, name: str) -> Config:
    """The config of the ``omni.teachers`` entry ``name``: ``cfg`` with its overrides applied and
    ``train.run_name = name``."""
    specs = [(i, t) for i, t in enumerate(cfg.omni.teachers) if t.name == name]
    if not specs:
        raise ConfigError(f"{name}: not an omni.teachers entry ({', '.join(t.name for t in cfg.omni.teachers) or 'none'})")
    i, spec = specs[0]
    where = f"omni.teachers[{i}].overrides"
    data = to_dict(cfg)
    for key, value in spec.overrides.items():
        if str(key).split(".")[0] not in TEACHER_SECTIONS:
            raise ConfigError(f"{where}.{key}: a teacher may set {', '.join(TEACHER_SECTIONS)} fields only")
        if cfg.mode == "features" and key in CACHE_FIELDS:
            raise ConfigError(f"{where}.{key}: feature-mode teachers share the experiment's feature cache")
        _set_dotted(data, str(key), value)
    data["train"]["run_name"] = name
    try:
        out = _build(Config, data)
        validate(out, teachers=False)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return out


def validate(cfg: Config, teachers: bool = True) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        ("train.epochs", cfg.train.epochs >= 1, "must be at least 1"),
        ("train.batch_size", cfg.train.batch_size >= 1, "must be at least 1"),
        ("train.lr", cfg.train.lr > 0, "must be positive"),
        ("train.mixup_alpha", cfg.train.mixup_alpha >= 0, "must be 0 (off) or positive"),
        ("train.label_smoothing", 0 <= cfg.train.label_smoothing < 1, "must be in [0, 1)"),
        ("train.num_workers", cfg.train.num_workers >= 0, "must be 0 or more"),
        ("train.accumulate", cfg.train.accumulate >= 1, "must be at least 1"),
        ("media.num_segments", cfg.media.num_segments >= 1, "must be at least 1"),
        ("media.input_size", cfg.media.input_size >= 8, "must be at least 8"),
        ("media.max_pixels", cfg.media.max_pixels >= 1, "must be positive"),
        ("media.min_size", cfg.media.min_size >= 0, "must be 0 or more"),
        ("features.frames", cfg.features.frames >= 1, "must be at least 1"),
        ("features.size", cfg.features.size >= 32, "must be at least 32"),
        ("target.val_fraction", 0 <= cfg.target.val_fraction < 1, "must be in [0, 1)"),
        ("target.per_class", cfg.target.per_class >= 0, "must be 0 (all) or more"),
        ("omni.threshold", 0 <= cfg.omni.threshold <= 1, "must be in [0, 1]"),
        ("omni.frame_threshold", 0 <= cfg.omni.frame_threshold <= 1, "must be in [0, 1]"),
        ("omni.snippet_pos", cfg.omni.snippet_pos >= 1, "must be at least 1"),
        ("omni.snippet_neg", cfg.omni.snippet_neg >= 0, "must be 0 or more"),
        ("omni.resample_clip", cfg.omni.resample != "clip" or cfg.omni.resample_clip > 0,
         "must be positive when omni.resample=clip"),
        ("da.beta", cfg.da.beta >= 0, "must be 0 or more"),
        ("da.tau", cfg.da.tau > 0, "must be positive"),
        ("da.top_ratio", 0 < cfg.da.top_ratio <= 1, "must be in (0, 1]"),
        ("da.temporal_kernel", cfg.da.temporal_kernel >= 1 and cfg.da.temporal_kernel % 2 == 1, "must be odd and positive"),
        ("da.adapter_dim", cfg.da.adapter_dim >= 1, "must be at least 1"),
        ("da.disc_hidden", cfg.da.disc_hidden >= 1, "must be at least 1"),
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


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: dict) -> Config:
    return _build(Config, data)
