"""Ray Data engine for the embarrassingly parallel stages: ``omnisource features``,
``score`` and ``clean validate`` with ``--engine ray [--ray-address ADDR]``.

A stage hands :func:`map_rows` the rows it has left to do and a picklable *factory*; the rows
become a Ray Dataset (``ray.data.from_items``), ``map_batches`` runs :class:`_Worker` — a callable
class, so Ray keeps it in an actor pool (``ActorPoolStrategy``) and each actor calls the factory
once, i.e. loads the model once — over batches of rows on CPUs, or one GPU per actor when the
cluster has GPUs. Results come back to the stage in row order (``preserve_order``), and the
stage writes the same shards and manifests, with the same code, as the local engine.

Failures: a worker process that dies is restarted and its batch retried by Ray
(``max_restarts`` / ``max_task_retries``, :attr:`RayOptions.retries`); a batch that fails that
often stops the stage with one line. A stage killed outright keeps the shards it wrote, and a
re-run skips them, so no row is lost or written twice.

Priority: Ray runs its workers at nice 15 (its ``worker_niceness``), below anything at normal
priority, so on a shared machine a local Ray loses to the other jobs. ``--ray-niceness N``
(:attr:`RayOptions.niceness`) starts the workers of the local Ray this command starts at the
caller's nice level + N instead (0: the caller's priority; Linux caps it at 19) by setting Ray's
``RAY_worker_niceness`` while the instance starts. Without it ``RAY_worker_niceness`` in the
environment, else Ray's 15, applies. A running cluster's workers (``--ray-address``) were started
by ``ray start``: set the variable there.

``ray`` is an optional extra (``pip install -c constraints.txt -e '.[ray]'``); it is imported
only here, and only when the ray engine is asked for.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Iterator

ENGINES = ("local", "ray")


@dataclass
class RayOptions:
    """How a stage runs on Ray: the cluster, the actor pool and the retries."""
    address: str = ""  # "" starts a local instance sized to this machine; "auto" or ray://host:10001 joins one
    workers: int = 0  # actors in the pool (0: one per CPU, or per GPU when the cluster has GPUs)
    batch_size: int = 64  # rows per map_batches call
    retries: int = 3  # restarts of a dead actor, and retries of its batch
    progress: bool = False  # Ray Data's own progress bars
    niceness: int | None = None  # the workers' nice increment (None: RAY_worker_niceness, else Ray's 15)


class EngineError(RuntimeError):
    """The ray engine cannot run here (extra not installed, cluster unreachable); one line."""


NICENESS = "RAY_worker_niceness"  # Ray's config variable of the workers' nice increment


def check_engine(engine: str, address: str | None = None, niceness: int | None = None) -> RayOptions | None:
    """None for the local engine, RayOptions for ray; an unknown engine, a Ray option given to
    the local engine, or a niceness that cannot apply is an error rather than ignored."""
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "local":
        if address:
            raise ValueError("--ray-address needs --engine ray")
        if niceness is not None:
            raise ValueError("--ray-niceness needs --engine ray")
        return None
    if niceness is not None:
        if isinstance(niceness, bool) or not isinstance(niceness, int) or not 0 <= niceness <= 19:
            raise ValueError(f"--ray-niceness {niceness!r}: expected a whole number from 0 to 19")
        if address:
            raise ValueError(f"--ray-niceness applies to the local Ray a command starts; the workers of the "
                             f"cluster at {address} were started by `ray start`: set {NICENESS} there")
    return RayOptions(address=address or "", niceness=niceness)


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise EngineError(f"--engine ray needs the ray extra: pip install -c constraints.txt -e '.[ray]' ({err})") \
            from None
    return ray


_started: dict[str, Any] = {}  # the niceness of the local Ray this process started


def init(opts: RayOptions):
    """Connect to ``opts.address``, or start a local Ray sized to this machine (all its CPUs and
    GPUs) with its workers at ``opts.niceness``; a no-op when this process is connected already
    (an error when that Ray's workers run at another niceness than asked)."""
    ray = _ray()
    if ray.is_initialized():
        if opts.niceness is not None and _started.get("niceness") != opts.niceness:
            at = _started.get("niceness")
            raise EngineError(f"--ray-niceness {opts.niceness}: this process runs a Ray already, its workers at "
                              + (f"{at}" if at is not None else "a niceness it did not set"))
        return ray
    # The stage prints its own line; Ray Data's per-dataset INFO lines stay in its session log file.
    for handler in logging.getLogger("ray.data").handlers:
        if not type(handler).__name__.endswith("FileHandler"):
            handler.setLevel(logging.WARNING)
    kwargs: dict[str, Any] = dict(include_dashboard=False, configure_logging=False, log_to_driver=True)
    before = os.environ.get(NICENESS)
    try:
        if opts.address:
            ray.init(address=opts.address, **kwargs)
        else:
            if opts.niceness is not None:  # the raylet, and so every worker it starts, inherits it
                os.environ[NICENESS] = str(opts.niceness)
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)  # a new one, not a running cluster
            _started["niceness"] = opts.niceness
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise EngineError(f"could not start or reach Ray at {opts.address or 'a local instance'}: "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    finally:
        if before is None:
            os.environ.pop(NICENESS, None)
        else:
            os.environ[NICENESS] = before
    return ray


def shutdown() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()
    _started.clear()


class _Worker:
    """One actor of the pool: ``factory()`` once (the model is loaded here), then each batch of
    pickled rows through the function it returned (one result per row)."""

    def __init__(self, factory: Callable[[], Callable[[list[dict]], list]], threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.fn = factory()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        rows = [pickle.loads(b) for b in batch["row"]]
        results = self.fn(rows)
        if len(results) != len(rows):
            raise RuntimeError(f"a batch of {len(rows)} rows gave {len(results)} results")
        return {"pos": np.asarray(batch["pos"]), "out": np.array([pickle.dumps(r) for r in results], dtype=object)}


def _pool(ray, opts: RayOptions) -> tuple[int, float]:
    """(actors, GPUs per actor) for this cluster."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    workers = opts.workers or max(1, gpus or int(res.get("CPU", 1)))
    return workers, (1.0 if gpus else 0.0)


def map_rows(rows: list[dict], factory: Callable[[], Callable[[list[dict]], list]],
             opts: RayOptions) -> Iterator[tuple[int, Any]]:
    """(position, result) for every row, in row order, computed by a pool of Ray actors that
    each build their function once with ``factory()`` and apply it to batches of rows."""
    if not rows:
        return
    ray = init(opts)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = opts.progress
    workers, gpus = _pool(ray, opts)
    batch = max(1, min(opts.batch_size, -(-len(rows) // workers)))  # enough batches to keep every actor busy
    items = [{"pos": i, "row": pickle.dumps(r)} for i, r in enumerate(rows)]
    ds = ray.data.from_items(items, override_num_blocks=-(-len(rows) // batch))
    cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)) // workers) if not gpus else 1.0
    ds = ds.map_batches(_Worker, fn_constructor_args=(factory, int(cpus)), batch_size=batch, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus, num_gpus=gpus or None,
                        max_restarts=opts.retries, max_task_retries=opts.retries)
    seen: set[int] = set()
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for pos, blob in zip(out["pos"], out["out"]):
                pos = int(pos)
                if pos in seen:  # Ray hands each finished block over once; guard anyway
                    continue
                seen.add(pos)
                yield pos, pickle.loads(blob)
    except Exception as err:  # noqa: BLE001 - Ray wraps the stage's error in its own types
        if type(err).__module__.startswith("ray"):
            raise EngineError(f"the Ray pipeline failed after {opts.retries} retries: "
                              f"{str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}") \
                from None
        raise
    if len(seen) != len(rows):
        raise EngineError(f"the Ray pipeline returned {len(seen)} of {len(rows)} rows")


class _JobRunner:
    """Factory of a stateless function over jobs (e.g. the validator): nothing to load."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self):
        fn = self.fn
        return lambda jobs: [fn(job["job"]) for job in jobs]


def map_jobs(fn: Callable, jobs: list, opts: RayOptions) -> Iterator:
    """``fn(job)`` for every job, in order, on the Ray cluster (``fn`` must be importable)."""
    for _, result in map_rows([{"job": j} for j in jobs], _JobRunner(fn), opts):
        yield result


def map_shards(shards: list[tuple[Any, list[dict]]], factory: Callable[[], Callable[[list[dict]], list]],
               opts: RayOptions) -> Iterator[tuple[Any, list]]:
    """For shards [(key, rows)]: (key, the results of its rows, None results left out), each
    shard as soon as its last row is back, so the caller writes finished shards while the
    cluster works on the next ones."""
    results = map_rows([r for _, part in shards for r in part], factory, opts)
    for key, part in shards:
        got = [next(results)[1] for _ in part]
        yield key, [r for r in got if r is not None]
