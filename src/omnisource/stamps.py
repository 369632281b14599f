"""Stage stamps: what each stage's outputs were made from (docs/concepts.md).

A stage declared with :func:`stage` (or :func:`training_stage`) writes, whenever it runs — from
its own command or from ``omnisource run`` — a stamp ``.stages/<stage>.json`` holding the
identity of its inputs: digests of the config keys it reads, of its input manifests and files,
and of the teacher checkpoints it uses. ``run`` skips a stage whose stamp matches its inputs
now and whose outputs exist, and runs every other one; since inputs are identified by content,
a changed input re-runs the stage and, through its changed outputs, everything after it.

Training stages never destroy a run silently: a run folder holding checkpoints made from other
inputs is refused (``--resume`` continues it, ``--overwrite`` replaces it), and under ``run``
moved aside to ``runs/.previous/<run>-<time>`` with a line saying so.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .console import console
from .digest import file_hash
from .workspace import Workspace, WorkspaceError, latest_checkpoint

_FILE_DIGESTS: dict[tuple, str] = {}


def value_digest(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    elif isinstance(value, list):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """Content digest of a file (cached by path, size and mtime), of a folder's listing (names and
    sizes: score shards are named by what they hold), or "missing"."""
    p = Path(path)
    if p.is_dir():
        files = sorted((str(f.relative_to(p)), f.stat().st_size) for f in p.rglob("*")
                       if f.is_file() and not f.name.startswith("."))
        return value_digest(files)
    try:
        st = p.stat()
    except OSError:
        return "missing"
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = file_hash(p, "sha1")[:16]
    return _FILE_DIGESTS[key]


def config_inputs(cfg, *keys: str) -> dict[str, str]:
    """{"config <key>": digest} for config sections or dotted fields (``train``, ``features.size``)."""
    out = {}
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if key == "train":  # train.method picks which stages `run` chains, not how a run trains
            value = dataclasses.replace(value, method="supervised")
        out[f"config {key}"] = value_digest(value)
    return out


def file_inputs(ws: Workspace, paths: Iterable[str | Path]) -> dict[str, str]:
    """{"file <path>": digest}; paths inside the workspace are named relative to it."""
    out = {}
    for p in paths:
        p = Path(p)
        try:
            name = str(p.relative_to(ws.root))
        except ValueError:
            name = str(p)
        out[f"file {name}"] = file_digest(p)
    return out


def run_identity(run: Path) -> str:
    """A finished run: digest of its latest weights and of the config it was trained with."""
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return "missing"
    return value_digest([file_digest(ckpt / "model.safetensors"), file_digest(run / "config.yaml")])


def teacher_inputs(ws: Workspace, runs: Iterable[str]) -> dict[str, str]:
    return {f"teacher {name}": run_identity(ws.run(name)) for name in runs}


def changed(stamp: dict | None, inputs: dict[str, str]) -> list[str]:
    """Names of the inputs that differ from the stamp's (all of them when there is none)."""
    old = (stamp or {}).get("inputs", {})
    return sorted(k for k in set(old) | set(inputs) if old.get(k) != inputs.get(k))


