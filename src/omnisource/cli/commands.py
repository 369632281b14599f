"""The ``omnisource`` app: one sub-command per stage, plus ``run``, ``report``, ``sweep``, ``demo`` and
``config``, listed by ``--help`` in pipeline order under a few headings."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import pipeline
from ..config import dump_config, load_config
from ..console import console
from .common import (EXPERIMENT, OMNI, TARGET, WEB, ConfigOpt, EngineOpt, OverridesArg, OverwriteOpt, RayAddressOpt,
                     RayNicenessOpt, ResumeOpt, WorkspaceOpt, engine_options, friendly, load_cfg, open_workspace,
                     set_debug, workspace_root)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train video classifiers from a small labeled set plus noisy web data.")
config_app = typer.Typer(no_args_is_help=True, help="Show a config, every key's documentation, or change a "
                         "workspace's base config.")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"omnisource {__version__}")
        raise typer.Exit()


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the traceback of any error."),
             version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")):
    set_debug(debug)


def _stage_command(name: str, target: str, doc: str, panel: str) -> None:
    """Register ``omnisource <name>``: load the config, run ``module:function(cfg, workspace)``."""

    def command(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                overrides: Optional[List[str]] = OverridesArg):
        module, function = target.split(":")
        cfg, ws = load_cfg(config, workspace, overrides)
        getattr(importlib.import_module(module, "omnisource"), function)(cfg, ws)

    command.__doc__ = doc
    app.command(name, rich_help_panel=panel)(friendly(command))


# --------------------------------------------------------------------------- target set
_stage_command("import", ".pipeline:import_target",
               "Build the target manifest (class folders, CSV, mmaction2 or Kinetics lists) and split it.", TARGET)
AllOpt = typer.Option(False, "--all", help="Every row, also those the experiment does not use (target videos "
                      "beyond target.per_class; web samples the teacher filter drops whatever it says).")


@app.command(rich_help_panel=TARGET)
@friendly
def validate(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
             all_rows: bool = AllOpt, overrides: Optional[List[str]] = OverridesArg):
    """Decode the target files the experiment uses; bad ones get a status (corrupt | rejected) and a reason."""
    cfg, ws = load_cfg(config, workspace, overrides)
    pipeline.validate_target(cfg, ws, all_rows=all_rows)


@app.command(rich_help_panel=TARGET)
@friendly
def prepare(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
            short_side: int = typer.Option(128, help="Short side of the re-encoded videos."),
            gop: float = typer.Option(1.0, help="Seconds between keyframes."),
            frames: bool = typer.Option(False, "--frames", help="Extract JPEG frames instead of re-encoding."),
            workers: int = typer.Option(0, "--workers", min=0, help="Processes; 0 = all cores."),
            all_rows: bool = AllOpt, overrides: Optional[List[str]] = OverridesArg):
    """Re-encode (or frame-extract) the target media once into a training-friendly form (resumable)."""
    cfg, ws = load_cfg(config, workspace, overrides)
    pipeline.prepare_target(cfg, ws, short_side, gop, "frames" if frames else "reencode", workers, all_rows=all_rows)


@app.command(rich_help_panel=TARGET)
@friendly
def features(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
             manifest: Optional[List[Path]] = typer.Option(None, "--manifest", "-m",
                                                           help="Manifest(s) to embed (default: target and web)."),
             all_rows: bool = AllOpt,
             retry_failed: bool = typer.Option(False, "--retry-failed", help="Decode again the files that failed "
                                               "before (by default only those whose file changed since)."),
             engine: str = EngineOpt, ray_address: Optional[str] = RayAddressOpt,
             ray_niceness: Optional[int] = RayNicenessOpt, overrides: Optional[List[str]] = OverridesArg):
    """Embed frames with the frozen backbone into the feature cache (resumable).

    The rows the experiment uses: the labeled training and validation videos, and the web samples
    the teacher filter can keep (--all: every row); then the transformed web samples, if any.
    --engine ray embeds on a Ray cluster into the same shards."""
    from ..features.embed import embed_manifest, embed_stage, embed_web

    opts = engine_options(engine, ray_address, ray_niceness)
    cfg, ws = load_cfg(config, workspace, overrides)
    if manifest:
        for path in manifest:
            embed_manifest(cfg, ws, path, retry_failed=retry_failed, engine=opts)
        return
    embed_stage(cfg, ws, all_rows=all_rows, retry_failed=retry_failed, engine=opts)
    embed_web(cfg, ws, stage="train", retry_failed=retry_failed, engine=opts)


# --------------------------------------------------------------------------- web data (collect, clean)
def _register_web() -> None:
    from .collect import register_clean, register_collect

    register_collect(app)  # queries, download
    _stage_command("import-web", ".web:import_web",
                   "Import the configured web sources (query folders or manifests) and validate them.", WEB)
    register_clean(app)  # clean validate, clean dedup


_register_web()


# --------------------------------------------------------------------------- teacher, selection, student
@app.command(rich_help_panel=OMNI)
@friendly
def train(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
          resume: bool = ResumeOpt, overwrite: bool = OverwriteOpt, overrides: Optional[List[str]] = OverridesArg):
    """Train the teacher on the target set (train.method=da: domain adaptation on the web sources;
    the other methods name what `run` chains after this run).

    Feature mode trains a head on cached features, pixel mode a whole network. A run folder trained
    from other inputs is refused unless --resume or --overwrite. Under torchrun:
    DistributedDataParallel over the launched processes (train.batch_size is global; with
    train.method=da, the global batch of each branch, the attention over the gathered batch)."""
    cfg, ws = load_cfg(config, workspace, overrides, distributed=True)
    if cfg.train.method == "da":
        from ..train.da_stage import da_stage

        da_stage(cfg, ws, resume=resume, overwrite=overwrite)
        return
    pipeline.train_stage(cfg, ws, resume=resume, overwrite=overwrite)


@app.command(rich_help_panel=OMNI)
@friendly
def evaluate(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
             checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: the run's --epoch)."),
             run_name: Optional[str] = typer.Option(None, "--run", help="Run to evaluate (default: train.run_name)."),
             epoch: str = typer.Option("best", "--epoch", help="best (validation top-1), last or N."),
             overrides: Optional[List[str]] = OverridesArg):
    """Evaluate on the validation split: top-1, top-5, mean class accuracy, confusion matrix."""
    cfg, ws = load_cfg(config, workspace, overrides)
    if run_name:
        cfg.train.run_name = run_name
    pipeline.evaluate_stage(cfg, ws, checkpoint, epoch)


@app.command(rich_help_panel=OMNI)
@friendly
def score(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
          engine: str = EngineOpt, ray_address: Optional[str] = RayAddressOpt,
          ray_niceness: Optional[int] = RayNicenessOpt, overrides: Optional[List[str]] = OverridesArg):
    """Score every web sample with its source's teacher run(s) (web[i].teachers, else omni.teacher_runs);
    untrimmed videos clip by clip (omni.clip_seconds); resumable by shard.

    --engine ray scores on a Ray cluster into the same shards."""
    from ..teacher.stage import score_stage

    opts = engine_options(engine, ray_address, ray_niceness)
    cfg, ws = load_cfg(config, workspace, overrides)
    score_stage(cfg, ws, engine=opts)


for _name, _target, _doc in [
    ("select", ".select.stage:select_stage", "Keep confident web samples with pseudo-labels (omni.filter, omni.threshold)."),
    ("fit-motion", ".transform.stage:fit_motion_stage",
     "Fit the homography Gaussian on target videos (for omni.image_to_clip=perspective)."),
    ("transform", ".transform.stage:transform_stage", "Turn kept web samples into target-format training samples."),
]:
    _stage_command(_name, _target, _doc, OMNI)


@app.command(rich_help_panel=OMNI)
@friendly
def student(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
            resume: bool = ResumeOpt, overwrite: bool = OverwriteOpt, overrides: Optional[List[str]] = OverridesArg):
    """Jointly train the student on target + web batches (omni.student_run); runs under torchrun too.

    Embeds the training samples the transform made that the feature cache lacks."""
    from ..train.joint import student_stage

    cfg, ws = load_cfg(config, workspace, overrides, distributed=True)
    student_stage(cfg, ws, resume=resume, overwrite=overwrite)


# --------------------------------------------------------------------------- pre-training on web data
def _register_weak() -> None:
    from .weak import register

    register(app)  # weak-labels, pretrain, finetune, probe


_register_weak()


# --------------------------------------------------------------------------- whole experiments
def summary(results: dict, teacher: str, student: str | None) -> str:
    """One line: "teacher 95.0 → student 96.7 (+1.7 top-1 on 120 clips)"."""
    t = results[teacher]
    if student is None or student not in results:
        return f"{teacher} {100 * t['top1']:.1f} top-1 on {t['num_samples']} validation clips"
    s = results[student]
    return (f"teacher {100 * t['top1']:.1f} → student {100 * s['top1']:.1f} "
            f"({100 * (s['top1'] - t['top1']):+.1f} top-1 on {s['num_samples']} validation clips)")


@app.command(rich_help_panel=EXPERIMENT)
@friendly
def run(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
        overrides: Optional[List[str]] = OverridesArg):
    """Chain the stages, skipping those that are up to date (also when run by hand).

    Target-only, then what train.method names (auto: OmniSource when web sources are configured;
    da; spl: weak-labels, pretrain, finetune); ends with the HTML report and one line: teacher →
    student top-1."""
    from ..report import write_report
    from ..runner import final_run, run_pipeline

    cfg, ws = load_cfg(config, workspace, overrides)
    results = run_pipeline(cfg, ws)
    console.print(f"report: {write_report(cfg, ws)}")
    console.print(summary(results, cfg.train.run_name, final_run(cfg)))


def _register_experiments() -> None:
    from .compare import register as register_compare
    from .report import register as register_report
    from .serve import register as register_serve
    from .sweep import register as register_sweep

    register_report(app)  # report
    register_compare(app)  # compare
    register_sweep(app)  # sweep grid|labels|teacher|ratio
    register_serve(app)  # predict, export, upgrade-checkpoint


_register_experiments()


@app.command(rich_help_panel=EXPERIMENT)
@friendly
def demo(workspace: Path = typer.Option(Path("demo-workspace"), "--workspace", "-w"),
         data: Optional[Path] = typer.Option(None, "--data", help="Folder of the synthetic data (generated "
                                             "there unless present; default WORKSPACE/data)."),
         overrides: Optional[List[str]] = OverridesArg):
    """Generate a small synthetic dataset and run the pipeline on it end to end
    (`omnisource demo mode=pixels`: whole small networks, see omnisource.demo.pixels)."""
    from ..config_io import parse_override

    open_workspace(workspace_root(workspace))
    overrides = list(overrides or [])
    modes = [v for k, v in map(parse_override, overrides) if k == "mode"]
    if modes and modes[-1] == "pixels":
        from ..demo.pixels import run_pixel_demo

        if data is not None:
            raise typer.BadParameter("--data applies to the feature-mode demo (mode=pixels makes its own)")
        run_pixel_demo(workspace, [o for o in overrides if parse_override(o)[0] != "mode"])
        return
    from ..demo.run import run_demo

    run_demo(workspace, overrides, data)


@config_app.command("show")
@friendly
def config_show(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                doc: bool = typer.Option(False, "--doc", help="List every key with its type, default and meaning."),
                overrides: Optional[List[str]] = OverridesArg):
    """Print the resolved config as YAML, or with --doc every key.

    Defaults, then the workspace's base config (-w), the --config file, the overrides."""
    if doc:
        from ..config_io import config_reference

        rows = config_reference()
        width = max(len(k) for k, *_ in rows)
        for key, tp, default, text in rows:
            typer.echo(f"{key:<{width}}  {tp} = {default}  {text}")
        return
    files = [config] if config else []
    if workspace is not None:
        ws = workspace_root(workspace)
        if not ws.config_file.is_file():
            raise FileNotFoundError(f"{ws}: no config.yaml (a workspace gets one from its first command)")
        files.insert(0, ws.config_file)
    typer.echo(dump_config(load_config(files, list(overrides or []))), nl=False)


