"""Progress of long loops: the one helper every stage reports through (``omnisource.console``).

On a terminal each task is a live bar with its own label, counts, rate and time left. Off a
terminal (a log file, CI, ``nohup``, a pipe) a bar would print nothing useful, so a task prints
one plain line at most every :data:`INTERVAL` seconds instead, and a closing line when it ran
that long::

    features (target.validated): 120/529 videos (23%), 4.1 videos/s, 0:29 elapsed, ETA 1:40
    features (target.validated): 529/529 videos in 2:08 (4.1 videos/s)

Short tasks stay silent off a terminal. Usage::

    with Progress("score images", total=len(rows), unit="rows") as p:
        for part in parts:
            ...
            p.advance(len(part), note="2 shards left")

    for x in track(loader, "evaluate target_only", total=len(loader), unit="batches"):
        ...
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator, TypeVar

INTERVAL = 10.0
"""Seconds between two progress lines off a terminal."""

clock = time.monotonic
"""The clock progress reads (tests replace it)."""

T = TypeVar("T")


def duration(seconds: float) -> str:
    """``0:07``, ``2:08``, ``1:02:03``."""
    s = max(0, int(round(seconds)))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def progress_line(label: str, done: int, total: int | None, unit: str, elapsed: float, note: str = "") -> str:
    """The line printed off a terminal while a task runs (counts, rate, ETA)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{done}/{total} {unit}" + (f" ({100 * done / total:.0f}%)" if total else "") if total is not None
             else f"{done} {unit}", f"{_rate(rate)} {unit}/s", f"{duration(elapsed)} elapsed"]
    if total and rate > 0 and done < total:
        parts.append(f"ETA {duration((total - done) / rate)}")
    return f"{label}: " + ", ".join(parts) + (f", {note}" if note else "")


def final_line(label: str, done: int, total: int | None, unit: str, elapsed: float, note: str = "") -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    count = f"{done}/{total}" if total is not None and done != total else f"{done}"
    return f"{label}: {count} {unit} in {duration(elapsed)} ({_rate(rate)} {unit}/s)" + (f", {note}" if note else "")


class _Bars:
    """The one live rich display shared by the tasks open at a time (rich allows one)."""

    progress = None
    users = 0

    @classmethod
    def add(cls, console, label: str, total: int | None, unit: str):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        if cls.progress is None:
            cls.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[unit]}"), TaskProgressColumn(),
                                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                    TextColumn("{task.fields[note]}"), console=console, transient=True)
            cls.progress.start()
        cls.users += 1
        return cls.progress.add_task(label, total=total, unit=unit, rate="", note="")

    @classmethod
    def remove(cls, task) -> None:
        if cls.progress is None:
            return
        cls.progress.remove_task(task)
        cls.users -= 1
        if cls.users <= 0:
            cls.progress.stop()
            cls.progress, cls.users = None, 0


class Progress:
    """Progress of one task: ``advance`` it as work is done (see the module docstring).

    ``enabled=False`` makes it silent (library use, tests of other things); ``terminal``
    forces the bar (True) or the lines (False) instead of asking the console."""

    def __init__(self, label: str, total: int | None = None, unit: str = "items", enabled: bool = True,
                 interval: float | None = None, console=None, terminal: bool | None = None):
        from .console import console as default

        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.console = console or default
        self.interval = INTERVAL if interval is None else interval
        self.terminal = self.console.is_terminal if terminal is None else terminal
        self.done, self.note = 0, ""
        self._task = None
        self._start = self._last = 0.0
        self._printed = False

    def __enter__(self) -> "Progress":
        self._start = self._last = clock()
        if self.enabled and self.terminal:
            self._task = _Bars.add(self.console, self.label, self.total, self.unit)
        return self

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        if not self.enabled:
            return
        now = clock()
        if self._task is not None:
            elapsed = now - self._start
            rate = f"{_rate(self.done / elapsed)}/s" if elapsed > 0 else ""
            _Bars.progress.update(self._task, completed=self.done, rate=rate, note=self.note)
        elif now - self._last >= self.interval and (self.total is None or self.done < self.total):
            # (the last step is left to the closing line)
            self._last = now
            self._printed = True
            self._print(progress_line(self.label, self.done, self.total, self.unit, now - self._start, self.note))

    def __exit__(self, *exc) -> None:
        if self._task is not None:
            _Bars.remove(self._task)
            self._task = None
        elif self.enabled and (self._printed or clock() - self._start >= self.interval):
            # A generator closed after its last item (zip, break) has finished, not stopped.
            stopped = exc[0] is not None and (self.total is None or self.done < self.total)
            self._print(final_line(self.label, self.done, self.total, self.unit, clock() - self._start, self.note)
                        + (" (stopped)" if stopped else ""))

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def track(items: Iterable[T], label: str, total: int | None = None, unit: str = "items",
          enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while reporting their progress (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(label, total, unit, enabled) as p:
        for item in items:
            yield item
            p.advance()
