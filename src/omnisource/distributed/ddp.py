"""Data-parallel training under ``torchrun``: DistributedDataParallel, gloo on
CPU, NCCL on CUDA.

``torchrun --standalone --nproc_per_node=N -m omnisource train -w WS`` (or ``--nnodes`` with a
rendezvous endpoint) starts N processes with RANK / WORLD_SIZE / LOCAL_RANK in their environment;
:func:`setup` joins them into one process group, and without torchrun it does nothing, so the
same command runs as a single process. The rules every training loop follows here:

* ``train.batch_size`` is the **global** batch of one optimizer step: each rank takes its share
  (``batch_size / world_size``), so a config means the same optimisation at any world size.
* Every rank draws the same global batches (a permutation seeded by the config seed and the
  epoch, :class:`ShardedBatchSampler`; ``data.resample.ResampledSampler`` for resampled web
  sources) and keeps its own stride of each, so the shares are disjoint and together they are
  the batch a single process would draw.
* RNG streams for dropout and mixup are per rank, derived from the config seed (:func:`rank_seed`;
  rank 0 keeps the single-process stream).
* A loss term that couples the samples of a batch (the attention of domain adaptation, a softmax
  over the web batch against the target batch) reads the global batch: the ranks all-gather what
  it needs (:func:`gather_rows`, no gradient) and each computes the whole term.
* Only rank 0 writes checkpoints, manifests and logs (``is_main``); the other ranks print nothing.
  Training statistics are summed over ranks (:func:`sum_across`), validation predictions gathered
  (:func:`gather_predictions`).

This module imports nothing of omnisource but the console, so loaders and loops at any level use it.
"""
from __future__ import annotations

import atexit
import datetime
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler, Subset


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job: rank, world size, backend ("" = not distributed)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_current = Dist()


def context() -> Dist:
    """This process's :class:`Dist` (world size 1 until :func:`setup` joins a torchrun job)."""
    return _current


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Join the process group that torchrun's environment describes; a no-op without torchrun.

    The backend is NCCL when this rank trains on CUDA (``device`` auto with a GPU, or cuda), else
    gloo. Non-zero ranks get a quiet console so a line is printed once per job."""
    global _current
    if _current.enabled or not launched_by_torchrun():
        return _current
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={device}: CUDA is not available on this machine (use cpu or auto)")
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(teardown)
    _current = Dist(rank, world, local, backend)
    if rank != 0:
        from ..console import console

        console.quiet = True
    return _current


def teardown() -> None:
    global _current
    if dist.is_initialized():
        dist.destroy_process_group()
    _current = Dist()


def rank_device(device: torch.device, ctx: Dist | None = None) -> torch.device:
    """A rank's own GPU (``cuda:LOCAL_RANK``) when training on CUDA under torchrun."""
    ctx = ctx or context()
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's dropout / mixup stream: the config seed on rank 0, distinct ones elsewhere."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7_919) % (2**31)


def local_batch(global_batch: int, ctx: Dist | None = None, what: str = "train.batch_size") -> int:
    """A rank's share of a global batch; an error when it does not split evenly."""
    ctx = ctx or context()
    if global_batch % ctx.world_size:
        raise ValueError(f"{what}={global_batch} does not split over {ctx.world_size} processes: "
                         f"use a multiple of {ctx.world_size} (it is the global batch of one step)")
    return global_batch // ctx.world_size


def describe_batch(local: int, ctx: Dist | None = None) -> str:
    """A batch as the config means it, from a rank's share: "8" alone, "8 (4 per process)" under
    torchrun (the configured sizes are global, so the log says the global one)."""
    ctx = ctx or context()
    return f"{local * ctx.world_size} ({local} per process)" if ctx.enabled else str(local)


