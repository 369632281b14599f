"""``omnisource run``: chain the stages, skipping those that are up to date.

Every stage stamps the identity of its inputs when it runs (omnisource.stamps), from ``run`` or
from its own command: a stage is skipped when its stamp matches its inputs now and its outputs
exist, so stages run by hand count too, and a changed input (a config key, a manifest, a teacher
checkpoint) re-runs that stage and, through its outputs, everything after it. Every stage writes
atomically or resumes (feature cache, score shards, checkpoints), so a killed run started again
ends with the same outputs as an uninterrupted one.
"""
from __future__ import annotations

import copy
import json

from .config import Config, source_teachers, teacher_config
from .console import console
from .stamps import Stage
from .workspace import Workspace


def step(fn: Stage, cfg: Config, ws: Workspace, *args, **kwargs):
    """Run ``fn`` unless it is up to date."""
    why = fn.stale(cfg, ws, *args, **kwargs)
    name = fn.stamp_name(cfg, ws, *args, **kwargs)
    if not why:
        outputs = fn.outputs(cfg, ws, *args, **kwargs)
        console.print(f"[dim]{name}: up to date{f' ({outputs[0]})' if outputs else ''}[/]", soft_wrap=True)
        return None
    if "never run here" not in why:
        console.print(f"[dim]{name}: running again ({', '.join(why[:4])})[/]", soft_wrap=True)
    return fn(cfg, ws, *args, **kwargs)


def run_pipeline(cfg: Config, workspace) -> dict:
    """Target-only when no web source is configured; the whole OmniSource chain otherwise.
    Returns {run name: validation metrics}."""
    from .features.embed import embed_stage
    from .pipeline import evaluate_stage, import_target, train_stage, validate_target
    from .web import import_web

    ws = Workspace.of(workspace)
    step(import_target, cfg, ws)
    step(validate_target, cfg, ws)
    if cfg.web:
        step(import_web, cfg, ws)
    if cfg.mode == "features":
        step(embed_stage, cfg, ws)
    train_stage(cfg, ws, auto=True)
    step(evaluate_stage, cfg, ws)
    results = {cfg.train.run_name: json.loads((ws.run(cfg.train.run_name) / "metrics.json").read_text())}
    if not cfg.web:
        return results

    from .select.stage import select_stage
    from .teacher.stage import score_stage
    from .train.joint import student_stage
    from .transform.stage import transform_stage

    for name, tcfg in extra_teachers(cfg):  # each its own run, trained before any scoring
        train_stage(tcfg, ws, auto=True)
        step(evaluate_stage, tcfg, ws)
        results[name] = json.loads((ws.run(name) / "metrics.json").read_text())
    step(score_stage, cfg, ws)
    step(select_stage, cfg, ws)
    step(transform_stage, cfg, ws)
    student_stage(cfg, ws, auto=True)  # embeds the rows the transform derived itself
    scfg = student_config(cfg)
    step(evaluate_stage, scfg, ws)
    results[cfg.omni.student_run] = json.loads((ws.run(cfg.omni.student_run) / "metrics.json").read_text())
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
