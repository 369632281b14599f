"""3D ResNets for clips: SlowOnly, R3D and R(2+1)D, plus I3D-style inflation of 2D weights.

Input ``(B, 3, T, H, W)`` RGB in ``[0, 1]`` (ImageNet mean/std normalisation is the first op),
output logits ``(B, num_classes)``. Layer names are those of the 2D ResNet of
:mod:`omnisource.models.resnet` (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc`` ...), so inflating a 2D checkpoint is a name-for-name copy.

Variants (``width`` scales every channel count, ``dropout`` is applied before ``fc``, default 0.5):

* ``slowonly_r50`` / ``slowonly_r101`` — the Slow pathway of SlowFast (Feichtenhofer et al., ICCV
  2019, §3.1 and Table 1), as used by OmniSource (Duan et al. 2020, §4, SlowOnly-4x16 / 8x8):
  stem conv 1x7x7 + max-pool 1x3x3, no temporal downsampling anywhere; bottlenecks of res2/res3
  are purely spatial, bottlenecks of res4/res5 have temporal kernel 3 in their *first* (1x1)
  conv (3x1x1).
* ``slowonly_r18`` — a slim SlowOnly with basic blocks: the first conv of each basic block of
  res4/res5 is 3x3x3, the rest 1x3x3 (mmaction2's ``inflate=(0, 0, 1, 1)`` for basic blocks).
* ``r3d_18`` — R3D (Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
  Recognition", CVPR 2018, §3.1 and Table 1): 3x7x7 stem (stride 1x2x2, no max-pool), every
  block conv 3x3x3, spatio-temporal downsampling (stride 2x2x2) in res3, res4, res5.
* ``r2plus1d_18`` / ``r2plus1d_34`` — R(2+1)D (Tran et al. 2018, §3.5): every t x d x d conv is
  a spatial 1 x d x d conv to ``M`` channels, BN, ReLU, then a temporal t x 1 x 1 conv, with
  ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))`` so that the parameter count matches the
  3D conv. The formula is applied per conv, stem included (3x7x7 from 3 to 64 channels gives
  M = 83; torchvision / VMZ use 45 in the stem and compute conv2's M from the block's input
  width, so their checkpoints do not load shape for shape here).

``stem_pool`` (default: True for SlowOnly, False for R3D / R(2+1)D as in the papers) adds the 2D
ResNet's 1x3x3 max-pool after the stem; only with it is an inflated net spatially identical to
its 2D parent.

Temporal padding: ``temporal_padding="zeros"`` (default; what torchvision / mmaction2 do) or
``"replicate"`` (the clip's first / last frame is repeated in time; spatial padding stays zero).

Inflation (:func:`inflate_from_2d`, Carreira & Zisserman, "Quo Vadis, Action Recognition?",
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

Memory format: the models work with ``model.to(memory_format=torch.channels_last_3d)`` and
inputs ``x.contiguous(memory_format=torch.channels_last_3d)`` (+15-35 % on CPUs for 3D nets).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import IMAGENET_MEAN, IMAGENET_STD, Normalize, StagedResNet, check_clip, make_classifier, scaled_channels

__all__ = [
    "Conv3d",
    "Conv2Plus1d",
    "BasicBlock3d",
    "Bottleneck3d",
    "ResNet3d",
    "inflate_from_2d",
    "r2plus1d_mid_channels",
    "slowonly_r18",
    "slowonly_r50",
    "slowonly_r101",
    "r3d_18",
    "r2plus1d_18",
    "r2plus1d_34",
]

_T3 = Tuple[int, int, int]


def _triple(v) -> _T3:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)  # type: ignore[return-value]


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` with "same" padding and a choice of temporal padding ("zeros" / "replicate").

    Parameters are those of ``nn.Conv3d`` (``weight``, ``bias``), so state dicts are unchanged.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=False, temporal_padding="zeros"):
        k = _triple(kernel_size)
        if temporal_padding not in ("zeros", "replicate"):
            raise ValueError(f"temporal_padding must be 'zeros' or 'replicate', got {temporal_padding!r}")
        self.temporal_padding = temporal_padding
        self._tpad = k[0] // 2
        pad_t = self._tpad if temporal_padding == "zeros" else 0
        super().__init__(in_channels, out_channels, k, stride=_triple(stride), padding=(pad_t, k[1] // 2, k[2] // 2), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal_padding == "replicate" and self._tpad > 0:
            x = F.pad(x, (0, 0, 0, 0, self._tpad, self._tpad), mode="replicate")
        return super().forward(x)


def r2plus1d_mid_channels(in_channels: int, out_channels: int, t: int = 3, d: int = 3) -> int:
    """Tran et al. 2018 §3.5: ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))``."""
    return max(1, (t * d * d * in_channels * out_channels) // (d * d * in_channels + t * out_channels))


class Conv2Plus1d(nn.Module):
    """(2+1)D conv (Tran et al. 2018 §3.5): ``spatial`` (1 x d x d, stride 1 x s x s) -> ``bn`` ->
    ``relu`` -> ``temporal`` (t x 1 x 1, stride st x 1 x 1). The BN after the temporal conv
    belongs to the enclosing block (``bn1``/``bn2``), as after a plain conv.

    ``followed_by_relu`` records whether the enclosing network applies a ReLU right after this
    conv's BN (used by :func:`inflate_from_2d`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=(3, 3, 3),
        stride=1,
        mid_channels: Optional[int] = None,
        temporal_padding: str = "zeros",
        followed_by_relu: bool = True,
    ):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        st, sh, sw = _triple(stride)
        if mid_channels is None:
            mid_channels = r2plus1d_mid_channels(in_channels, out_channels, kt, kh)
        self.in_channels, self.out_channels, self.mid_channels = in_channels, out_channels, mid_channels
        self.followed_by_relu = followed_by_relu
        self.spatial = Conv3d(in_channels, mid_channels, (1, kh, kw), stride=(1, sh, sw))
        self.bn = nn.BatchNorm3d(mid_channels)
        self.relu = nn.ReLU(inplace=True)
        self.temporal = Conv3d(mid_channels, out_channels, (kt, 1, 1), stride=(st, 1, 1), temporal_padding=temporal_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.relu(self.bn(self.spatial(x))))


