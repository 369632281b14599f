"""Class resampling of unbalanced auxiliary sets (OmniSource §3.3, Table 10).

``none`` keeps the natural distribution, ``clip`` caps each class at N_c samples' worth of
probability, ``power`` draws class c with probability ∝ N_c^p (p=0.5 square-root, the
IG-65M recipe; p=0.2 is OmniSource's best). Within a class, samples are equally likely.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def class_weights(counts: np.ndarray, mode: str = "none", clip: int = 0, power: float = 0.5) -> np.ndarray:
    """Probability mass per class (sums to 1 over classes with samples)."""
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        mass = counts.copy()
    elif mode == "clip":
        if clip <= 0:
            raise ValueError("resampling mode 'clip' needs a positive clip count N_c")
        mass = np.minimum(counts, clip)
    elif mode == "power":
        mass = np.where(counts > 0, counts ** power, 0.0)
    else:
        raise ValueError(f"unknown resampling mode {mode!r}; expected none, clip or power")
    total = mass.sum()
    return mass / total if total > 0 else mass


def sample_weights(labels: np.ndarray, num_classes: int, mode: str = "none", clip: int = 0,
                   power: float = 0.5) -> np.ndarray:
    """Per-sample probabilities (N,) whose class marginals follow ``class_weights``."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    per_class = class_weights(counts, mode, clip, power)
    w = per_class[labels] / np.maximum(counts[labels], 1)
    return w / w.sum() if w.sum() > 0 else w


class ResampledSampler(Sampler[int]):
    """Draws ``num_samples`` indices per rank and epoch: from ``weights`` with replacement, or
    (``weights=None``) as consecutive random permutations, i.e. plain shuffling.

    Every rank draws the same sequence from a generator seeded by (seed, epoch) and keeps its
    own stride of it, so a distributed run sees exactly the samples a single process would, and
    an epoch always covers the same draws, which keeps resumed runs exact.
    """

    def __init__(self, weights: np.ndarray | None, num_samples: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, size: int | None = None):
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.size = len(self.weights) if self.weights is not None else int(size or 0)
        if self.size == 0:
            raise ValueError("cannot sample from an empty set")
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def all_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.num_samples * self.world_size
        if self.weights is not None:
            return torch.multinomial(self.weights, total, replacement=True, generator=g).tolist()
        perms = [torch.randperm(self.size, generator=g) for _ in range(-(-total // self.size))]
        return torch.cat(perms)[:total].tolist()

    def __iter__(self):
        return iter(self.all_indices()[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.num_samples
