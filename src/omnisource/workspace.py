"""The workspace folder: the one owner of every path an experiment reads or writes (docs/concepts.md).

Stages and modules ask a :class:`Workspace` for paths instead of joining strings themselves::

    config.yaml                      the workspace's base config (``config_file``)
    manifests/target.parquet         imported target set (``target("imported")``)
    manifests/target.validated.parquet, target.prepared.parquet   (``target("validated" | "prepared")``)
    manifests/web_<src>.parquet      imported + validated web source (``web(src)``)
    manifests/aux_<src>.parquet      teacher-filtered, pseudo-labelled (``web(src, "aux")``)
    manifests/train_<src>.parquet    transformed to the target format (``web(src, "train")``)
    manifests/queries.parquet, weak.parquet, weak.labelmap.json
    features/<backbone>-<size>px-<T>f|1fps/   feature caches (``feature_cache(cfg)``; ``features.cache_root``)
    scores/<src>/                    teacher scores (``scores(src)``; ``teachers.json``: ``scores_info(src)``)
    selection/<src>.json             filter statistics (``selection(src)``)
    motion.npz                       homography fit (``motion``)
    runs/<name>/                     training runs (``run(name)``; ``predictions(name)``: per-clip scores)
    report/  logs/  sweeps/  media/  web/<src>/   (``report_dir``, ``logs_dir``, ...)
    variants/<name>/                 workspaces of variant settings (``variants_dir``)
    .stages/<stage>.json             stage stamps (``stamp_file(stage)``)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TARGET_STAGES = {"imported": "target.parquet", "validated": "target.validated.parquet",
                 "prepared": "target.prepared.parquet"}
WEB_STAGES = ("web", "aux", "train")


class WorkspaceError(ValueError):
    """The workspace folder itself is unusable (a file, read-only, ...); one line."""


def cache_dir_for(root: str | Path, backbone: str, size: int, frames: int, per_second: bool = False) -> Path:
    """The feature cache folder of one (backbone, frame size, frames per row) under ``root``."""
    return Path(root) / f"{backbone}-{size}px-{'1fps' if per_second else f'{frames}f'}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The last complete ``runs/<name>/checkpoints/epoch_NNN`` folder (weights and training state)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("epoch_*") if (p / "state.pt").is_file() and (p / "model.safetensors").is_file())
    return done[-1] if done else None


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


class Workspace:
    """Paths of one workspace folder. ``os.fspath(ws)`` is its root, so a Workspace goes wherever
    a path does; ``Workspace.of(x)`` accepts either."""

    def __init__(self, root: str | Path):
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))

    @classmethod
    def of(cls, workspace: "Workspace | str | Path") -> "Workspace":
        return workspace if isinstance(workspace, Workspace) else cls(workspace)

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Workspace) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def path(self, *parts: str) -> Path:
        """Any other path inside the workspace."""
        return self.root.joinpath(*parts)

    # ------------------------------------------------------------------ manifests
    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    def target(self, stage: str = "imported") -> Path:
        """The target manifest after ``stage``: imported, validated or prepared."""
        if stage not in TARGET_STAGES:
            raise ValueError(f"target stage {stage!r}: expected one of {', '.join(TARGET_STAGES)}")
        return self.manifests_dir / TARGET_STAGES[stage]

    def target_manifest(self) -> Path:
        """The most processed target manifest there is (prepared > validated > imported)."""
        from .data.manifest import ManifestError

        for stage in ("prepared", "validated", "imported"):
            if self.target(stage).exists():
                return self.target(stage)
        raise ManifestError(f"{self.root}: no target manifest yet; run `omnisource import` first")

    def web(self, name: str, stage: str = "web") -> Path:
        """A web source's manifest: ``web`` (imported), ``aux`` (filtered) or ``train`` (transformed)."""
        if stage not in WEB_STAGES:
            raise ValueError(f"web stage {stage!r}: expected one of {', '.join(WEB_STAGES)}")
        return self.manifests_dir / f"{stage}_{name}.parquet"

    def web_sources(self) -> list[str]:
        """Names of the web sources that have an imported manifest here."""
        return sorted(p.stem[len("web_"):] for p in self.manifests_dir.glob("web_*.parquet"))

    @property
    def queries(self) -> Path:
        return self.manifests_dir / "queries.parquet"

    @property
    def weak_manifest(self) -> Path:
        return self.manifests_dir / "weak.parquet"

    @property
    def weak_label_map(self) -> Path:
        return self.manifests_dir / "weak.labelmap.json"

    # ------------------------------------------------------------------ media made here
    @property
    def media_dir(self) -> Path:
        """Target media re-encoded or frame-extracted by ``omnisource prepare``."""
        return self.root / "media"

    def web_files(self, name: str) -> Path:
        """Files of a downloaded web source (and their normalised copies under ``rgb/``)."""
        return self.root / "web" / name

    def web_journal(self, name: str) -> Path:
        """The download journal of a web source (one JSON line per finished URL)."""
        return self.root / "web" / f"{name}.journal.jsonl"

    def web_lock(self, name: str) -> Path:
        return self.root / "web" / f"{name}.lock"

    def tmp(self, name: str) -> Path:
        """Scratch space of one job, e.g. partial downloads."""
        return self.root / "tmp" / name

    # ------------------------------------------------------------------ features, scores, selection
    def features_root(self, cfg) -> Path:
        """``features.cache_root`` when set (shared between workspaces), else ``features/``."""
        root = getattr(cfg.features, "cache_root", "")
        return Path(root) if root else self.root / "features"

    def feature_cache(self, cfg, per_second: bool = False, size: int | None = None,
                      frames: int | None = None) -> Path:
        """The cache of ``cfg.features`` (T segment frames per row, or 1 fps for untrimmed videos)."""
        f = cfg.features
        return cache_dir_for(self.features_root(cfg), f.backbone, size or f.size, frames or f.frames, per_second)

    def scores(self, name: str) -> Path:
        return self.root / "scores" / name

    def scores_info(self, name: str) -> Path:
        """Which teachers scored a source, with which settings (``teachers.json`` beside the shards)."""
        return self.scores(name) / "teachers.json"

    def selection(self, name: str) -> Path:
        return self.root / "selection" / f"{name}.json"

    @property
    def motion(self) -> Path:
        return self.root / "motion.npz"

    # ------------------------------------------------------------------ runs and outputs
    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> Path:
        return self.runs_dir / name

    def predictions(self, name: str) -> Path:
        """Per-clip validation scores of a run (``omnisource evaluate``), beside its metrics.json."""
        return self.run(name) / "predictions.npz"

    def run_names(self) -> list[str]:
        """Run folders, sorted (hidden ones, e.g. runs moved aside, left out)."""
        d = self.runs_dir
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []

    @property
    def variants_dir(self) -> Path:
        """Workspaces of variant settings on the same target split (``variants/<name>/``, e.g. the
        demo's no-filter arm); the report compares their runs with this one's."""
        return self.root / "variants"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def sweeps_dir(self) -> Path:
        return self.root / "sweeps"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "omnisource.log"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def stamps_dir(self) -> Path:
        return self.root / ".stages"

    def stamp_file(self, stage: str) -> Path:
        return self.stamps_dir / f"{stage}.json"

    def read_stamp(self, stage: str) -> dict | None:
        """The stamp a stage left (see omnisource.stamps), or None."""
        try:
            return json.loads(self.stamp_file(stage).read_text())
        except (OSError, ValueError):
            return None

    def write_stamp(self, stage: str, inputs: dict[str, str], state: str, seconds: float | None = None) -> Path:
        """``seconds``: the wall time of the finished stage (progress and benchmarks read it)."""
        from .data.manifest import atomic_write_text

        stamp = {"state": state, "inputs": inputs} | ({} if seconds is None else {"seconds": round(seconds, 3)})
        return atomic_write_text(self.stamp_file(stage), json.dumps(stamp, indent=1))

    def exists(self) -> bool:
        return self.root.is_dir()

    def create(self) -> "Workspace":
        """Make the folder (and its parents) and check it can be written: one-line errors otherwise."""
        if self.root.exists() and not self.root.is_dir():
            raise WorkspaceError(f"{self.root} is a file, not a workspace folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WorkspaceError(f"cannot create the workspace {self.root}: {err.strerror or err}") from None
        if not writable(self.root):
            raise WorkspaceError(f"the workspace {self.root} is not writable (permission denied)")
        return self

