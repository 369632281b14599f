"""``omnisource sweep grid|labels|teacher|ratio``: the commands over :mod:`omnisource.sweep`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import ConfigError
from ..console import console
from ..sweep import sweep_grid, sweep_labels, sweep_ratio, sweep_teacher
from .common import EXPERIMENT, ConfigOpt, OverridesArg, WorkspaceOpt, friendly, load_cfg


def register(app) -> None:
    """Add ``omnisource sweep grid|labels|teacher|ratio`` to the CLI."""
    sweep_app = typer.Typer(no_args_is_help=True, help="Rerun the pipeline over any config keys (grid), or the "
                            "paper's analyses (labels, teacher, ratio: Figs. 6-8).")
    app.add_typer(sweep_app, name="sweep", rich_help_panel=EXPERIMENT)

    def _finish(cfg, ws):
        from ..report.stage import write_report

        console.print(f"report: {write_report(cfg, ws)}")

    @sweep_app.command("grid")
    @friendly
    def grid_cmd(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                 seeds: int = typer.Option(1, help="Training seeds per point: train.seed, train.seed + 1, ..."),
                 axes: List[str] = typer.Argument(..., help="key=value1,value2,... per axis (a single value "
                                                  "sets the key for every point)", show_default=False)):
        """Any config keys over a grid, each point with --seeds seeds (as Hydra's multirun)."""
        cfg, ws = load_cfg(config, workspace, [])
        sweep_grid(cfg, ws, list(axes), seeds)
        _finish(cfg, ws)

    @sweep_app.command("labels")
    @friendly
    def labels_cmd(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                   amounts: str = typer.Option("3%,10%,30%", help="Label subsets: percentages (3%) or "
                                               "videos per class (5), comma separated."),
                   overrides: Optional[List[str]] = OverridesArg):
        """Whole pipeline, teacher included, on label subsets (paper Fig. 7)."""
        cfg, ws = load_cfg(config, workspace, overrides)
        sweep_labels(cfg, ws, [a for a in amounts.split(",") if a.strip()])
        _finish(cfg, ws)

    @sweep_app.command("teacher")
    @friendly
    def teacher_cmd(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                    teacher: Optional[List[str]] = typer.Option(None, "--teacher", "-t", help="Overrides of one "
                                                                "teacher, space separated; repeat per teacher "
                                                                "(default: the three feature heads)."),
                    overrides: Optional[List[str]] = OverridesArg):
        """Different teachers for the same student (paper Fig. 6)."""
        cfg, ws = load_cfg(config, workspace, overrides)
        specs = list(teacher or ["features.head=linear", "features.head=tsn", "features.head=temporal"])
        sweep_teacher(cfg, ws, specs)
        _finish(cfg, ws)

    @sweep_app.command("ratio")
    @friendly
    def ratio_cmd(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                  ratios: str = typer.Option("0.25,0.5,1.0", help="|B_A| / |B_T| values, comma separated."),
                  overrides: Optional[List[str]] = OverridesArg):
        """|B_A| : |B_T| of joint training (paper Fig. 8)."""
        cfg, ws = load_cfg(config, workspace, overrides)
        try:
            values = [float(r) for r in ratios.split(",") if r.strip()]
        except ValueError:
            raise ConfigError(f"--ratios {ratios!r}: expected numbers separated by commas") from None
        sweep_ratio(cfg, ws, values)
        _finish(cfg, ws)
