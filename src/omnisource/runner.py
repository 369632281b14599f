"""``omnisource run``: chain the stages, skipping those whose outputs are complete.

A stage counts as complete when its output exists and a stamp records the config sections it
depends on; a changed section re-runs the stage and everything after it. Every stage writes
atomically or resumes (feature cache, checkpoints), so a killed run started again ends with
the same outputs as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import pipeline
from .config import Config, to_dict
from .data.manifest import atomic_write_text
from .train.checkpoint import latest_checkpoint


def _digest(cfg: Config, sections: tuple[str, ...]) -> str:
    data = {s: to_dict(getattr(cfg, s)) if hasattr(getattr(cfg, s), "__dataclass_fields__") else getattr(cfg, s)
            for s in sections}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stamps:
    def __init__(self, workspace: Path):
        self.dir = Path(workspace) / ".stages"

    def fresh(self, name: str, digest: str, output: Path) -> bool:
        stamp = self.dir / f"{name}.json"
        return output.exists() and stamp.exists() and json.loads(stamp.read_text()).get("digest") == digest

    def mark(self, name: str, digest: str, output: Path) -> None:
        atomic_write_text(self.dir / f"{name}.json", json.dumps({"digest": digest, "output": str(output)}))


def _stage(stamps: Stamps, name: str, digest: str, output: Path, fn) -> bool:
    """Run ``fn`` unless fresh; returns True when it ran (so later stages must re-run too)."""
    if stamps.fresh(name, digest, output):
        pipeline.console.print(f"[dim]{name}: up to date ({output})[/]")
        return False
    fn()
    stamps.mark(name, digest, output)
    return True


def run_target_only(cfg: Config, workspace: Path) -> dict:
    ws = Path(workspace)
    stamps = Stamps(ws)
    chain = ""

    def dig(*sections):
        nonlocal chain
        chain = hashlib.sha1((chain + _digest(cfg, sections)).encode()).hexdigest()[:16]
        return chain

    _stage(stamps, "import", dig("target"), pipeline.ws_path(ws, pipeline.TARGET),
           lambda: pipeline.import_target(cfg, ws))
    _stage(stamps, "validate", dig("media"), pipeline.ws_path(ws, pipeline.VALIDATED),
           lambda: pipeline.validate_target(cfg, ws))
    if cfg.mode == "features":
        # The cache itself is resumable and keyed by id: extraction only fills what is missing.
        _stage(stamps, "features", dig("features"), pipeline.feature_cache(cfg, ws) / ".complete",
               lambda: (pipeline.features_stage(cfg, ws), (pipeline.feature_cache(cfg, ws) / ".complete").touch()))
    train_digest = dig("mode", "model", "train")
    run = pipeline.run_dir(cfg, ws)
    done_marker = run / ".complete"
    if not stamps.fresh("train", train_digest, done_marker):
        # Resume only an interrupted run of this very config; otherwise start over.
        stamp = stamps.dir / "train.json"
        resume = stamp.exists() and json.loads(stamp.read_text()).get("digest") == train_digest
        if not resume and latest_checkpoint(run) is not None:
            pipeline.console.print(f"[yellow]train: config changed, restarting {run}[/]")
        done_marker.unlink(missing_ok=True)
        stamps.mark("train", train_digest, done_marker)
        pipeline.train_stage(cfg, ws, resume=resume)
        done_marker.touch()
    else:
        pipeline.console.print(f"[dim]train: up to date ({run})[/]")
    metrics = run / "metrics.json"
    _stage(stamps, "evaluate", dig(), metrics, lambda: pipeline.evaluate_stage(cfg, ws))
    return json.loads(metrics.read_text())