@config_app.command("set")
@friendly
def config_set(workspace: Optional[Path] = WorkspaceOpt, overrides: List[str] = typer.Argument(
        ..., help="section.field=value pairs to store in WS/config.yaml.", show_default=False)):
    """Change the workspace's base config (WS/config.yaml), which every later command starts from."""
    from ..config import to_dict
    from ..config_io import flatten_config
    from ..data.manifest import atomic_write_text

    ws = open_workspace(workspace_root(workspace, what="`config set`"))
    base = [ws.config_file] if ws.config_file.is_file() else []
    old, new = load_config(base), load_config(base, list(overrides))
    new.workspace = str(ws.root)
    atomic_write_text(ws.config_file, dump_config(new))
    flat_old, flat_new = flatten_config(to_dict(old)), flatten_config(to_dict(new))
    for key in sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k) != flat_new.get(k)):
        console.print(f"{key}: {flat_old.get(key, '–')!r} -> {flat_new.get(key, '–')!r}", highlight=False)
    console.print(f"config: {ws.config_file}")


app.add_typer(config_app, name="config", rich_help_panel=EXPERIMENT)


def _log_to_stderr() -> None:
    """omnisource's log records (the video decoder chosen, files skipped) as plain stderr lines."""
    import logging

    logger = logging.getLogger("omnisource")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Optional[List[str]] = None) -> None:
    _log_to_stderr()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:  # accepted after the command too
        args = ["--debug", *[a for a in args if a != "--debug"]]
    app(args=args, prog_name="omnisource")


if __name__ == "__main__":
    main()
