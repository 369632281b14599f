"""``omnisource export``: a trained model as one self-contained graph plus a sidecar ``FILE.json``.

The graph maps ``clips`` — float32 RGB in [0, 1], ``(batch, 3, T, H, W)``, batch dynamic — to
``logits`` and ``probs`` (softmax). Normalisation is inside the graph. In feature mode the graph
is the frozen backbone applied to every frame, then the head (``predict.FeatureNet``), so no
feature cache is needed. The sidecar holds the classes, the input layout and shape, and the
preprocessing that makes such clips from a video (sampler, frames, short side, centre crop).

Formats: ``onnx`` (torch's ``torch.export``-based ONNX exporter, which needs the optional
``onnx`` and ``onnxscript`` packages; the result is checked against torch with onnxruntime when
it is installed) and ``pt2`` (``torch.export.save``; load with ``torch.export.load``).
TorchScript is deprecated in torch 2.13 (``torch.jit.trace`` warns so), hence ``pt2``.
"""
from __future__ import annotations

import importlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.manifest import atomic_write_bytes, atomic_write_text
from ..train.card import card_of
from ..train.checkpoint import select_checkpoint
from .predict import WithProbs, export_runner, inference_network

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
TOLERANCE = 1e-4  # largest |probability difference| accepted between the export and torch


def _example(card: dict, batch: int = 2) -> torch.Tensor:
    """Random clips of the input shape of a card (or sidecar)."""
    pre = card["preprocessing"]
    gen = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, int(pre["frames"]), int(pre["crop"]), int(pre["crop"]), generator=gen)


def sidecar(card: dict, checkpoint: Path, fmt: str, extra: dict | None = None) -> dict:
    pre = card["preprocessing"]
    shape = ["batch", 3, int(pre["frames"]), int(pre["crop"]), int(pre["crop"])]
    return {"format": 1, "omnisource": __version__, "exported_format": fmt, "checkpoint": str(checkpoint),
            "epoch": card.get("epoch"), "classes": card["classes"], "mode": card["mode"], "model": card["model"],
            **({"backbone": card["backbone"]} if "backbone" in card else {}),
            "input": {"name": "clips", "layout": "NCTHW", "shape": shape, "dtype": "float32", "range": [0.0, 1.0],
                      "color": "RGB", "normalised_inside": True},
            "outputs": [{"name": "logits", "shape": ["batch", len(card["classes"])]},
                        {"name": "probs", "shape": ["batch", len(card["classes"])], "note": "softmax of logits"}],
            "preprocessing": pre, **(extra or {})}


def _onnx(net: torch.nn.Module, x: torch.Tensor, out: Path, opset: int | None) -> None:
    try:  # the dynamo exporter needs both: say so in one line before tracing
        for module in ("onnx", "onnxscript"):
            importlib.import_module(module)
    except ImportError:
        raise RuntimeError("export --format onnx needs the onnx and onnxscript packages: "
                           "pip install -c constraints.txt -e '.[onnx]'") from None
    log = logging.getLogger("torch.onnx")  # a warning per torchvision op it skips (none is needed here)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(net, (x,), None, dynamo=True, input_names=["clips"],
                                    output_names=["logits", "probs"], opset_version=opset, verbose=False,
                                    dynamic_shapes={"clips": {0: torch.export.Dim("batch", min=1)}})
    finally:
        log.setLevel(level)
    program.save(str(out))


def _pt2(net: torch.nn.Module, x: torch.Tensor, out: Path) -> None:
    program = torch.export.export(net, (x,), dynamic_shapes={"clips": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(program, str(out))


def check_export(file: Path, net: torch.nn.Module, meta: dict) -> float | None:
    """Max |probability difference| between the exported file and torch on random clips (None when
    onnxruntime is not installed to run an ``.onnx`` file)."""
    x = _example(meta, batch=3)
    with torch.no_grad():
        want = net(x)[1].numpy()
    try:
        run = export_runner(file, meta, torch.device("cpu"))
    except RuntimeError as err:
        if "onnxruntime" in str(err):
            return None
        raise
    return float(np.abs(run(x) - want).max())


def export_model(source: str | Path, output: str | Path | None = None, fmt: str = "onnx",
                 epoch: str | int = "best", opset: int | None = None) -> tuple[Path, dict]:
    """Export a run / epoch folder / weights file to ``output``; returns (file, sidecar). The
    file and ``FILE.json`` are written atomically; an export that disagrees with torch by more
    than ``TOLERANCE`` is an error and is not kept."""
    if fmt not in FORMATS:
        if fmt == "torchscript":
            raise ValueError("--format torchscript: TorchScript is deprecated in torch 2.13; use --format pt2 "
                             "(torch.export) or onnx")
        raise ValueError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    ckpt = select_checkpoint(source, epoch)
    weights = ckpt / "model.safetensors" if ckpt.is_dir() else ckpt
    card = card_of(ckpt)
    net = WithProbs(inference_network(card, weights)).eval()
    if output is None:
        run = ckpt.parent.parent if ckpt.is_dir() and ckpt.parent.name == "checkpoints" else ckpt.parent
        output = run / "export" / f"model{FORMATS[fmt]}"
    out = Path(output).expanduser()
    if out.suffix != FORMATS[fmt]:
        raise ValueError(f"--output {out}: a {fmt} file should end in {FORMATS[fmt]}")
    meta = sidecar(card, ckpt, fmt)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' deprecation chatter about their own internals
            _onnx(net, _example(card), Path(tmp), opset) if fmt == "onnx" else _pt2(net, _example(card), Path(tmp))
        diff = check_export(Path(tmp), net, meta)
        if diff is not None and diff > TOLERANCE:
            raise RuntimeError(f"the exported {fmt} model disagrees with torch (max |Δprob| {diff:.2e} > {TOLERANCE})")
        meta["checked_max_abs_prob_diff"] = diff

    atomic_write_bytes(out, write)
    atomic_write_text(Path(str(out) + ".json"), json.dumps(meta, indent=1))
    return out, meta
