"""I3D-style inflation of 2D ResNet weights into the 3D ResNets of :mod:`omnisource.models.resnet3d`.

Inflation (Carreira & Zisserman, "Quo Vadis, Action Recognition?",
CVPR 2017, §2.3 "Bootstrapping 3D filters from 2D filters"): a "boring" static clip (one frame
repeated T times) must give the 2D network's output on that frame.

* ``mode="average"`` (I3D, mmaction2): the 2D kernel is repeated t times along time and divided
  by t. With zero temporal padding the first / last frames of a static clip see only (t-1)/t of
  the signal, so the output equals the 2D one only away from the clip edges; with
  ``temporal_padding="replicate"`` the equality is exact everywhere.
* ``mode="center"``: the 2D kernel goes to the centre temporal slice, the other slices are
  zero. Exact on static clips with either padding (this is what the tests check to 1e-4).
* R(2+1)D: spatial convs take the 2D kernel, temporal convs are initialised to the identity
  (centre tap, or 1/t on every tap for ``"average"``). The mid-channel mismatch (``M`` !=
  ``N_out``) and the extra ReLU between spatial and temporal conv are solved exactly: the first
  ``N_out`` mid channels carry the 2D conv followed by its BN; for a conv that is *not* followed
  by a ReLU in the 2D net (conv2 of a basic block, before the residual add) the next ``N_out``
  mid channels carry the negated conv + BN and the temporal conv computes
  ``relu(z) - relu(-z) = z``; remaining mid channels are zero, and the BN after the temporal
  conv is set to the identity. This needs ``M >= N_out`` (``>= 2 N_out`` for conv2), which the
  §3.5 formula satisfies for every conv of R(2+1)D-18/34 at ``width <= 1``; otherwise a
  ``ValueError`` is raised. (The Kae & Song image-to-video transfer — frozen copied spatial
  convs + a zero-initialised residual temporal branch — is a different architecture and lives
  in ``omnisource.train.transfer``.)
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from .layers3d import Conv2Plus1d

__all__ = ["inflate_from_2d"]


def _inflate_kernel(w2d: torch.Tensor, kt: int, mode: str) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, kt, kh, kw)."""
    if mode == "average":
        return w2d.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
    w = w2d.new_zeros(w2d.shape[:2] + (kt,) + w2d.shape[2:])
    w[:, :, kt // 2] = w2d
    return w


def _bn_keys(prefix: str) -> Tuple[str, ...]:
    return tuple(f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var"))


def _bn_name_for(conv_name: str) -> str:
    """'layer1.0.conv2' -> 'layer1.0.bn2'; 'conv1' -> 'bn1'."""
    head, _, leaf = conv_name.rpartition(".")
    leaf = "bn" + leaf[len("conv"):]
    return f"{head}.{leaf}" if head else leaf


def _inflate_2plus1d(name: str, m: Conv2Plus1d, outer_bn: nn.BatchNorm3d, sd2d, new, mode: str, used: set, errors: List[str]) -> None:
    wkey = f"{name}.weight"
    bn2d_name = _bn_name_for(name)
    bn_keys = _bn_keys(bn2d_name)
    if wkey not in sd2d or any(k not in sd2d for k in bn_keys):
        errors.append(f"{wkey} (+ {bn2d_name}) not in the 2D checkpoint")
        return
    w2d = sd2d[wkey]
    O, M = m.out_channels, m.mid_channels
    if tuple(w2d.shape) != (O, m.in_channels) + tuple(m.spatial.weight.shape[-2:]):
        errors.append(f"{wkey} {tuple(w2d.shape)} does not fit {name}.spatial {tuple(m.spatial.weight.shape)}")
        return
    need = O if m.followed_by_relu else 2 * O
    if M < need:
        raise ValueError(
            f"cannot inflate {name} exactly: {M} mid channels < {need} needed "
            f"({'out' if m.followed_by_relu else '2 x out'} channels); use width <= 1 or a 3D variant"
        )
    g, b, mu, var = (sd2d[k].float() for k in bn_keys)
    sw = torch.zeros_like(m.spatial.weight, dtype=torch.float32)
    bw, bb = torch.zeros(M), torch.zeros(M)
    bm, bv = torch.zeros(M), torch.ones(M)
    sw[:O, :, 0] = w2d
    bw[:O], bb[:O], bm[:O], bv[:O] = g, b, mu, var
    kt = m.temporal.weight.shape[2]
    tw = torch.zeros(O, M, kt)
    eye = torch.eye(O)
    taps = range(kt) if mode == "average" else [kt // 2]
    scale = 1.0 / kt if mode == "average" else 1.0
    for t in taps:
        tw[:, :O, t] = eye * scale
    if not m.followed_by_relu:  # second half carries -z so that relu(z) - relu(-z) = z
        sw[O:2 * O, :, 0] = -w2d
        bw[O:2 * O], bb[O:2 * O], bm[O:2 * O], bv[O:2 * O] = g, -b, -mu, var
        for t in taps:
            tw[:, O:2 * O, t] = -eye * scale
    new[f"{name}.spatial.weight"] = sw
    for k, v in zip(_bn_keys(f"{name}.bn"), (bw, bb, bm, bv)):
        new[k] = v
    new[f"{name}.temporal.weight"] = tw.view(O, M, kt, 1, 1)
    # the block's BN after the temporal conv becomes the identity (the 2D BN moved inside):
    # weight 1, bias 0, running_mean 0, running_var 1 - eps so that x / sqrt(var + eps) == x
    outer_eps = outer_bn.eps
    for k, v in zip(bn_keys, (torch.ones(O), torch.zeros(O), torch.zeros(O), torch.full((O,), 1.0 - outer_eps))):
        new[k] = v
    used.update({wkey, *bn_keys})


def inflate_from_2d(
    model3d: nn.Module,
    state_dict_2d: Dict[str, torch.Tensor],
    mode: str = "average",
    strict: bool = True,
) -> Dict[str, object]:
    """Inflate a 2D ResNet state dict (same depth and width) into ``model3d`` in place.

    See the module docstring for the maths (I3D §2.3) and for R(2+1)D. ``fc`` is copied when
    its shape matches and dropped otherwise. With ``strict``, 2D tensors that find no place and
    3D tensors that get no value are errors (the first few are listed).

    Returns ``{"loaded": n, "classifier": "loaded"|"dropped"|"absent"|"none", "inflated": True}``.
    """
    if mode not in ("average", "center"):
        raise ValueError(f"mode must be 'average' or 'center', got {mode!r}")
    sd2d = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict_2d.items()}
    own = model3d.state_dict()
    new: Dict[str, torch.Tensor] = {}
    used: set = set()
    errors: List[str] = []

    for name, m in model3d.named_modules():
        if isinstance(m, Conv2Plus1d):
            outer_bn = model3d.get_submodule(_bn_name_for(name))
            _inflate_2plus1d(name, m, outer_bn, sd2d, new, mode, used, errors)

    for k, p in own.items():
        if k in new or k.endswith("num_batches_tracked"):
            continue
        if k in ("fc.weight", "fc.bias"):
            continue
        if k not in sd2d:
            errors.append(f"{k} not in the 2D checkpoint")
            continue
        v = sd2d[k]
        used.add(k)
        if p.dim() == 5 and v.dim() == 4 and p.shape[:2] == v.shape[:2] and p.shape[3:] == v.shape[2:]:
            new[k] = _inflate_kernel(v, p.shape[2], mode)
        elif p.shape == v.shape:
            new[k] = v
        else:
            errors.append(f"{k}: 2D {tuple(v.shape)} vs 3D {tuple(p.shape)}")

    classifier = "none"
    if isinstance(getattr(model3d, "fc", None), nn.Linear):
        fw, fb = sd2d.get("fc.weight"), sd2d.get("fc.bias")
        used.update({"fc.weight", "fc.bias"})
        if fw is None:
            classifier = "absent"
        elif fw.shape == own["fc.weight"].shape and fb is not None and fb.shape == own["fc.bias"].shape:
            new["fc.weight"], new["fc.bias"] = fw, fb
            classifier = "loaded"
        else:
            classifier = "dropped"
    unused = [k for k in sd2d if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    if strict and unused:
        errors.append("unused 2D tensors: " + ", ".join(sorted(unused)[:5]) + (" ..." if len(unused) > 5 else ""))
    shape_errors = [e for e in errors if " vs 3D " in e or "does not fit" in e]
    if shape_errors or (strict and errors):
        shown = (shape_errors or errors)[:5]
        more = f" ... (+{len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        raise RuntimeError(f"cannot inflate into {type(model3d).__name__}: " + "; ".join(shown) + more)
    new = {k: v.to(dtype=own[k].dtype) for k, v in new.items()}
    model3d.load_state_dict(new, strict=False)
    return {"loaded": len(new), "classifier": classifier, "inflated": True}

