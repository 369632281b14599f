"""``omnisource report``: the command over :func:`omnisource.report.stage.write_report`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..console import console
from ..report.stage import workspace_config, write_report
from .common import EXPERIMENT, WorkspaceOpt, friendly, open_workspace, workspace_root


def register(app) -> None:
    """Add ``omnisource report`` to the CLI."""

    @app.command("report", rich_help_panel=EXPERIMENT)
    @friendly
    def report_cmd(args: Optional[List[str]] = typer.Argument(
                       None, metavar="[WORKSPACE] [OVERRIDES]...", show_default=False,
                       help="The workspace (or -w) and config overrides."),
                   workspace: Optional[Path] = WorkspaceOpt,
                   baseline: Optional[str] = typer.Option(None, help="Run to compare confusion pairs with "
                                                          "(default: the teacher run)."),
                   out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file "
                                                      "(default WORKSPACE/report/index.html)."),
                   self_check: bool = typer.Option(False, "--self-check", hidden=True,
                                                   help="Embed a script that records whether images loaded.")):
        """Write a self-contained HTML report of a workspace (plots embedded; figures also as PNG files)."""
        args = list(args or [])
        if workspace is None and args and "=" not in args[0]:  # `report WS` as well as `report -w WS`
            workspace = Path(args.pop(0))
        ws = workspace_root(workspace, what="`report`")
        if not ws.exists():
            raise FileNotFoundError(f"{ws}: workspace folder not found")
        open_workspace(ws)
        path = write_report(workspace_config(ws, args), ws, baseline, self_check, out)
        console.print(f"report: {path}")
