"""CLI commands of weakly-supervised pre-training: ``weak-labels``, ``pretrain``, ``finetune``, ``probe``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import WEAK, ConfigOpt, OverridesArg, OverwriteOpt, ResumeOpt, WorkspaceOpt, friendly, load_cfg


def register(app: typer.Typer) -> None:
    """Add ``omnisource weak-labels|pretrain|finetune|probe`` to the CLI."""

    def weak_labels(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                    overrides: Optional[List[str]] = OverridesArg):
        """Build the pre-training set from the web sources, with its label map.

        Tags (weak.labels=weak) or, from teacher scores, teacher / agreement / SPL labels (spl_full,
        spl_m, spl_d, spl_b)."""
        from ..weak.stage import weak_labels_stage

        weak_labels_stage(*load_cfg(config, workspace, overrides))

    def pretrain(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                 resume: bool = ResumeOpt, overwrite: bool = OverwriteOpt,
                 overrides: Optional[List[str]] = OverridesArg):
        """Pre-train on manifests/weak.parquet (one tag drawn per epoch, square-root class resampling)."""
        from ..weak.stage import pretrain_stage

        pretrain_stage(*load_cfg(config, workspace, overrides, distributed=True), resume=resume, overwrite=overwrite)

    def make_transfer(how: str, doc: str):
        def command(config: Optional[Path] = ConfigOpt, workspace: Optional[Path] = WorkspaceOpt,
                    checkpoint: Optional[Path] = typer.Option(
                        None, "--checkpoint", help="Run folder, epoch folder or weights file "
                        "(default: runs/<weak.pretrain_run>)."),
                    resume: bool = ResumeOpt, overwrite: bool = OverwriteOpt,
                    overrides: Optional[List[str]] = OverridesArg):
            from ..weak.stage import transfer_stage

            transfer_stage(*load_cfg(config, workspace, overrides, distributed=True), how, checkpoint, resume=resume,
                           overwrite=overwrite)

        command.__doc__ = doc
        return command

    app.command("weak-labels", rich_help_panel=WEAK)(friendly(weak_labels))
    app.command("pretrain", rich_help_panel=WEAK)(friendly(pretrain))
    app.command("finetune", rich_help_panel=WEAK)(friendly(make_transfer(
        "finetune", "Fine-tune any checkpoint on the target: new classifier, body at weak.body_lr_scale x lr.")))
    app.command("probe", rich_help_panel=WEAK)(friendly(make_transfer(
        "probe", "Linear probe of any checkpoint on the target: body and BatchNorm frozen, a new fc trained.")))
