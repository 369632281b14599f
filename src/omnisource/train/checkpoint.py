"""Checkpoints: one folder per epoch, written atomically.

``epoch_NNN/model.safetensors`` holds the weights (loadable without pickle), ``state.pt`` the
optimizer, scheduler position and RNG states needed for an exact resume, ``config.yaml`` the
resolved config, ``model.json`` the model card (classes, architecture, preprocessing: see
``train.card``; also in the safetensors metadata, so a weights file copied alone still describes
itself). The folder is renamed into place only once complete.

``checkpoints/best.json`` names the epoch with the best validation top-1; ``after_epoch`` keeps
the last ``train.keep_checkpoints`` epochs plus that one. ``select_checkpoint`` resolves
``--epoch last|best|N`` for a run folder, an epoch folder or a weights file.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data.manifest import atomic_write_text, default_mode
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


CARD_FILE = "model.json"
CARD_KEY = "omnisource.card"  # safetensors metadata key holding the card as JSON


def save_checkpoint(run_dir: Path, epoch: int, model, optimizer, extra: dict, config_text: str,
                    card: dict | None = None) -> Path:
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"epoch_{epoch:03d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch_{epoch:03d}.", dir=ckpt_root))
    os.chmod(tmp, default_mode(folder=True))  # mkdtemp makes it 0700
    card_text = json.dumps(dict(card, epoch=epoch), indent=1) if card else None
    try:
        save_file(_contiguous_state(model), str(tmp / "model.safetensors"),
                  metadata={CARD_KEY: card_text} if card_text else None)
        torch.save({"epoch": epoch, "optimizer": optimizer.state_dict(), "rng": rng_state(), **extra},
                   tmp / "state.pt")
        (tmp / "config.yaml").write_text(config_text)
        if card_text:
            (tmp / CARD_FILE).write_text(card_text)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if card:
        atomic_write_text(Path(run_dir) / CARD_FILE, json.dumps(card, indent=1))
    return final


def epoch_folders(run_dir: Path) -> dict[int, Path]:
    """{epoch: folder} of the complete checkpoints of a run."""
    root = Path(run_dir) / "checkpoints"
    out = {}
    for p in root.glob("epoch_*") if root.is_dir() else ():
        if (p / "state.pt").is_file() and (p / "model.safetensors").is_file() and p.name[6:].isdigit():
            out[int(p.name[6:])] = p
    return dict(sorted(out.items()))


def best_epoch(history: list[dict]) -> dict | None:
    """{"epoch", "top1"} of the first epoch with the highest validation top-1 (None when no epoch
    was validated)."""
    best = None
    for rec in history:
        top1 = (rec.get("val") or {}).get("top1")
        if top1 is not None and (best is None or top1 > best["top1"]):
            best = {"epoch": int(rec["epoch"]), "top1": float(top1)}
    return best


def clear_debris(run_dir: Path) -> None:
    """Remove what a save killed half-way left (temporary epoch folders and files); a run folder
    has one writer, so between saves every temporary is debris."""
    root = Path(run_dir) / "checkpoints"
    for tmp in [*Path(run_dir).glob(f".{CARD_FILE}.*.tmp"), *root.glob(".best.json.*.tmp"), *root.glob(".epoch_*")]:
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def after_epoch(run_dir: Path, history: list[dict], keep: int) -> dict | None:
    """Record the best epoch so far in ``checkpoints/best.json``, delete the checkpoints that are
    neither among the last ``keep`` (0: keep all) nor the best one, and the debris of a killed
    save (also called when a run starts or resumes). Returns the best."""
    run_dir = Path(run_dir)
    clear_debris(run_dir)
    best = best_epoch(history)
    if best is not None:
        atomic_write_text(run_dir / "checkpoints" / "best.json", json.dumps(dict(best, metric="val.top1")))
    if keep > 0:
        epochs = list(epoch_folders(run_dir))
        keep_set = set(epochs[-keep:]) | ({best["epoch"]} if best else set())
        for e in epochs:
            if e not in keep_set:
                shutil.rmtree(run_dir / "checkpoints" / f"epoch_{e:03d}", ignore_errors=True)
    return best


def recorded_best(run_dir: Path) -> int | None:
    try:
        return int(json.loads((Path(run_dir) / "checkpoints" / "best.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def parse_epoch(epoch: str | int) -> str | int:
    """``last``, ``best`` or an epoch number (``--epoch``); ValueError otherwise."""
    text = str(epoch).strip().lower()
    if text in ("last", "best"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"--epoch {epoch}: expected last, best or an epoch number (1, 2, ...)")


def select_checkpoint(path: str | Path, epoch: str | int = "best") -> Path:
    """The epoch folder (or weights file) that ``path`` and ``epoch`` name: a run folder gives its
    ``best`` epoch (the last one when no epoch was validated), its ``last`` one or epoch N; an
    epoch folder or a ``.safetensors`` file is taken as it is."""
    p, want = Path(path), parse_epoch(epoch)
    if not p.exists():
        raise FileNotFoundError(f"{p}: not found (give a run folder, an epoch folder or a weights file)")
    if p.is_file() or (p / "model.safetensors").is_file():
        return p
    if not p.is_dir() or not (p / "checkpoints").is_dir():
        raise FileNotFoundError(f"{p}: not a run folder (no checkpoints/), an epoch folder or a weights file")
    epochs = epoch_folders(p)
    if not epochs:
        raise FileNotFoundError(f"{p}: the run has no complete checkpoint yet; train it first")
    if want == "best":
        want = recorded_best(p) or "last"
        if want != "last" and want not in epochs:
            raise FileNotFoundError(f"{p}: the best epoch {want} has no checkpoint any more (deleted by hand?); "
                                    "use --epoch last")
    if want == "last":
        return epochs[max(epochs)]
    if want not in epochs:
        raise FileNotFoundError(f"{p}: no checkpoint of epoch {want}; kept: {', '.join(map(str, epochs))}")
    return epochs[want]


def load_weights(model: torch.nn.Module, path: Path) -> None:
    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    model.load_state_dict(load_file(str(file)))


def load_training_state(path: Path) -> dict:
    # Our own file, written by save_checkpoint: it holds numpy RNG state, hence weights_only=False.
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
