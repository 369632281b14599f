"""Options and helpers shared by every ``omnisource`` command (stage packages import them from here).

Every command takes ``-w/--workspace DIR``, ``--config FILE`` and trailing ``section.field=value``
overrides. The config of a command is the workspace's base config (``WS/config.yaml``), then the
``--config`` file, then the overrides — for that command only: what a run was trained with is
recorded in its own ``runs/<name>/config.yaml`` and in the stage stamps. A new workspace gets
the config of its first successful command as its base; ``omnisource config set -w WS k=v``
changes it. Everything a command prints is appended to ``WS/logs/omnisource.log``.

Errors: an expected one (bad config, bad input, a workspace that cannot be written) prints one
line and exits with status 2; anything else is a bug and says so (status 1); ``--debug`` shows
the traceback of either.
"""
from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from typing import List, Optional

import typer

from ..config import Config, ConfigError, dump_config, load_config
from ..console import attach_log, console, detach_log
from ..data.manifest import ManifestError, atomic_write_text
from ..workspace import Workspace, WorkspaceError

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (its paths are relative to its folder).")
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace folder.")
OverridesArg = typer.Argument(None, help="Overrides such as train.epochs=5 or web[0].batch_ratio=1.",
                              show_default=False)
ResumeOpt = typer.Option(False, "--resume", help="Continue the run from its latest checkpoint.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Delete the run's earlier checkpoints and train it again.")
EngineOpt = typer.Option("local", "--engine", help="local (this process) or ray (a Ray Data pipeline).")
RayAddressOpt = typer.Option(None, "--ray-address", help="Ray cluster to join (e.g. auto, ray://head:10001); "
                             "default: start a local Ray sized to this machine.")
RayNicenessOpt = typer.Option(None, "--ray-niceness", min=0, max=19, show_default=False,
                              help="Nice increment of the workers of the local Ray (0: this command's priority; "
                              "default: RAY_worker_niceness, else Ray's 15, which yields to every job at normal "
                              "priority).")

# Help panels, in pipeline order.
TARGET, WEB, OMNI, WEAK, EXPERIMENT = ("Target set", "Web data", "Teacher, selection and student",
                                       "Pre-training on web data", "Whole experiments")

_PACKAGE = Path(__file__).resolve().parent.parent
_state = {"debug": False}
_new_bases: list[tuple[Workspace, str]] = []  # base configs of new workspaces, written on success


def engine_options(engine: str, address: Optional[str], niceness: Optional[int] = None):
    """None (local engine) or the distributed.ray.RayOptions of --engine ray."""
    from ..distributed.ray import check_engine

    opts = check_engine(engine, address, niceness)
    if opts is not None:
        opts.progress = console.is_terminal  # Ray Data's progress bars where someone watches
    return opts


def set_debug(flag: bool) -> None:
    _state["debug"] = flag


def _raised_here(err: BaseException) -> bool:
    """Whether the innermost frame of the error is omnisource's own code (not numpy's or torch's)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def expected(err: BaseException) -> bool:
    """Errors about the user's input or machine (one line), as opposed to bugs."""
    from ..data.media import MediaError

    if isinstance(err, (ConfigError, ManifestError, MediaError, WorkspaceError, PermissionError, FileNotFoundError,
                        NotADirectoryError, IsADirectoryError, FileExistsError)):
        return True
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return True
    return isinstance(err, (ValueError, RuntimeError)) and _raised_here(err)


def _rank() -> str:
    return f" (rank {os.environ.get('RANK', '?')})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def _say(text: str) -> None:
    """An error line; a torchrun rank other than 0 (whose console is quiet) says it on stderr."""
    if console.quiet:
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(text, highlight=False)
    else:
        console.print(text, highlight=False)


def friendly(fn):
    """Expected errors -> one red line and exit status 2; other exceptions -> one line saying it is
    an internal error (status 1); with --debug, the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            for ws, text in _new_bases:
                if not ws.config_file.exists():
                    atomic_write_text(ws.config_file, text)
            return result
        except (typer.Exit, typer.Abort):  # typer.Exit is a RuntimeError: not an error of ours
            raise
        except KeyboardInterrupt:
            console.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
            if _state["debug"]:
                raise
            text = (str(err).strip().splitlines() or [type(err).__name__])[0]
            if expected(err):
                _say(f"[red]error{_rank()}:[/] {text}")
                raise typer.Exit(2) from None
            _say(f"[red]internal error{_rank()}:[/] {type(err).__name__}: {text} (a bug in omnisource, not in "
                 "your input; `omnisource --debug ...` shows the traceback)")
            raise typer.Exit(1) from None
        finally:
            _new_bases.clear()
            detach_log()

    return wrapper


def _command_line() -> str:
    try:  # typer vendors click from 0.22 on
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer
        from click import get_current_context
    ctx = get_current_context(silent=True)
    if ctx is None:
        return "omnisource"
    args = " ".join(f"{k}={v}" for k, v in ctx.params.items() if v not in (None, False, [], ()))
    return f"{ctx.command_path} {args}".rstrip()


def open_workspace(ws: Workspace) -> Workspace:
    """Create the workspace folder if need be, check it can be written, and log the command to it."""
    ws.create()
    attach_log(ws.log_file, f"$ {_command_line()}")
    return ws


def workspace_root(workspace: Optional[Path], config: Optional[Path] = None, overrides: Optional[List[str]] = None,
                   what: str = "this command") -> Workspace:
    """The workspace of ``-w``, else the ``workspace`` key of the --config file or overrides; never
    a silent default."""
    if workspace is None:
        workspace = load_config(config, list(overrides or [])).workspace if (config or overrides) else ""
    if not str(workspace):
        raise ConfigError(f"no workspace given: pass -w/--workspace DIR to {what} (or set `workspace:` in the "
                          "--config file)")
    return Workspace(workspace)


TORCHRUN_COMMANDS = "train, student, pretrain, finetune, probe"


def load_cfg(config: Optional[Path], workspace: Optional[Path], overrides: Optional[List[str]],
             distributed: bool = False) -> tuple[Config, Workspace]:
    """The command's config (base config of the workspace, then --config, then the overrides) and
    its workspace, created if need be. A ``distributed`` (training) command launched by torchrun
    joins its process group here, and only rank 0 creates, logs to and writes the workspace; the
    other commands refuse torchrun."""
    overrides = list(overrides or [])
    ws = workspace_root(workspace, config, overrides)
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1  # checked without importing torch.distributed
    if torchrun and not distributed:
        raise ConfigError(f"only the training commands ({TORCHRUN_COMMANDS}) run under torchrun; run this one as "
                          "one process (score, features and clean validate scale with --engine ray)")
    existed = ws.exists()
    if existed and not torchrun:  # log a bad config too; a new workspace is made only for a good one
        open_workspace(ws)
    base = ws.config_file if ws.config_file.is_file() else None
    cfg = load_config([p for p in (base, config) if p], overrides)
    from ..data import media

    media.set_backend(cfg.media.backend)  # every decode of this run, loader workers included
    cfg.workspace = str(ws.root)
    if torchrun:
        from ..distributed import ddp

        if not ddp.setup(cfg.train.device).is_main:
            return cfg, ws
    if not existed or torchrun:
        open_workspace(ws)
    if base is None:
        _new_bases.append((ws, dump_config(cfg)))
    return cfg, ws

