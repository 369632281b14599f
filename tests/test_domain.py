"""Domain-adaptation pieces (Kae & Song): GRL, β schedule, discriminators, bilinear attention,
the DA training step and the attention log, on tiny inputs worked out by hand."""
import json
import math

import pytest
import torch

from omnisource.config import DAConfig, TrainConfig
from omnisource.models.domain import (BilinearAttention, DomainDiscriminator, attention_weights, beta_at,
                                      bilinear_similarity, domain_loss, grad_reverse, top_t_count, top_t_sum)
from omnisource.models.inflate2plus1 import FrameAdapter
from omnisource.train.transfer import AttentionLog, DANet, da_step


def test_grad_reverse_is_identity_forward_and_flips_the_gradient():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_beta_schedules():
    assert beta_at(0.0) == beta_at(0.7) == 0.5
    assert beta_at(0.0, 0.5, "dann") == 0.0
    # 2 / (1 + e^-5) - 1 = tanh(2.5)
    assert beta_at(0.5, 0.5, "dann", 10.0) == pytest.approx(0.5 * math.tanh(2.5))
    assert beta_at(1.0, 1.0, "dann", 10.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    with pytest.raises(ValueError, match="schedule"):
        beta_at(0.1, 0.5, "linear")


def test_bilinear_similarity_top_t_and_softmax_by_hand():
    web = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    e = bilinear_similarity(web, target, w)
    assert torch.equal(e, torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 4.0]]))
    assert torch.equal(top_t_sum(e, 2), torch.tensor([2.0, 6.0]))
    assert (top_t_count(10), top_t_count(3), top_t_count(1), top_t_count(32)) == (9, 3, 1, 29)
    a = attention_weights(torch.tensor([0.0, math.log(3.0)]), 1.0)
    assert torch.allclose(a, torch.tensor([0.25, 0.75]))
    assert torch.allclose(attention_weights(torch.tensor([0.0, 2 * math.log(3.0)]), 2.0), a)
    with pytest.raises(ValueError):
        attention_weights(torch.zeros(2), 0.0)


def test_attention_module_favours_web_samples_like_the_target():
    att = BilinearAttention(2, top_ratio=1.0, tau=1.0)  # W = I, unit vectors: e = cosine
    web = torch.tensor([[3.0, 0.0], [0.0, 5.0]])
    target = torch.tensor([[2.0, 0.0], [7.0, 0.0]])
    # s = [1 + 1, 0 + 0] -> α = softmax([2, 0])
    expected = torch.tensor([math.exp(2), 1.0]) / (math.exp(2) + 1)
    assert torch.allclose(att(web, target), expected)


def test_discriminator_concatenates_stages_and_checks_dims():
    torch.manual_seed(0)
    disc = DomainDiscriminator([2, 3], hidden=4).eval()
    a, b = torch.randn(5, 2), torch.randn(5, 3)
    assert torch.allclose(disc([a, b]), disc.net(torch.cat([a, b], 1)).squeeze(1))
    with pytest.raises(ValueError, match="dims"):
        disc([b, a])


def test_domain_loss_is_binary_cross_entropy():
    class Const(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, f):
            return torch.full((f[0].shape[0],), self.v)

    f = [torch.zeros(3, 2)]
    assert domain_loss(Const(0.0), f, f).item() == pytest.approx(math.log(2))
    # a labelled 1, b labelled 0: logits +2 everywhere -> (3·log(1+e^-2) + 3·log(1+e^2)) / 6
    want = (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2
    assert domain_loss(Const(2.0), f, f).item() == pytest.approx(want, rel=1e-6)


def test_encoder_gets_the_reversed_discriminator_gradient():
    torch.manual_seed(0)
    enc, disc = torch.nn.Linear(3, 2), DomainDiscriminator([2], hidden=4).eval()
    xa, xb = torch.randn(4, 3), torch.randn(4, 3)
    domain_loss(disc, enc(xa), enc(xb)).backward()
    plain = enc.weight.grad.clone()
    disc_plain = disc.net[0].weight.grad.clone()
    enc.zero_grad()
    disc.zero_grad()
    domain_loss(disc, grad_reverse(enc(xa), 0.5), grad_reverse(enc(xb), 0.5)).backward()
    assert torch.allclose(enc.weight.grad, -0.5 * plain, atol=1e-7)
    assert torch.allclose(disc.net[0].weight.grad, disc_plain)  # the discriminator itself is not reversed


def _batches(n=6, d=5, classes=3):
    g = torch.Generator().manual_seed(1)
    return {"image": (torch.randn(n, 1, d, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])),
            "frame": (torch.randn(n, 1, d, generator=g), torch.tensor([2, 2, 1, 1, 0, 0])),
            "target": (torch.randn(n, 1, d, generator=g), torch.full((n,), -1))}


