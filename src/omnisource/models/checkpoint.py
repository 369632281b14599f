"""Loading weights from local files into the models of the zoo.

:func:`load_pretrained` is what ``create_model(..., pretrained="<path>")`` uses:

* ``.safetensors`` files, or ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` state dicts read with
  ``torch.load(map_location="cpu", weights_only=True)``; a dict holding the state dict under
  ``"state_dict"``, ``"model"``, ``"model_state"`` or ``"module"`` is unwrapped, and
  ``"module."`` prefixes (DDP / DataParallel) are stripped.
* Classifier tensors (``fc``, ``_fc``, ``classifier``, ``head.fc``, mmaction2's
  ``cls_head.fc_cls``) are loaded into the model's ``fc`` when their shapes agree and dropped
  (the model keeps its fresh ``fc``) when they do not — fine-tuning to another label set.
* A plain 2D backbone checkpoint (torchvision ResNet, lukemelas EfficientNet) loads into the
  ``backbone`` of a TSN; a 2D ResNet checkpoint given to a 3D ResNet is inflated
  (:func:`omnisource.models.inflate3d.inflate_from_2d`).
* Anything else that does not match (missing / unexpected keys, wrong shapes) is an error
  that lists the first few offending keys.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch
from torch import nn

__all__ = ["load_state_dict_file", "load_pretrained", "CLASSIFIER_PREFIXES"]

log = logging.getLogger(__name__)

#: module names treated as "the classifier" in checkpoints
CLASSIFIER_PREFIXES = ("fc", "_fc", "classifier", "head.fc", "cls_head.fc_cls", "fc_cls")
_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")

PathLike = Union[str, "os.PathLike[str]"]


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def _unwrap(obj: Any, source: str) -> Dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}} — at most a few levels
        if _is_tensor_dict(obj):
            break
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict, got {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError(f"{source}: no tensors found (top-level keys: {list(obj)[:8]})")
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def load_state_dict_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or torch (``.pth``/``.pt``/...) file, on CPU,
    unwrapped (``state_dict`` / ``model`` keys) and with ``module.`` prefixes stripped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained checkpoint not found: {path!r} (give 'imagenet', or a path to a .pth/.safetensors file)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return _unwrap(load_file(path, device="cpu"), path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"could not read {path!r} with torch.load(weights_only=True): {type(e).__name__}: {e}. "
            "If you trust the file, load it yourself (torch.load(..., weights_only=False)) and pass the "
            "state dict to omnisource.models.load_pretrained(model, state_dict)"
        ) from e
    return _unwrap(obj, path)


def _split_classifier(sd: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(non-classifier entries, {"weight": ..., "bias": ...} of the checkpoint's classifier)."""
    rest, cls = {}, {}
    for k, v in sd.items():
        prefix, _, leaf = k.rpartition(".")
        if prefix in CLASSIFIER_PREFIXES and leaf in ("weight", "bias"):
            cls[leaf] = v
        else:
            rest[k] = v
    return rest, cls