def _describe(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


class Stage:
    """A declared stage: ``name`` (str or ``f(cfg, ws, *args)``), ``inputs(cfg, ws, *args, **kw)``
    -> identity dict, ``outputs(cfg, ws, *args, **kw)`` -> paths that must exist."""

    def __init__(self, fn: Callable, name, inputs: Callable, outputs: Callable, in_place: bool = False):
        self.fn, self._name, self._inputs, self._outputs = fn, name, inputs, outputs
        self.in_place = in_place
        functools.update_wrapper(self, fn)

    def stamp_name(self, cfg, ws: Workspace, *args, **kwargs) -> str:
        return self._name(cfg, ws, *args, **kwargs) if callable(self._name) else self._name

    def inputs(self, cfg, workspace, *args, **kwargs) -> dict[str, str]:
        return self._inputs(cfg, Workspace.of(workspace), *args, **kwargs)

    def outputs(self, cfg, workspace, *args, **kwargs) -> list[Path]:
        return list(self._outputs(cfg, Workspace.of(workspace), *args, **kwargs))

    def stale(self, cfg, workspace, *args, **kwargs) -> list[str]:
        """Why the stage must run: changed inputs, missing outputs or an unfinished run ([] = current)."""
        ws = Workspace.of(workspace)
        stamp = ws.read_stamp(self.stamp_name(cfg, ws, *args, **kwargs))
        why = changed(stamp, self.inputs(cfg, ws, *args, **kwargs)) if stamp else ["never run here"]
        if stamp and stamp.get("state") != "done":
            why.append("interrupted")
        missing = [p for p in self.outputs(cfg, ws, *args, **kwargs) if not Path(p).exists()]
        if missing:
            why.append(f"{missing[0]} missing")
        return why

    def __call__(self, cfg, workspace, *args, **kwargs):
        ws = Workspace.of(workspace)
        name, inputs = self.stamp_name(cfg, ws, *args, **kwargs), self.inputs(cfg, ws, *args, **kwargs)
        ws.write_stamp(name, inputs, "running")
        t0 = time.perf_counter()
        out = self.fn(cfg, ws, *args, **kwargs)
        if self.in_place:  # it rewrote its inputs: they are current as it left them
            inputs = self.inputs(cfg, ws, *args, **kwargs)
        ws.write_stamp(name, inputs, "done", seconds=time.perf_counter() - t0)
        return out


def stage(name, inputs: Callable, outputs: Callable = lambda cfg, ws, *a, **k: (), in_place: bool = False):
    """Declare a stage function ``fn(cfg, workspace, ...)``: it writes its stamp when it runs. An
    ``in_place`` stage rewrites its input files (dedup flags web manifests), so its stamp holds
    their identity after the run: it runs again only when something else rewrites them."""
    return lambda fn: Stage(fn, name, inputs, outputs, in_place)


class TrainingStage(Stage):
    """A stage that trains into run folders (``runs(cfg, ws, ...)``). Called with ``resume``
    (continue from the latest checkpoint), ``overwrite`` (start over, deleting the old run) or
    ``auto`` (``omnisource run``: resume an interrupted run of the same inputs, move a run of
    other inputs aside). Without them, a run of other inputs is refused with one line, and a
    finished run of the same inputs is up to date. A stale metrics.json never survives."""

    def __init__(self, fn, name, inputs, runs: Callable):
        super().__init__(fn, name, inputs, lambda cfg, ws, *a, **k: [])
        self._runs = runs

    def runs(self, cfg, workspace, *args, **kwargs) -> list[Path]:
        return list(self._runs(cfg, Workspace.of(workspace), *args, **kwargs))

    def stale(self, cfg, workspace, *args, **kwargs) -> list[str]:
        why = super().stale(cfg, workspace, *args, **kwargs)
        missing = [r for r in self.runs(cfg, workspace, *args, **kwargs) if latest_checkpoint(r) is None]
        return why + ([f"{missing[0]} has no checkpoint"] if missing else [])

    def __call__(self, cfg, workspace, *args, resume: bool = False, overwrite: bool = False, auto: bool = False,
                 **kwargs):
        ws = Workspace.of(workspace)
        name, inputs = self.stamp_name(cfg, ws, *args, **kwargs), self.inputs(cfg, ws, *args, **kwargs)
        runs = self.runs(cfg, ws, *args, **kwargs)
        label = ", ".join(str(r.relative_to(ws.root)) if r.is_relative_to(ws.root) else str(r) for r in runs)
        stamp = ws.read_stamp(name)
        diff = changed(stamp, inputs) if stamp else ["no stamp"]
        trained = [r for r in runs if latest_checkpoint(r) is not None]
        main = _main_process()
        if overwrite:
            for r in runs if main else ():
                shutil.rmtree(r, ignore_errors=True)
        elif resume or not trained:
            pass
        elif not diff and stamp.get("state") == "done" and len(trained) == len(runs):
            console.print(f"[dim]{name}: up to date ({label}; --overwrite trains it again)[/]")
            return runs[-1]
        elif not diff:
            console.print(f"{name}: resuming the interrupted run {label}")
            resume = True
        elif auto:
            for r in trained if main else ():
                dest = ws.runs_dir / ".previous" / f"{r.name}-{time.strftime('%Y%m%d-%H%M%S')}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                r.rename(dest)
                console.print(f"[yellow]{name}: inputs changed ({_describe(diff)}); the earlier run "
                              f"moved to {dest}[/]", soft_wrap=True)
        else:
            why = "was trained from other inputs" if stamp else "already holds a run"
            raise WorkspaceError(f"{label} {why} ({_describe(diff)}): pass --resume to continue it, --overwrite "
                                 "to replace it, or train.run_name=NAME for a new run")
        if main:
            for r in runs:  # metrics of earlier weights must not pass for this run's
                (r / "metrics.json").unlink(missing_ok=True)
            ws.write_stamp(name, inputs, "running")
        t0 = time.perf_counter()
        out = self.fn(cfg, ws, *args, resume=resume, **kwargs)
        if main:
            ws.write_stamp(name, inputs, "done", seconds=time.perf_counter() - t0)
        return out


def _main_process() -> bool:
    """Under torchrun only rank 0 writes stamps and moves or deletes runs; the others only read."""
    return int(os.environ.get("RANK", "0")) == 0


def training_stage(name, inputs: Callable, runs: Callable):
    """Declare a training stage ``fn(cfg, workspace, ..., resume=False)`` (see :class:`TrainingStage`)."""
    return lambda fn: TrainingStage(fn, name, inputs, runs)
