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

from .config import Config, ConfigError, source_teachers, teacher_config
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


def method_of(cfg: Config) -> str:
    """What ``run`` trains (``train.method``; auto = omnisource with web sources, else supervised).
    A method that needs web data without web sources is an error, never a silent target-only run."""
    method = cfg.train.method
    if method == "auto":
        return "omnisource" if cfg.web else "supervised"
    if method != "supervised" and not cfg.web:
        raise ConfigError(f"train.method={method} needs web sources (the `web` list of the config is empty)")
    return method


def final_run(cfg: Config) -> str | None:
    """The run that ``run`` compares with the target-only run (None: target only)."""
    return {"supervised": None, "omnisource": cfg.omni.student_run, "spl": cfg.weak.finetune_run,
            "da": cfg.da.image_run if cfg.da.stages == "image" else cfg.da.video_run}[method_of(cfg)]


def run_pipeline(cfg: Config, workspace) -> dict:
    """Target-only, then what ``train.method`` names: the OmniSource chain, domain adaptation, or
    weak-label / SPL pre-training and fine-tuning. Returns {run name: validation metrics}."""
    from .features.embed import embed_stage
    from .pipeline import evaluate_stage, import_target, train_stage, validate_target
    from .web import dedup_web, import_web

    method = method_of(cfg)
    ws = Workspace.of(workspace)
    step(import_target, cfg, ws)
    step(validate_target, cfg, ws)
    if cfg.web:
        step(import_web, cfg, ws)  # typed by content and decoded by the one validator
        if cfg.clean.dedup:  # copies of the evaluation videos must not train the student
            step(dedup_web, cfg, ws)
    if cfg.mode == "features":
        step(embed_stage, cfg, ws)
    train_stage(cfg, ws, auto=True)  # the target-only run: baseline, and teacher of omnisource / spl
    step(evaluate_stage, cfg, ws)
    results = {cfg.train.run_name: _metrics(ws, cfg.train.run_name)}
    if method == "supervised":
        return results
    if method == "da":
        from .train.da_stage import da_stage

        da_stage(cfg, ws, auto=True)
    elif method == "spl":
        from .teacher.stage import score_stage
        from .weak.stage import pretrain_stage, transfer_stage, weak_labels_stage

        if cfg.weak.labels != "weak":  # teacher, agreement and SPL labels come from teacher scores
            _train_teachers(cfg, ws, results)
            step(score_stage, cfg, ws)
        step(weak_labels_stage, cfg, ws)
        pretrain_stage(cfg, ws, auto=True)
        transfer_stage(cfg, ws, "finetune", auto=True)
    else:
        from .select.stage import select_stage
        from .teacher.stage import score_stage
        from .train.joint import student_stage
        from .transform.stage import transform_stage

        _train_teachers(cfg, ws, results)
        step(score_stage, cfg, ws)
        step(select_stage, cfg, ws)
        step(transform_stage, cfg, ws)
        student_stage(cfg, ws, auto=True)  # embeds the rows the transform derived itself
        step(evaluate_stage, student_config(cfg), ws)
    results[final_run(cfg)] = _metrics(ws, final_run(cfg))
    return results


def _train_teachers(cfg: Config, ws: Workspace, results: dict) -> None:
    """Train and evaluate every extra teacher some web source names, before any scoring."""
    from .pipeline import evaluate_stage, train_stage

    for name, tcfg in extra_teachers(cfg):  # each its own run
        train_stage(tcfg, ws, auto=True)
        step(evaluate_stage, tcfg, ws)
        results[name] = _metrics(ws, name)


def extra_teachers(cfg: Config) -> list[tuple[str, Config]]:
    """(name, config) of every ``omni.teachers`` entry that some web source is scored by, in
    the order the sources name them; the target-only run (``train.run_name``) is trained anyway,
    and other names must be finished runs of the workspace."""
    named = dict.fromkeys(n for src in cfg.web for n in source_teachers(cfg, src))
    specs = {t.name for t in cfg.omni.teachers}
    return [(n, teacher_config(cfg, n)) for n in named if n in specs and n != cfg.train.run_name]


def _metrics(ws: Workspace, run: str) -> dict:
    return json.loads((ws.run(run) / "metrics.json").read_text())


def student_config(cfg: Config) -> Config:
    """The config whose ``train.run_name`` points at the student run (for evaluation)."""
    scfg = copy.deepcopy(cfg)
    scfg.train.run_name = cfg.omni.student_run
    return scfg
