"""``omnisource compare``: the command over :func:`omnisource.compare.compare`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..compare import compare
from ..config import ConfigError
from ..console import console
from .common import EXPERIMENT, friendly


def register(app) -> None:
    """Add ``omnisource compare`` to the CLI."""

    @app.command("compare", rich_help_panel=EXPERIMENT)
    @friendly
    def compare_cmd(workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace compared "
                                                             "first; the table goes to its compare/ folder."),
                    inputs: Optional[List[Path]] = typer.Argument(None, help="More workspaces, or run folders "
                                                                  "(WS/runs/NAME).", show_default=False)):
        """Compare the evaluated runs of workspaces: top-1 and mean class accuracy with 95 % intervals,
        the difference to the first paired clip by clip (from the runs' predictions.npz), kept web
        samples per source, and the settings that differ (-w WS alone: the runs of WS)."""
        items = ([workspace] if workspace else []) + list(inputs or [])
        if not items:
            raise ConfigError("compare: no workspace given: pass -w/--workspace DIR and/or workspaces or run folders")
        console.print(f"compare: {compare(items)}")