def _conv(conv_type: str, cin: int, cout: int, k: _T3, stride: _T3, tp: str, followed_by_relu: bool) -> nn.Module:
    if conv_type == "2plus1d" and (k[0] > 1 or max(k[1:]) > 1):
        return Conv2Plus1d(cin, cout, k, stride, temporal_padding=tp, followed_by_relu=followed_by_relu)
    return Conv3d(cin, cout, k, stride, temporal_padding=tp)


class BasicBlock3d(nn.Module):
    """Basic block with convs ``(t1, 3, 3)`` and ``(t2, 3, 3)``; ``conv_type="2plus1d"`` factorises
    both (R(2+1)D). Stride ``(st, s, s)`` on ``conv1``."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=(1, 1, 1), downsample=None, t1=3, t2=3, conv_type="3d", temporal_padding="zeros"):
        super().__init__()
        self.conv1 = _conv(conv_type, inplanes, planes, (t1, 3, 3), stride, temporal_padding, True)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(conv_type, planes, planes, (t2, 3, 3), (1, 1, 1), temporal_padding, False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck3d(nn.Module):
    """Bottleneck ``(t1, 1, 1) -> (t2, 3, 3) -> 1x1x1`` with stride ``(st, s, s)`` on the middle conv
    (SlowOnly: ``t1 = 3`` in res4/res5, ``t2 = 1``)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=(1, 1, 1), downsample=None, t1=1, t2=1, conv_type="3d", temporal_padding="zeros"):
        super().__init__()
        tp = temporal_padding
        self.conv1 = _conv(conv_type, inplanes, planes, (t1, 1, 1), (1, 1, 1), tp, True)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv(conv_type, planes, planes, (t2, 3, 3), stride, tp, True)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = Conv3d(planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet3d(StagedResNet):
    """Generic 3D ResNet; use the named constructors (``slowonly_r50`` ...) or ``create_model``.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage.
        num_classes: classifier size (``0`` = no classifier).
        width: channel multiplier (base channels ``round(64 * width)``).
        dropout: dropout before ``fc``.
        conv_type: ``"3d"`` or ``"2plus1d"``.
        stem_kernel_t: temporal kernel of the stem conv (1 for SlowOnly, 3 for R3D / R(2+1)D).
        stem_pool: 1x3x3 max-pool (stride 1x2x2) after the stem, as in the 2D ResNet.
        temporal_kernels: per stage, ``(t1, t2)`` temporal kernels of the block convs.
        temporal_strides: per stage, temporal stride of the first block.
        temporal_padding: ``"zeros"`` or ``"replicate"``.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        num_classes: int = 400,
        width: float = 1.0,
        dropout: float = 0.5,
        conv_type: str = "3d",
        stem_kernel_t: int = 1,
        stem_pool: bool = True,
        temporal_kernels: Sequence[Tuple[int, int]] = ((1, 1), (1, 1), (3, 1), (3, 1)),
        temporal_strides: Sequence[int] = (1, 1, 1, 1),
        temporal_padding: str = "zeros",
    ):
        super().__init__()
        if conv_type not in ("3d", "2plus1d"):
            raise ValueError(f"conv_type must be '3d' or '2plus1d', got {conv_type!r}")
        block_cls = {"basic": BasicBlock3d, "bottleneck": Bottleneck3d}[block]
        self.width, self.conv_type, self.temporal_padding = float(width), conv_type, temporal_padding
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, ndim=5)
        base = scaled_channels(64, width)
        self.conv1 = _conv(conv_type, 3, base, (stem_kernel_t, 7, 7), (1, 2, 2), temporal_padding, True)
        self.bn1 = nn.BatchNorm3d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if stem_pool else nn.Identity()
        self.inplanes = base
        stages = []
        for i, (n, (t1, t2), st) in enumerate(zip(layers, temporal_kernels, temporal_strides)):
            stride = (st, 1 if i == 0 else 2, 1 if i == 0 else 2)
            stages.append(self._make_layer(block_cls, base * 2**i, n, stride, t1, t2, conv_type, temporal_padding))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.stage_dims: List[int] = [base * 2**i * block_cls.expansion for i in range(4)]
        self.num_features = self.stage_dims[-1]
        self.drop_rate = float(dropout)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.num_classes = num_classes
        self.fc = make_classifier(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block_cls, planes, blocks, stride, t1, t2, conv_type, tp) -> nn.Sequential:
        downsample = None
        if stride != (1, 1, 1) or self.inplanes != planes * block_cls.expansion:
            downsample = nn.Sequential(
                Conv3d(self.inplanes, planes * block_cls.expansion, 1, stride=stride),
                nn.BatchNorm3d(planes * block_cls.expansion),
            )
        kw = dict(t1=t1, t2=t2, conv_type=conv_type, temporal_padding=tp)
        layers = [block_cls(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = planes * block_cls.expansion
        layers += [block_cls(self.inplanes, planes, (1, 1, 1), None, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, type(self).__name__)
        x = self.normalize(x)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


# ---------------------------------------------------------------------------- inflation
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
    model3d: ResNet3d,
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


# ---------------------------------------------------------------------------- constructors
def slowonly_r50(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """SlowOnly-R50 (SlowFast §3.1, Table 1 "Slow pathway"; OmniSource §4)."""
    return ResNet3d("bottleneck", (3, 4, 6, 3), num_classes, width, dropout, **kwargs)


def slowonly_r101(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """SlowOnly-R101 (OmniSource's SlowOnly-8x8-R101)."""
    return ResNet3d("bottleneck", (3, 4, 23, 3), num_classes, width, dropout, **kwargs)


def slowonly_r18(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """Slim SlowOnly with basic blocks; 3x3x3 first conv in res4/res5 blocks."""
    kwargs.setdefault("temporal_kernels", ((1, 1), (1, 1), (3, 1), (3, 1)))
    return ResNet3d("basic", (2, 2, 2, 2), num_classes, width, dropout, **kwargs)


def _tran(conv_type: str, layers, num_classes, width, dropout, kwargs) -> ResNet3d:
    kwargs.setdefault("stem_kernel_t", 3)
    kwargs.setdefault("stem_pool", False)
    kwargs.setdefault("temporal_kernels", ((3, 3),) * 4)
    kwargs.setdefault("temporal_strides", (1, 2, 2, 2))
    return ResNet3d("basic", layers, num_classes, width, dropout, conv_type=conv_type, **kwargs)


def r3d_18(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """R3D-18 (Tran et al. 2018, §3.1, Table 1)."""
    return _tran("3d", (2, 2, 2, 2), num_classes, width, dropout, kwargs)


def r2plus1d_18(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """R(2+1)D-18 (Tran et al. 2018, §3.5)."""
    return _tran("2plus1d", (2, 2, 2, 2), num_classes, width, dropout, kwargs)


def r2plus1d_34(num_classes: int = 400, width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
    """R(2+1)D-34 (Tran et al. 2018, §3.5; Ghadiyaram et al. 2019 use R(2+1)D-34/101/152)."""
    return _tran("2plus1d", (3, 4, 6, 3), num_classes, width, dropout, kwargs)


# ---------------------------------------------------------------------------- registry
from .registry import register_model  # noqa: E402

_PARENT_2D = {"slowonly_r18": 18, "slowonly_r50": 50, "slowonly_r101": 101, "r3d_18": 18, "r2plus1d_18": 18, "r2plus1d_34": 34}


def _register_3d(name: str, ctor):
    depth = _PARENT_2D[name]

    def entry(num_classes: int, imagenet: bool = False, inflate_mode: str = "average", width: float = 1.0, dropout: float = 0.5, **kwargs) -> ResNet3d:
        model = ctor(num_classes=num_classes, width=width, dropout=dropout, **kwargs)
        if imagenet:
            from .resnet import imagenet_state_dict

            sd = imagenet_state_dict(f"resnet{depth}", width, context=f"create_model('{name}', pretrained='imagenet')")
            inflate_from_2d(model, sd, mode=inflate_mode)
        return model

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"{ctor.__doc__} ``imagenet``: inflate torchvision's ImageNet resnet{depth}."
    register_model(name)(entry)


for _name, _ctor in (
    ("slowonly_r18", slowonly_r18),
    ("slowonly_r50", slowonly_r50),
    ("slowonly_r101", slowonly_r101),
    ("r3d_18", r3d_18),
    ("r2plus1d_18", r2plus1d_18),
    ("r2plus1d_34", r2plus1d_34),
):
    _register_3d(_name, _ctor)
