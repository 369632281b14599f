"""The ``omnisource`` app: one sub-command per stage, plus ``run``, ``demo`` and ``config``."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import pipeline
from ..config import dump_config, load_config
from ..console import console
from .common import ConfigOpt, OverridesArg, WorkspaceOpt, friendly, load_cfg

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train video classifiers from a small labeled set plus noisy web data.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configurations.")
app.add_typer(config_app, name="config")


def _stage_command(name: str, target: str, doc: str) -> None:
    """Register ``omnisource <name>``: load the config, run ``module:function(cfg, workspace)``."""

    def command(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                overrides: Optional[List[str]] = OverridesArg):
        module, function = target.split(":")
        cfg, ws = load_cfg(config, workspace, overrides)
        getattr(importlib.import_module(module, "omnisource"), function)(cfg, ws)

    command.__doc__ = doc
    app.command(name)(friendly(command))


for _name, _target, _doc in [
    ("import", ".pipeline:import_target",
     "Build the target manifest (class folders, CSV, mmaction2 or Kinetics lists) and split it."),
    ("validate", ".pipeline:validate_target", "Decode every target file; corrupt ones get status=corrupt and a reason."),
    ("import-web", ".web:import_web", "Import the configured web sources (query folders or manifests) and validate them."),
    ("score", ".teacher.stage:score_stage",
     "Score every web sample with its source's teacher run(s) (web[i].teachers, else omni.teacher_runs); "
     "untrimmed videos clip by clip (omni.clip_seconds); resumable by shard."),
    ("select", ".select.stage:select_stage", "Keep confident web samples with pseudo-labels (omni.filter, omni.threshold)."),
    ("fit-motion", ".transform.stage:fit_motion_stage",
     "Fit the homography Gaussian on target videos (for omni.image_to_clip=perspective)."),
    ("transform", ".transform.stage:transform_stage", "Turn kept web samples into target-format training samples."),
]:
    _stage_command(_name, _target, _doc)


@config_app.command("show")
@friendly
def config_show(config: Optional[Path] = ConfigOpt, overrides: Optional[List[str]] = OverridesArg):
    """Print the resolved config (defaults + file + overrides) as YAML."""
    typer.echo(dump_config(load_config(config, list(overrides or []))), nl=False)


@app.command()
@friendly
def prepare(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
            short_side: int = typer.Option(128, help="Short side of the re-encoded videos."),
            gop: float = typer.Option(1.0, help="Seconds between keyframes."),
            frames: bool = typer.Option(False, "--frames", help="Extract JPEG frames instead of re-encoding."),
            overrides: Optional[List[str]] = OverridesArg):
    """Re-encode (or frame-extract) the target media once into a training-friendly form."""
    cfg, ws = load_cfg(config, workspace, overrides)
    pipeline.prepare_target(cfg, ws, short_side, gop, "frames" if frames else "reencode")


@app.command()
@friendly
def features(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
             manifest: Optional[List[Path]] = typer.Option(None, "--manifest", "-m",
                                                           help="Manifest(s) to embed (default: target)."),
             overrides: Optional[List[str]] = OverridesArg):
    """Embed frames with the frozen backbone into the workspace feature cache (resumable)."""
    from ..web import web_features

    cfg, ws = load_cfg(config, workspace, overrides)
    pipeline.features_stage(cfg, ws, list(manifest) if manifest else None)
    if not manifest:
        web_features(cfg, ws)
        web_features(cfg, ws, stage="train")


@app.command()
@friendly
def train(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
          resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint."),
          overrides: Optional[List[str]] = OverridesArg):
    """Train on the target set (feature mode: a head on cached features; pixel mode: a whole network).
    With train.method=da: image-to-video domain adaptation on the web sources (the `da` section)."""
    cfg, ws = load_cfg(config, workspace, overrides)
    if cfg.train.method == "da":
        from ..train.da_stage import da_stage

        da_stage(cfg, ws, resume=resume)
        return
    pipeline.train_stage(cfg, ws, resume=resume)


@app.command()
@friendly
def evaluate(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
             checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint folder (default: latest)."),
             run_name: Optional[str] = typer.Option(None, "--run", help="Run to evaluate (default: train.run_name)."),
             overrides: Optional[List[str]] = OverridesArg):
    """Evaluate on the validation split: top-1, top-5, mean class accuracy, confusion matrix."""
    cfg, ws = load_cfg(config, workspace, overrides)
    if run_name:
        cfg.train.run_name = run_name
    pipeline.evaluate_stage(cfg, ws, checkpoint)


@app.command()
@friendly
def run(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
        overrides: Optional[List[str]] = OverridesArg):
    """Chain the stages (target-only, or OmniSource when web sources are configured),
    skipping those whose outputs are complete; ends by writing the HTML report."""
    from ..report import write_report
    from ..runner import run_pipeline

    cfg, ws = load_cfg(config, workspace, overrides)
    run_pipeline(cfg, ws)
    console.print(f"report: {write_report(cfg, ws)}")


@app.command()
@friendly
def student(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
            resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint."),
            overrides: Optional[List[str]] = OverridesArg):
    """Jointly train the student on target + web batches (omni.student_run)."""
    from ..train.joint import student_stage

    cfg, ws = load_cfg(config, workspace, overrides)
    student_stage(cfg, ws, resume=resume)


@app.command()
@friendly
def demo(workspace: Path = typer.Option(Path("demo-workspace"), "--workspace", "-w"),
         overrides: Optional[List[str]] = OverridesArg):
    """Generate a small synthetic dataset and run the pipeline on it end to end
    (`omnisource demo mode=pixels`: whole small networks, see omnisource.demo.pixels)."""
    from ..config import parse_override

    overrides = list(overrides or [])
    modes = [v for k, v in map(parse_override, overrides) if k == "mode"]
    if modes and modes[-1] == "pixels":
        from ..demo.pixels import run_pixel_demo

        run_pixel_demo(workspace, [o for o in overrides if parse_override(o)[0] != "mode"])
        return
    from ..demo.run import run_demo

    run_demo(workspace, overrides)


def _register_packages() -> None:
    from ..collect.cli import register as register_collect
    from ..report.stage import register as register_report
    from ..sweep import register as register_sweep
    from ..weak.cli import register as register_weak

    register_collect(app)  # queries, download, dedup, clean validate, clean dedup
    register_weak(app)  # weak-labels, pretrain, finetune, probe
    register_report(app)  # report
    register_sweep(app)  # sweep labels|teacher|ratio


_register_packages()


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="omnisource")


if __name__ == "__main__":
    main()
