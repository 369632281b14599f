"""The one console every module prints to (rich), so no module imports a stage for it.

Off a terminal, lines are not wrapped (rich would break paths at 80 columns, which breaks grep).
While a command runs on a workspace, everything printed is also appended, as plain text with a
timestamp per line, to ``WS/logs/omnisource.log`` (``attach_log`` / ``detach_log``).
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console


class _Console(Console):
    _log: TextIO | None = None

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.is_terminal:
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)
        self._to_log(lambda c: c.print(*objects, **kwargs))

    def rule(self, *args: Any, **kwargs: Any) -> None:
        super().rule(*args, **kwargs)
        self._to_log(lambda c: c.rule(*args, **kwargs))

    def _to_log(self, render) -> None:
        if self._log is None:
            return
        buf = io.StringIO()
        render(Console(file=buf, width=160, color_system=None, force_terminal=False, highlight=False))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            self._log.write("".join(f"{stamp} {line}\n" for line in buf.getvalue().splitlines()))
            self._log.flush()
        except OSError:  # a full disk must not turn a log line into a failed stage
            pass


console = _Console()


def attach_log(path: Path, header: str = "") -> None:
    """Append what is printed from now on to ``path`` (one log at a time)."""
    detach_log()
    path.parent.mkdir(parents=True, exist_ok=True)
    console._log = open(path, "a", encoding="utf-8")
    if header:
        console._to_log(lambda c: c.print(header, markup=False))


def detach_log() -> None:
    if console._log is not None:
        console._log.close()
        console._log = None
