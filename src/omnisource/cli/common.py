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

# Help panels, in pipeline order.
TARGET, WEB, OMNI, WEAK, EXPERIMENT = ("Target set", "Web data", "Teacher, selection and student",
                                       "Pre-training on web data", "Whole experiments")

_PACKAGE = Path(__file__).resolve().parent.parent
_state = {"debug": False}
_new_bases: list[tuple[Workspace, str]] = []  # base configs of new workspaces, written on success


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
                console.print(f"[red]error:[/] {text}", highlight=False, markup=True)
                raise typer.Exit(2) from None
            console.print(f"[red]internal error:[/] {type(err).__name__}: {text} (a bug in omnisource, not in "
                          "your input; `omnisource --debug ...` shows the traceback)", highlight=False)
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


def load_cfg(config: Optional[Path], workspace: Optional[Path],
             overrides: Optional[List[str]]) -> tuple[Config, Workspace]:
    """The command's config (base config of the workspace, then --config, then the overrides) and
    its workspace, created if need be."""
    overrides = list(overrides or [])
    ws = workspace_root(workspace, config, overrides)
    existed = ws.exists()
    if existed:  # log a bad config too; a new workspace is made only for a good one
        open_workspace(ws)
    base = ws.config_file if ws.config_file.is_file() else None
    cfg = load_config([p for p in (base, config) if p], overrides)
    cfg.workspace = str(ws.root)
    if not existed:
        open_workspace(ws)
    if base is None:
        _new_bases.append((ws, dump_config(cfg)))
    return cfg, ws

