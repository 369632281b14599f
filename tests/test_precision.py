"""Mixed precision (GradScaler for fp16, none for bf16), gradient accumulation, channels-last,
torch.compile and cross-dataset mixup in the training step."""
import numpy as np
import pytest
import torch

from omnisource.config import TrainConfig
from omnisource.data.datasets import FeatureDataset, make_loader
from omnisource.models import create_model
from omnisource.train.checkpoint import latest_checkpoint, load_training_state
from omnisource.train.loop import cross_partners, fit, mix_across_sources, train_step
from omnisource.train.precision import amp_dtype, make_scaler, prepare_model

CPU = torch.device("cpu")


class Linear(torch.nn.Module):
    def __init__(self, dim=6, classes=3):
        super().__init__()
        self.fc = torch.nn.Linear(dim, classes)
        self.seen_dtypes = []

    def forward(self, x):
        out = self.fc(x.mean(1))
        self.seen_dtypes.append(out.dtype)
        return out


def _loaders(n=48, dim=6, classes=3):
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, n)
    x = (rng.normal(0, 2, (classes, dim))[y][:, None] + rng.normal(0, 1, (n, 4, dim))).astype(np.float32)
    return (make_loader(FeatureDataset(x[:36], y[:36], train=True), 8, True),
            make_loader(FeatureDataset(x[36:], y[36:]), 16, False))


def _cfg(**kw):
    return TrainConfig(**{**dict(epochs=6, batch_size=8, lr=0.05, device="cpu", seed=1), **kw})


def test_bf16_on_cpu_trains_without_a_scaler(tmp_path):
    assert amp_dtype(CPU, True) == torch.bfloat16 and make_scaler(CPU, torch.bfloat16) is None
    train, val = _loaders()
    torch.manual_seed(0)
    model = Linear()
    out = fit(model, train, val, _cfg(amp=True), tmp_path, ["a", "b", "c"])
    assert torch.bfloat16 in model.seen_dtypes  # the forward really ran under bf16 autocast
    assert out["last"]["val"]["top1"] >= 0.75
    assert "scaler" not in load_training_state(latest_checkpoint(tmp_path))


def _fp16_run(tmp_path, device: str):
    train, val = _loaders()
    torch.manual_seed(0)
    model = Linear()
    calls = []
    real = torch.amp.GradScaler.step

    def spy(self, optimizer, *args, **kwargs):
        calls.append(self.get_scale())
        return real(self, optimizer, *args, **kwargs)

    torch.amp.GradScaler.step = spy
    try:
        out = fit(model, train, val, _cfg(amp=True, amp_dtype="auto" if device == "cuda" else "float16",
                                           device=device, clip_grad=1.0), tmp_path, ["a", "b", "c"])
    finally:
        torch.amp.GradScaler.step = real
    assert torch.float16 in model.seen_dtypes
    assert len(calls) == 6 * len(train)  # every optimizer step went through the scaler
    state = load_training_state(latest_checkpoint(tmp_path))
    assert state["scaler"]["scale"] > 0  # saved for an exact resume
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a GradScaler needs CUDA here")
def test_fp16_on_cuda_uses_the_grad_scaler(tmp_path):
    assert amp_dtype(torch.device("cuda"), True) == torch.float16
    out = _fp16_run(tmp_path, "cuda")
    assert out["last"]["val"]["top1"] >= 0.75


def test_fp16_asked_for_on_cpu_also_goes_through_the_scaler(tmp_path):
    _fp16_run(tmp_path, "cpu")


def test_accumulated_small_batches_equal_one_large_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 4, 6), torch.randint(0, 3, (8,))
    cfg = TrainConfig(device="cpu", momentum=0.0, weight_decay=0.0, lr=0.5, optimizer="sgd")
    big, small = Linear(), Linear()
    small.load_state_dict(big.state_dict())
    opt_big = torch.optim.SGD(big.parameters(), lr=0.5)
    opt_small = torch.optim.SGD(small.parameters(), lr=0.5)
    train_step(big, [("target", x, y, 1.0)], opt_big, cfg, 3, CPU)
    before = small.fc.weight.detach().clone()
    train_step(small, [("target", x[:4], y[:4], 1.0)], opt_small, cfg, 3, CPU, step=False, loss_scale=0.5)
    assert torch.equal(small.fc.weight, before)  # no step inside the window
    train_step(small, [("target", x[4:], y[4:], 1.0)], opt_small, cfg, 3, CPU, zero_grad=False, loss_scale=0.5)
    torch.testing.assert_close(small.fc.weight, big.fc.weight)
    assert not torch.equal(small.fc.weight, before)