def _first(keys: List[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _add_backbone_prefix(model: nn.Module, sd: Dict[str, torch.Tensor], model_keys) -> Dict[str, torch.Tensor]:
    """Map a bare 2D-backbone checkpoint onto ``model.backbone`` (TSN) when that matches better;
    conversely strip ``backbone.`` (a TSN checkpoint given to a backbone or a 3D ResNet)."""
    if not sd:
        return sd
    if not isinstance(getattr(model, "backbone", None), nn.Module):
        if all(k.startswith("backbone.") for k in sd) and not any(k.startswith("backbone.") for k in model_keys):
            stripped = {k[len("backbone."):]: v for k, v in sd.items()}
            for inner in ("model.", "net."):  # timm wrapper
                if all(k.startswith(inner) for k in stripped) and not any(k.startswith(inner) for k in model_keys):
                    stripped = {k[len(inner):]: v for k, v in stripped.items()}
            return stripped
        return sd
    if any(k.startswith("backbone.") for k in sd):
        return sd
    best, best_hits = "", sum(k in model_keys for k in sd)
    for prefix in ("backbone.", "backbone.model.", "backbone.net."):
        hits = sum((prefix + k) in model_keys for k in sd)
        if hits > best_hits:
            best, best_hits = prefix, hits
    return {best + k: v for k, v in sd.items()} if best else sd


def load_pretrained(
    model: nn.Module,
    source: Union[PathLike, Mapping[str, torch.Tensor]],
    *,
    strict: bool = True,
    inflate_mode: str = "average",
) -> Dict[str, Any]:
    """Load a checkpoint (path or state dict) into ``model``; see the module docstring.

    Returns a small report: ``{"loaded": n_tensors, "classifier": "loaded"|"dropped"|"absent"|"none",
    "inflated": bool}``. ``strict=False`` ignores missing / unexpected keys (shape mismatches
    outside the classifier are still errors).
    """
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    sd = load_state_dict_file(source) if isinstance(source, (str, os.PathLike)) else _unwrap(dict(source), name)
    own = model.state_dict()
    fc = getattr(model, "fc", None)
    has_fc = isinstance(fc, nn.Linear)
    # classifier: the model's own keys are "fc.weight"/"fc.bias"
    rest, ckpt_cls = _split_classifier(sd)
    rest = _add_backbone_prefix(model, rest, own)

    # 2D ResNet checkpoint into a 3D ResNet -> inflation
    from .inflate3d import inflate_from_2d
    from .resnet3d import ResNet3d

    if isinstance(model, ResNet3d):
        conv = rest.get("conv1.weight")
        if conv is not None and conv.dim() == 4:
            sd2d = dict(rest)
            sd2d.update({f"fc.{k}": v for k, v in ckpt_cls.items()})
            report = inflate_from_2d(model, sd2d, mode=inflate_mode, strict=strict)
            log.info("inflated 2D checkpoint %s into %s", name, type(model).__name__)
            return report

    def ignorable(k: str) -> bool:
        return k.endswith("num_batches_tracked")

    missing = [k for k in own if k not in rest and not ignorable(k) and not (has_fc and k in ("fc.weight", "fc.bias"))]
    unexpected = [k for k in rest if k not in own and not ignorable(k)]
    wrong = [f"{k} {tuple(rest[k].shape)} vs {tuple(own[k].shape)}" for k in rest if k in own and rest[k].shape != own[k].shape]
    problems = []
    if wrong:
        problems.append(f"shape mismatch: {_first(wrong)}")
    if strict and missing:
        problems.append(f"missing in checkpoint: {_first(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected in checkpoint: {_first(unexpected)}")
    if problems:
        raise RuntimeError(f"cannot load {name} into {type(model).__name__}: " + "; ".join(problems))

    to_load = {k: v for k, v in rest.items() if k in own}
    classifier = "none"
    if has_fc:
        if not ckpt_cls:
            classifier = "absent"
        elif all(k in ckpt_cls and ckpt_cls[k].shape == getattr(fc, k).shape for k in ("weight", "bias")):
            to_load["fc.weight"], to_load["fc.bias"] = ckpt_cls["weight"], ckpt_cls["bias"]
            classifier = "loaded"
        else:
            classifier = "dropped"
            log.info(
                "%s: classifier %s dropped (model has %s); fc keeps its fresh init",
                name, tuple(ckpt_cls.get("weight", torch.empty(0)).shape), tuple(fc.weight.shape),
            )
    elif ckpt_cls:
        classifier = "dropped"
    result = model.load_state_dict(to_load, strict=False)
    still_missing = [k for k in result.missing_keys if not ignorable(k) and k not in ("fc.weight", "fc.bias")]
    if strict and still_missing:  # pragma: no cover - guarded above
        raise RuntimeError(f"cannot load {name}: missing {_first(still_missing)}")
    return {"loaded": len(to_load), "classifier": classifier, "inflated": False}
