"""Options and helpers shared by every ``omnisource`` command (stage packages import them from here).

Every command takes ``--config FILE`` and trailing ``section.field=value`` overrides. Expected
failures (bad config, bad manifest, missing input) print one line and exit with status 2.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import typer

from ..config import Config, ConfigError, dump_config, load_config
from ..console import console
from ..data.manifest import ManifestError, atomic_write_text
from ..workspace import Workspace

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file.")
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace folder (overrides `workspace`).")
OverridesArg = typer.Argument(None, help="Overrides such as train.epochs=5.", show_default=False)
EngineOpt = typer.Option("local", "--engine", help="local (this process) or ray (a Ray Data pipeline).")
RayAddressOpt = typer.Option(None, "--ray-address", help="Ray cluster to join (e.g. auto, ray://head:10001); "
                             "default: start a local Ray sized to this machine.")


def engine_options(engine: str, address: Optional[str]):
    """None (local engine) or the distributed.ray.RayOptions of --engine ray."""
    from ..distributed.ray import check_engine

    opts = check_engine(engine, address)
    if opts is not None:
        opts.progress = console.is_terminal  # Ray Data's progress bars where someone watches
    return opts


def _expected_errors():
    from ..data.media import MediaError

    return (ConfigError, ManifestError, MediaError, FileNotFoundError, RuntimeError, ValueError)  # EngineError too


def friendly(fn):
    """Turn expected errors into one red line and exit code 2 (tracebacks stay for real bugs)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _expected_errors() as err:
            from ..distributed import ddp

            ctx = ddp.context()
            if console.quiet:  # a torchrun rank other than 0: still say what went wrong, on stderr
                from rich.console import Console

                Console(stderr=True).print(f"[red]error (rank {ctx.rank}):[/] {err}", highlight=False, soft_wrap=True)
            else:
                console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


TORCHRUN_COMMANDS = "train, student, pretrain, finetune, probe"


def load_cfg(config: Optional[Path], workspace: Optional[Path], overrides: Optional[List[str]],
             distributed: bool = False) -> tuple[Config, Workspace]:
    """The command's config and workspace. A ``distributed`` (training) command launched by
    torchrun joins its process group here; only rank 0 writes the workspace's config."""
    from ..distributed import ddp

    overrides = list(overrides or [])
    if config is None and workspace is not None and Workspace(workspace).config_file.is_file():
        config = Workspace(workspace).config_file  # a workspace remembers the config it was run with
    cfg = load_config(config, overrides)
    if workspace is not None:
        cfg.workspace = str(workspace)
    ws = Workspace(cfg.workspace)
    if distributed:
        ddp.setup(cfg.train.device)
    elif ddp.launched_by_torchrun():
        raise ConfigError(f"only the training commands ({TORCHRUN_COMMANDS}) run under torchrun; run this one as "
                          "one process (score, features and clean validate scale with --engine ray)")
    if ddp.context().is_main:
        ws.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ws.config_file, dump_config(cfg))
    return cfg, ws