def test_fit_with_accumulation_steps_once_per_window(tmp_path):
    train, val = _loaders()  # 36 samples, batch 8, drop_last: 4 iterations per epoch
    steps = []
    model = Linear()
    opt_step = torch.optim.SGD.step

    def spy(self, *a, **k):
        steps.append(1)
        return opt_step(self, *a, **k)

    torch.optim.SGD.step = spy
    try:
        fit(model, train, val, _cfg(epochs=2, accumulate=3), tmp_path, ["a", "b", "c"])
    finally:
        torch.optim.SGD.step = opt_step
    assert len(steps) == 2 * 2  # windows of 3 + 1 iterations per epoch


@pytest.mark.parametrize("name", ["r3d_18", "tsn_resnet18"])
def test_channels_last_models_train_and_match_the_default_layout(name):
    torch.manual_seed(0)
    ref = create_model(name, 3, width=0.125, dropout=0.0)
    model = create_model(name, 3, width=0.125, dropout=0.0)
    model.load_state_dict(ref.state_dict())
    forward, fmt = prepare_model(model, CPU, channels_last=True)
    conv = next(m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert fmt == (torch.channels_last_3d if name.startswith("r3d") else torch.channels_last)
    assert conv.weight.is_contiguous(memory_format=fmt)
    x, y = torch.rand(2, 3, 4, 32, 32), torch.tensor([0, 2])
    ref.eval(), model.eval()
    torch.testing.assert_close(model(x), ref(x), atol=1e-4, rtol=1e-4)
    cfg = TrainConfig(device="cpu", channels_last=True)
    stats = train_step(forward, [("target", x, y, 1.0)], torch.optim.SGD(model.parameters(), lr=0.1), cfg, 3, CPU,
                       memory_format=fmt)
    assert np.isfinite(stats["total_loss"])


def test_channels_last_on_a_network_mixing_2d_and_3d_convs():
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0_2plus1d", 3, dropout=0.0)
    ref = create_model("efficientnet_lite0_2plus1d", 3, dropout=0.0)
    ref.load_state_dict(model.state_dict())
    forward, fmt = prepare_model(model, CPU, channels_last=True)
    assert fmt is None  # inputs keep their layout; each conv's weights take its own channels-last layout
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert any(m.weight.dim() == 4 for m in convs) and any(m.weight.dim() == 5 for m in convs)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d if m.weight.dim() == 5
                                      else torch.channels_last) for m in convs)
    x = torch.rand(2, 3, 4, 32, 32)
    model.eval(), ref.eval()
    torch.testing.assert_close(forward(x), ref(x), atol=1e-4, rtol=1e-4)


def test_compiled_training_keeps_checkpoint_keys(tmp_path):
    train, val = _loaders()
    torch.manual_seed(0)
    model = Linear()
    out = fit(model, train, val, _cfg(epochs=2, compile=True, compile_backend="eager"), tmp_path, ["a", "b", "c"])
    from safetensors.torch import load_file

    keys = set(load_file(str(latest_checkpoint(tmp_path) / "model.safetensors")))
    assert keys == {"fc.weight", "fc.bias"}
    assert out["last"]["train"]["target"]["loss"] > 0


def test_cross_partners_are_always_of_another_source():
    torch.manual_seed(0)
    source = torch.tensor([0] * 8 + [1] * 4 + [2] * 4)
    for _ in range(20):
        partner = cross_partners(source)
        assert (source[partner] != source).all()


def test_cross_dataset_mixup_mixes_a_target_and_an_auxiliary_sample():
    np.random.seed(0)
    torch.manual_seed(0)
    x = torch.cat([torch.zeros(4, 2), torch.ones(4, 2)])  # target clips are 0, web clips 1
    t = torch.cat([torch.eye(2)[[0] * 4], torch.eye(2)[[1] * 4]])
    mixed, mt, partner = mix_across_sources(x, t, torch.tensor([0] * 4 + [1] * 4), alpha=0.4)
    lam = 1 - mixed[0, 0].item()  # a target sample: λ·0 + (1-λ)·1
    assert 0 < lam < 1
    torch.testing.assert_close(mixed[:4], torch.full((4, 2), 1 - lam))
    torch.testing.assert_close(mixed[4:], torch.full((4, 2), lam))
    torch.testing.assert_close(mt[:4, 1], torch.full((4,), 1 - lam))  # the targets are mixed the same way

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
            self.inputs = []

        def forward(self, inp):
            self.inputs.append(inp.detach().clone())
            return self.fc(inp)

    model = Recorder()
    cfg = TrainConfig(device="cpu", mixup_alpha=0.4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, [("target", x[:4], torch.zeros(4, dtype=torch.long), 1.0),
                       ("web", x[4:], torch.ones(4, dtype=torch.long), 1.0)], opt, cfg, 2, CPU, cross_mixup=True)
    (seen,) = model.inputs  # one forward over both sources, every sample a blend of a 0 and a 1
    assert seen.shape == (8, 2) and ((seen > 0) & (seen < 1)).all()
