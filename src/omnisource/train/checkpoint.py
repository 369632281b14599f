"""Checkpoints: one folder per epoch, written atomically.

``epoch_NNN/model.safetensors`` holds the weights (loadable without pickle), ``state.pt`` the
optimizer, scheduler position and RNG states needed for an exact resume, ``config.yaml`` the
resolved config. The folder is renamed into place only once complete.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data.manifest import default_mode
from ..workspace import latest_checkpoint  # noqa: F401 - the layout of run folders lives there


def _contiguous_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone to be safe.
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, epoch: int, model, optimizer, extra: dict, config_text: str) -> Path:
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"epoch_{epoch:03d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch_{epoch:03d}.", dir=ckpt_root))
    os.chmod(tmp, default_mode(folder=True))  # mkdtemp makes it 0700
    try:
        save_file(_contiguous_state(model), str(tmp / "model.safetensors"))
        torch.save({"epoch": epoch, "optimizer": optimizer.state_dict(), "rng": rng_state(), **extra},
                   tmp / "state.pt")
        (tmp / "config.yaml").write_text(config_text)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def load_weights(model: torch.nn.Module, path: Path) -> None:
    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    model.load_state_dict(load_file(str(file)))


def load_training_state(path: Path) -> dict:
    # Our own file, written by save_checkpoint: it holds numpy RNG state, hence weights_only=False.
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
