"""``omnisource run``: chain the stages, skipping those whose outputs are complete.

A stage counts as complete when its output exists and a stamp records a digest of the config
sections it depends on, chained with the digests of the stages before it; a changed section
re-runs that stage and everything after it. Every stage writes atomically or resumes (feature
cache, score shards, checkpoints), so a killed run started again ends with the same outputs as
an uninterrupted one.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from . import pipeline
from .config import Config, source_teachers, teacher_config, to_dict
from .console import console
from .data.manifest import atomic_write_text
from .train.checkpoint import latest_checkpoint
from .workspace import Workspace


def _digest(cfg: Config, sections: tuple[str, ...]) -> str:
    data = {}
    for s in sections:
        value = getattr(cfg, s)
        data[s] = to_dict(value) if hasattr(value, "__dataclass_fields__") else \
            [to_dict(v) for v in value] if isinstance(value, list) else value
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Chain:
    """Runs stages in order with stamps under ``<workspace>/.stages``."""

    def __init__(self, cfg: Config, workspace: Workspace):
        self.cfg, self.ws = cfg, workspace
        self.chain = ""

    def _next(self, sections: tuple[str, ...], cfg: Config | None = None) -> str:
        self.chain = hashlib.sha1((self.chain + _digest(cfg or self.cfg, sections)).encode()).hexdigest()[:16]
        return self.chain

    def _stamp(self, name: str) -> dict:
        path = self.ws.stamp_file(name)
        return json.loads(path.read_text()) if path.exists() else {}

    def _mark(self, name: str, digest: str, state: str) -> None:
        atomic_write_text(self.ws.stamp_file(name), json.dumps({"digest": digest, "state": state}))

    def stage(self, name: str, sections: tuple[str, ...], output: Path, fn, cfg: Config | None = None) -> None:
        digest = self._next(sections, cfg)
        stamp = self._stamp(name)
        if output.exists() and stamp == {"digest": digest, "state": "done"}:
            console.print(f"[dim]{name}: up to date ({output})[/]")
            return
        self._mark(name, digest, "running")
        fn()
        self._mark(name, digest, "done")

    def train(self, name: str, sections: tuple[str, ...], run: Path, fn, cfg: Config | None = None) -> None:
        """A training stage: resumes an interrupted run of the same config, else starts over.
        ``cfg``: the config whose sections the stamp digests (default: the chain's)."""
        digest = self._next(sections, cfg)
        stamp = self._stamp(name)
        if stamp == {"digest": digest, "state": "done"} and latest_checkpoint(run) is not None:
            console.print(f"[dim]{name}: up to date ({run})[/]")
            return
        resume = stamp.get("digest") == digest and latest_checkpoint(run) is not None
        if stamp and stamp.get("digest") != digest and latest_checkpoint(run) is not None:
            console.print(f"[yellow]{name}: config changed, restarting {run}[/]")
        self._mark(name, digest, "running")
        fn(resume)
        self._mark(name, digest, "done")


def run_pipeline(cfg: Config, workspace) -> dict:
    """Target-only when no web source is configured; the whole OmniSource chain otherwise.
    Returns {run name: validation metrics}."""
    from .web import import_web, web_features

    ws = Workspace.of(workspace)
    c = Chain(cfg, ws)
    p = pipeline
    c.stage("import", ("target",), ws.target("imported"), lambda: p.import_target(cfg, ws))
    c.stage("validate", ("media",), ws.target("validated"), lambda: p.validate_target(cfg, ws))
    if cfg.web:
        c.stage("import-web", ("web",), ws.web(cfg.web[-1].name), lambda: import_web(cfg, ws))
    if cfg.mode == "features":
        marker = ws.feature_cache(cfg) / ".complete"
        c.stage("features", ("features",), marker,
                lambda: (p.features_stage(cfg, ws), web_features(cfg, ws), marker.touch()))
    teacher = ws.run(cfg.train.run_name)
    c.train("train", ("mode", "model", "train"), teacher, lambda resume: p.train_stage(cfg, ws, resume=resume))
    c.stage("evaluate", (), teacher / "metrics.json", lambda: p.evaluate_stage(cfg, ws))
    results = {cfg.train.run_name: json.loads((teacher / "metrics.json").read_text())}
    if not cfg.web:
        return results

    from .select.stage import select_stage
    from .teacher.stage import score_stage
    from .train.joint import student_stage
    from .transform.stage import transform_stage

    for name, tcfg in extra_teachers(cfg):
        run = ws.run(name)
        c.train(f"teacher-{name}", ("mode", "model", "media", "train", "features"), run,
                lambda resume, tcfg=tcfg: p.train_stage(tcfg, ws, resume=resume), cfg=tcfg)
        c.stage(f"evaluate-{name}", (), run / "metrics.json", lambda tcfg=tcfg: p.evaluate_stage(tcfg, ws))
        results[name] = json.loads((run / "metrics.json").read_text())
    last = cfg.web[-1].name
    c.stage("score", ("omni",), ws.scores(last), lambda: score_stage(cfg, ws))
    c.stage("select", (), ws.web(last, "aux"), lambda: select_stage(cfg, ws))
    c.stage("transform", (), ws.web(last, "train"), lambda: transform_stage(cfg, ws))
    if cfg.mode == "features":
        marker = ws.feature_cache(cfg) / ".complete-train"
        c.stage("features-train", (), marker, lambda: (web_features(cfg, ws, stage="train"), marker.touch()))
    student = ws.run(cfg.omni.student_run)
    c.train("student", (), student, lambda resume: student_stage(cfg, ws, resume=resume))
    scfg = student_config(cfg)
    c.stage("evaluate-student", (), student / "metrics.json", lambda: p.evaluate_stage(scfg, ws))
    results[cfg.omni.student_run] = json.loads((student / "metrics.json").read_text())
    return results


def extra_teachers(cfg: Config) -> list[tuple[str, Config]]:
    """(name, config) of every ``omni.teachers`` entry that some web source is scored by, in
    the order the sources name them; the target-only run (``train.run_name``) is trained anyway,
    and other names must be finished runs of the workspace."""
    named = dict.fromkeys(n for src in cfg.web for n in source_teachers(cfg, src))
    specs = {t.name for t in cfg.omni.teachers}
    return [(n, teacher_config(cfg, n)) for n in named if n in specs and n != cfg.train.run_name]


def student_config(cfg: Config) -> Config:
    """The config whose ``train.run_name`` points at the student run (for evaluation)."""
    scfg = copy.deepcopy(cfg)
    scfg.train.run_name = cfg.omni.student_run
    return scfg