class ShardedBatchSampler(Sampler[list[int]]):
    """Global batches of ``batch_size`` indices from a permutation seeded by (seed, epoch), the
    same on every rank; each rank yields its stride (``rank::world_size``) of every global batch.

    With world size 1 this is plain per-epoch shuffling. The last global batch is dropped with
    ``drop_last``, and also when it holds fewer samples than there are ranks (every rank must
    take the same number of steps)."""

    def __init__(self, size: int, batch_size: int, shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if 0 < size < world_size:
            raise ValueError(f"{size} training samples cannot be shared by {world_size} processes")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split over {world_size} processes")
        self.size, self.batch_size, self.shuffle, self.drop_last = size, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        batches = [order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        last = batches[-1] if batches else []
        if len(batches) > 1 and (len(last) < self.world_size or (self.drop_last and len(last) < self.batch_size)):
            batches.pop()
        return batches

    def __iter__(self):
        for batch in self.global_batches():
            yield batch[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.global_batches())


def wrap(model: torch.nn.Module, device: torch.device, ctx: Dist | None = None) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` under torchrun; the model itself otherwise."""
    ctx = ctx or context()
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)


def barrier(ctx: Dist | None = None) -> None:
    if (ctx or context()).enabled:
        dist.barrier()


def _reduce_device(ctx: Dist) -> torch.device:
    return torch.device("cuda", ctx.local_rank) if ctx.backend == "nccl" else torch.device("cpu")


def sum_across(values: list[float], ctx: Dist | None = None) -> list[float]:
    """Element-wise sums over all ranks (the values themselves without torchrun)."""
    ctx = ctx or context()
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_reduce_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def gather_rows(tensors: list[torch.Tensor], ctx: Dist | None = None) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Every rank's rows of each tensor, concatenated in rank order, and each tensor's row counts
    per rank (the shares of a batch may differ by one). Two collectives for all the tensors: their
    sizes, then their values packed into one float64 vector (exact for float32 values and for
    integers below 2**53). The result is detached: all_gather carries no gradient back to the
    rank that owns a row, so gather only what the loss may treat as a constant."""
    ctx = ctx or context()
    if not ctx.enabled:
        return [t.detach() for t in tensors], [[len(t)] for t in tensors]
    dev = _reduce_device(ctx)
    sizes = torch.tensor([len(t) for t in tensors], dtype=torch.int64, device=dev)
    every = [torch.zeros_like(sizes) for _ in range(ctx.world_size)]
    dist.all_gather(every, sizes)
    counts = torch.stack(every).t().tolist()  # counts[k][r]: rows of tensor k on rank r
    row = [int(math.prod(t.shape[1:])) for t in tensors]
    length = [sum(n * w for n, w in zip(per_rank, row)) for per_rank in zip(*counts)]  # per rank
    flat = torch.cat([t.detach().reshape(-1).to(dev, torch.float64) for t in tensors]
                     + [torch.zeros(max(length) - length[ctx.rank], dtype=torch.float64, device=dev)])
    parts = [torch.empty(max(length), dtype=torch.float64, device=dev) for _ in range(ctx.world_size)]
    dist.all_gather(parts, flat)
    out: list[list[torch.Tensor]] = [[] for _ in tensors]
    for r, part in enumerate(parts):
        at = 0
        for k, t in enumerate(tensors):
            n = counts[k][r] * row[k]
            out[k].append(part[at:at + n].view(counts[k][r], *t.shape[1:]).to(t.device, t.dtype))
            at += n
    return [torch.cat(o) for o in out], counts


def shard_eval_loader(loader: DataLoader, ctx: Dist | None = None) -> DataLoader:
    """The rank's stride of an evaluation loader (no padding, so nothing is counted twice)."""
    ctx = ctx or context()
    if not ctx.enabled:
        return loader
    part = Subset(loader.dataset, range(ctx.rank, len(loader.dataset), ctx.world_size))
    out = DataLoader(part, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                     collate_fn=loader.collate_fn, worker_init_fn=loader.worker_init_fn)
    out.multi_view = getattr(loader, "multi_view", False)
    return out


def gather_predictions(scores, labels, ctx: Dist | None = None):
    """(scores, labels) of every rank's evaluation share, concatenated in rank order."""
    import numpy as np

    ctx = ctx or context()
    if not ctx.enabled:
        return scores, labels
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, (scores, labels))
    parts = [p for p in parts if len(p[1])]
    if not parts:
        return scores, labels
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
