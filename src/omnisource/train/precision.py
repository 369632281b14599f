"""Mixed precision, memory format and compilation of a training run (``train.amp``, ``train.amp_dtype``,
``train.channels_last``, ``train.compile``).

fp16 autocast needs loss scaling: gradients below fp16's range (~6e-8) flush to zero, so the loss is
multiplied by a dynamic scale before ``backward`` and the gradients are unscaled before clipping and
the optimizer step, which is skipped when they overflowed (``torch.amp.GradScaler``). bf16 has
fp32's exponent range and needs no scaler. ``auto`` picks fp16 on CUDA and bf16 elsewhere
(2–3× on CPUs with AMX, docs/concepts.md).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype(device: torch.device, enabled: bool, name: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None when autocast is off."""
    if not enabled:
        return None
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if name not in DTYPES:
        raise ValueError(f"train.amp_dtype={name!r}: expected auto, float16 or bfloat16")
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype | None):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 autocast; None for bf16 or fp32."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def optimizer_step(optimizer: torch.optim.Optimizer, parameters, clip_grad: float,
                   scaler: torch.amp.GradScaler | None) -> None:
    """Clip (on unscaled gradients) and step; with a scaler the step is skipped on inf/NaN gradients."""
    if scaler is not None:
        if clip_grad > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(parameters, clip_grad)
        scaler.step(optimizer)
        scaler.update()
        return
    if clip_grad > 0:
        nn.utils.clip_grad_norm_(parameters, clip_grad)
    optimizer.step()


def memory_format(model: nn.Module) -> torch.memory_format | None:
    """The input layout: channels_last_3d for networks of 3D convolutions, channels_last for 2D
    ones (a TSN reshapes its clips to frames, so its 2D backbone sees channels_last activations);
    None for networks mixing both ((2+1)D from 2D convs), whose inputs keep their layout."""
    has3d = any(isinstance(m, nn.Conv3d) for m in model.modules())
    has2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return None if has3d and has2d else torch.channels_last_3d if has3d else torch.channels_last


def to_memory_format(x: torch.Tensor, fmt: torch.memory_format | None) -> torch.Tensor:
    """``x`` in ``fmt`` when its rank matches (5-D clips for 3D nets, 4-D images for 2D nets)."""
    if fmt is None or x.dim() != (5 if fmt == torch.channels_last_3d else 4):
        return x
    return x.contiguous(memory_format=fmt)


def _channels_last_weights(model: nn.Module) -> None:
    for m in model.modules():
        fmt = torch.channels_last_3d if isinstance(m, nn.Conv3d) else \
            torch.channels_last if isinstance(m, nn.Conv2d) else None
        if fmt is not None:
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool = False, compile: bool = False,
                  backend: str = "inductor") -> tuple[nn.Module, torch.memory_format | None]:
    """Move ``model`` to ``device`` (conv weights channels-last if asked) and return (the module
    to run forward passes with, the input memory format). The compiled module shares the
    parameters of ``model``; checkpoints keep being written from ``model`` itself, so their
    keys do not change."""
    model.to(device)
    fmt = None
    if channels_last:
        _channels_last_weights(model)
        fmt = memory_format(model)
    forward = torch.compile(model, backend=backend) if compile else model
    return forward, fmt