def test_da_step_without_attention_or_da_is_the_mean_cross_entropy():
    torch.manual_seed(0)
    model = FrameAdapter(5, 3, hidden=4, dropout=0.0)
    net = DANet(model, DAConfig(attention=False, adversarial=False), ["image", "frame", "target"])
    assert len(net.discs) == 0 and net.attention is None
    b = _batches()
    with torch.no_grad():
        want = {k: torch.nn.functional.cross_entropy(model(b[k][0]), b[k][1]).item() for k in ("image", "frame")}
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    out = da_step(net, b, opt, 0.5, TrainConfig(), 3, torch.device("cpu"))
    assert out["losses"] == pytest.approx({"ce_image": want["image"], "ce_frame": want["frame"]}, rel=1e-5)
    assert out["total_loss"] == pytest.approx(want["image"] + want["frame"], rel=1e-5)
    assert torch.allclose(out["alpha"]["image"], torch.full((6,), 1 / 6))


def test_da_step_logs_every_term_and_trains_discriminators():
    torch.manual_seed(0)
    model = FrameAdapter(5, 3, hidden=4, dropout=0.0)
    net = DANet(model, DAConfig(), ["image", "frame", "target"])
    assert set(net.discs) == {"target_image", "target_frame", "image_frame"}
    assert net.discs["target_image"].dims == [4, 4]  # multi-layer: both adapter stages
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.discs["image_frame"].parameters()]
    out = da_step(net, _batches(), opt, 0.5, TrainConfig(), 3, torch.device("cpu"))
    assert set(out["losses"]) == {"ce_image", "ce_frame", "domain_target_image", "domain_target_frame",
                                  "domain_image_frame"}
    assert out["total_loss"] == pytest.approx(sum(out["losses"].values()), rel=1e-6)
    for a in out["alpha"].values():
        assert a.sum().item() == pytest.approx(1.0) and (a > 0).all()
    after = list(net.discs["image_frame"].parameters())
    assert any(not torch.equal(x, y) for x, y in zip(before, after))
    # a discriminator needs both its domains: without web images only target_frame remains
    only = DANet(FrameAdapter(5, 3, hidden=4), DAConfig(multi_layer=False), ["frame", "target"])
    assert set(only.discs) == {"target_frame"} and only.discs["target_frame"].dims == [4]


def test_attention_log_means_and_file_order(tmp_path):
    log = AttentionLog()
    log.add("image", ["a", "b"], torch.tensor([0.25, 0.75]))  # n·α = 0.5, 1.5
    log.add("image", ["a", "c"], torch.tensor([0.5, 0.5]))  # 1.0, 1.0
    rows = AttentionLog(log.state()).rows()  # survives a checkpoint round trip
    assert [(r["id"], r["weight"], r["draws"]) for r in rows] == [("a", 0.75, 2), ("c", 1.0, 1), ("b", 1.5, 1)]
    log.write(tmp_path / "attention.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "attention.jsonl").read_text().splitlines()]
    assert lines[0] == {"id": "a", "source": "image", "weight": 0.75, "draws": 2}


def test_da_step_under_autocast():
    torch.manual_seed(0)
    net = DANet(FrameAdapter(5, 3, hidden=4), DAConfig(), ["image", "frame", "target"])
    out = da_step(net, _batches(), torch.optim.SGD(net.parameters(), lr=0.1), 0.5, TrainConfig(amp=True), 3,
                  torch.device("cpu"))
    assert all(math.isfinite(v) for v in out["losses"].values()) and len(out["losses"]) == 5
