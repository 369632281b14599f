import json
import shutil

import numpy as np
import pytest
import torch

from omnisource.config import TrainConfig
from omnisource.data.datasets import FeatureDataset, make_loader
from omnisource.train.checkpoint import after_epoch, best_epoch, epoch_folders, latest_checkpoint, select_checkpoint
from omnisource.train.loop import (Source, build_optimizer, fit, lr_at, set_lr, soft_cross_entropy, soft_targets,
                                   train_step)


class MeanHead(torch.nn.Module):
    def __init__(self, dim=6, classes=3):
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)
        self.fc = torch.nn.Linear(dim, classes)

    def forward(self, x):
        return self.fc(self.drop(x.mean(1)))


def _data(n=48, t=4, dim=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(0, 2, (classes, dim))
    x = centres[y][:, None, :] + rng.normal(0, 1, (n, t, dim))
    return x.astype(np.float32), y


def _loaders(seed=0):
    x, y = _data(seed=seed)
    train = make_loader(FeatureDataset(x[:36], y[:36], train=True), 8, True)
    val = make_loader(FeatureDataset(x[36:], y[36:]), 16, False)
    return train, val


def _cfg(**kw):
    base = dict(epochs=4, batch_size=8, lr=0.05, mixup_alpha=0.2, label_smoothing=0.1, warmup_epochs=1,
                device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedules():
    cfg = TrainConfig(lr=1.0, epochs=10, warmup_epochs=1, schedule="cosine")
    assert lr_at(0, 10, cfg) == pytest.approx(0.1)
    assert lr_at(9, 10, cfg) == pytest.approx(1.0)
    assert lr_at(10, 10, cfg) == pytest.approx(1.0)
    assert lr_at(99, 10, cfg) < 0.01
    step = TrainConfig(lr=1.0, epochs=10, schedule="step", step_epochs=[5, 8])
    assert [lr_at(s * 10, 10, step) for s in (0, 5, 8)] == pytest.approx([1.0, 0.1, 0.01])


def test_each_parameter_group_follows_the_schedule_at_its_own_scale():
    body, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    cfg = TrainConfig(lr=1.0, epochs=10, warmup_epochs=1, schedule="cosine")
    optimizer = build_optimizer(None, cfg, [{"params": body.parameters(), "lr_scale": 0.1},
                                            {"params": head.parameters()}])
    assert set_lr(optimizer, 4, 10, cfg) == pytest.approx(0.5)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 0.5])


def test_soft_targets_and_loss():
    t = soft_targets(torch.tensor([0, 2]), 3, 0.3)
    assert torch.allclose(t.sum(1), torch.ones(2)) and t[0, 0] == pytest.approx(0.8)
    logits = torch.tensor([[10.0, 0, 0], [0, 0, 10.0]])
    assert soft_cross_entropy(logits, soft_targets(torch.tensor([0, 2]), 3, 0.0)) < 1e-3


def test_train_step_sums_sources_with_weights():
    torch.manual_seed(0)
    model = MeanHead()
    x, y = torch.randn(4, 2, 6), torch.tensor([0, 1, 2, 0])
    cfg = TrainConfig(device="cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.eval()  # the step sets train mode; use a dropout-free check through p=0
    model.drop.p = 0.0
    stats = train_step(model, [("target", x, y, 1.0), ("web", x, y, 0.5)], opt, cfg, 3, torch.device("cpu"))
    assert stats["total_loss"] == pytest.approx(1.5 * stats["target"]["loss"], rel=1e-5)
    assert stats["web"]["n"] == 4


def test_fit_learns_and_writes_checkpoints(tmp_path):
    train, val = _loaders()
    torch.manual_seed(0)
    out = fit(MeanHead(), train, val, _cfg(epochs=6, mixup_alpha=0.0), tmp_path, ["a", "b", "c"])
    assert out["last"]["val"]["top1"] >= 0.75
    assert latest_checkpoint(tmp_path).name == "epoch_006"
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 6


def test_resume_gives_the_same_weights_as_one_run(tmp_path):
    train, val = _loaders()
    torch.manual_seed(0)
    straight = MeanHead()
    fit(straight, train, val, _cfg(), tmp_path / "a", ["a", "b", "c"])
    torch.manual_seed(0)
    first = MeanHead()
    fit(first, train, val, _cfg(epochs=4, keep_checkpoints=0), tmp_path / "b", ["a", "b", "c"])
    # Simulate a kill after epoch 2: drop the later checkpoints, then resume with a fresh model.
    import shutil
    for name in ("epoch_003", "epoch_004"):
        shutil.rmtree(tmp_path / "b" / "checkpoints" / name)
    torch.manual_seed(123)  # a different process state must not matter
    resumed = MeanHead()
    fit(resumed, train, val, _cfg(epochs=4, keep_checkpoints=0), tmp_path / "b", ["a", "b", "c"], resume=True)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 3, 4]  # appended after the resume point


def test_aux_source_is_cycled(tmp_path):
    train, val = _loaders()
    x, y = _data(n=10, seed=5)
    aux = make_loader(FeatureDataset(x, y, train=True), 4, True)
    out = fit(MeanHead(), train, val, _cfg(epochs=2), tmp_path, ["a", "b", "c"], aux=[Source("web", aux, 0.5)])
    assert set(out["last"]["train"]) == {"target", "web"}


def test_multi_dim_soft_labels_are_accepted(tmp_path):
    x, y = _data()
    soft = np.eye(3, dtype=np.float32)[y]
    train = make_loader(FeatureDataset(x[:36], soft[:36], train=True), 8, True)
    val = make_loader(FeatureDataset(x[36:], y[36:]), 16, False)
    torch.manual_seed(0)
    out = fit(MeanHead(), train, val, _cfg(epochs=6, mixup_alpha=0.0), tmp_path, ["a", "b", "c"])
    assert out["last"]["val"]["top1"] >= 0.75  # soft one-hot rows train like hard labels


def test_min_steps_repeats_a_small_target_set_within_each_epoch(tmp_path):
    x, y = _data(n=12)
    train = make_loader(FeatureDataset(x[:6], y[:6], train=True), 4, True)  # one batch per pass
    model = MeanHead()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(m.training))
    fit(model, train, None, _cfg(epochs=3, min_steps=20, mixup_alpha=0.0, warmup_epochs=0, keep_checkpoints=0), tmp_path,
        ["a", "b", "c"])
    assert sum(calls) == 21  # 3 epochs x ceil(20 / 3) passes of 1 batch
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == ["epoch_001", "epoch_002", "epoch_003"]
    from omnisource.train.loop import passes_per_epoch

    assert passes_per_epoch(TrainConfig(epochs=10, min_steps=0), 1) == 1
    assert passes_per_epoch(TrainConfig(epochs=10, min_steps=400), 2) == 20
    assert passes_per_epoch(TrainConfig(epochs=10, min_steps=400), 50) == 1


def test_logit_offset_enters_the_loss_of_its_batch_only():
    torch.manual_seed(0)
    model = MeanHead()
    model.drop.p = 0.0
    x, y = torch.randn(4, 2, 6), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cfg = TrainConfig(device="cpu")
    plain = train_step(model, [("web", x, y, 1.0)], opt, cfg, 3, torch.device("cpu"))
    shifted = train_step(model, [("web", x, y, 1.0, torch.tensor([0.0, 0.0, 5.0]))], opt, cfg, 3,
                         torch.device("cpu"))
    with torch.no_grad():
        logits = model(x) + torch.tensor([0.0, 0.0, 5.0])
    expected = torch.nn.functional.cross_entropy(logits, y).item()
    assert shifted["total_loss"] == pytest.approx(expected, rel=1e-5)
    assert shifted["total_loss"] != pytest.approx(plain["total_loss"])
    assert shifted["web"]["loss"] == pytest.approx(plain["web"]["loss"])  # the stats report the raw logits


def test_frame_logits_carry_each_frame_s_loss_and_a_still_clip_trains_as_its_one_frame():
    from omnisource.models import create_head
    from omnisource.train.loop import per_sample_cross_entropy

    torch.manual_seed(0)
    frames, t = torch.randn(3, 4, 5), soft_targets(torch.tensor([0, 4, 2]), 5, 0.0)
    want = torch.stack([torch.nn.functional.cross_entropy(frames[:, i], t.argmax(1), reduction="none")
                        for i in range(4)], 1).mean(1)
    torch.testing.assert_close(per_sample_cross_entropy(frames, t), want)  # the mean of the frames' own
    assert not torch.allclose(per_sample_cross_entropy(frames.mean(1), t), want)  # not the mean logit's

    head = create_head("frames", 6, 3, 4, dropout=0.0)
    cfg, opt = TrainConfig(device="cpu"), torch.optim.SGD(head.parameters(), lr=0.0)
    image, y, off = torch.randn(2, 1, 6), torch.tensor([1, 2]), torch.tensor([0.0, 2.0, -1.0])
    still = train_step(head, [("web", image.expand(2, 4, 6), y, 1.0, off)], opt, cfg, 3, torch.device("cpu"))
    one = train_step(head, [("web", image, y, 1.0, off)], opt, cfg, 3, torch.device("cpu"))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(head.fc(image[:, 0]) + off, y).item()
    assert still["total_loss"] == pytest.approx(expected, rel=1e-5) == one["total_loss"]
    # The statistics score the clip by the head's test-time output (the frames' mean softmax).
    head.eval()
    with torch.no_grad():
        acc = (head(image).argmax(-1) == y).float().mean().item()
    assert still["web"]["acc"] == acc and still["web"]["n"] == 2


def test_a_frame_level_head_learns_in_fit_and_differs_from_the_tsn_head(tmp_path):
    from omnisource.models import create_head

    train, val = _loaders()
    out, weights = {}, {}
    for kind in ("frames", "tsn"):
        torch.manual_seed(0)
        head = create_head(kind, 6, 3, 4, dropout=0.0)
        out[kind] = fit(head, train, val, _cfg(epochs=6, mixup_alpha=0.0), tmp_path / kind, ["a", "b", "c"])
        weights[kind] = head.fc.weight.detach().clone()
    assert out["frames"]["last"]["val"]["top1"] >= 0.75
    assert not torch.allclose(weights["frames"], weights["tsn"])  # another loss, other weights


def test_best_epoch_is_the_highest_validated_top1_ties_to_class_accuracy_then_later():
    history = [{"epoch": 1, "val": {"top1": 0.5}}, {"epoch": 2}, {"epoch": 3, "val": {"top1": 0.8}},
               {"epoch": 4, "val": {"top1": 0.8}}, {"epoch": 5, "val": {"top1": 0.7}}]
    assert best_epoch(history) == {"epoch": 4, "top1": 0.8}  # a tie: the longer-trained one
    history[2]["val"]["mean_class_accuracy"], history[3]["val"]["mean_class_accuracy"] = 0.7, 0.6
    assert best_epoch(history) == {"epoch": 3, "top1": 0.8}  # a tie in top-1: the better class accuracy
    assert best_epoch([{"epoch": 1}, {"epoch": 2}]) is None  # nothing validated (pre-training)


def test_retention_keeps_the_last_n_and_the_best(tmp_path):
    for e in range(1, 6):
        folder = tmp_path / "checkpoints" / f"epoch_{e:03d}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"x")
        (folder / "model.safetensors").write_bytes(b"x")
    history = [{"epoch": e, "val": {"top1": t}} for e, t in zip(range(1, 6), (0.2, 0.9, 0.5, 0.6, 0.4))]
    assert after_epoch(tmp_path, history, keep=2)["epoch"] == 2
    assert list(epoch_folders(tmp_path)) == [2, 4, 5]
    assert select_checkpoint(tmp_path).name == "epoch_002"  # best by default
    assert select_checkpoint(tmp_path, "last").name == "epoch_005"
    assert select_checkpoint(tmp_path, "4").name == "epoch_004"
    with pytest.raises(FileNotFoundError, match="no checkpoint of epoch 3; kept: 2, 4, 5"):
        select_checkpoint(tmp_path, 3)
    with pytest.raises(ValueError, match="expected last, best or an epoch number"):
        select_checkpoint(tmp_path, "first")
    after_epoch(tmp_path, history, keep=0)  # 0 keeps everything that is there
    assert list(epoch_folders(tmp_path)) == [2, 4, 5]


def test_fit_prunes_checkpoints_and_resumes_from_the_kept_last(tmp_path):
    train, val = _loaders()
    torch.manual_seed(0)
    straight = MeanHead()
    fit(straight, train, val, _cfg(epochs=6, keep_checkpoints=0), tmp_path / "a", ["a", "b", "c"])
    torch.manual_seed(0)
    pruned = MeanHead()
    out = fit(pruned, train, val, _cfg(epochs=4, keep_checkpoints=1), tmp_path / "b", ["a", "b", "c"])
    best = best_epoch(out["history"])["epoch"]
    assert set(epoch_folders(tmp_path / "b")) == {best, 4}
    assert json.loads((tmp_path / "b" / "checkpoints" / "best.json").read_text())["epoch"] == best
    resumed = MeanHead()
    fit(resumed, train, val, _cfg(epochs=6, keep_checkpoints=1), tmp_path / "b", ["a", "b", "c"], resume=True)
    assert 6 in epoch_folders(tmp_path / "b") and len(epoch_folders(tmp_path / "b")) <= 2
    # The schedule of a 4-epoch run differs from a 6-epoch one, so compare epoch 6 of two 6-epoch
    # runs: a straight one and one resumed after pruning.
    torch.manual_seed(0)
    fit(MeanHead(), train, val, _cfg(epochs=6, keep_checkpoints=2), tmp_path / "c", ["a", "b", "c"])
    assert {5, 6} <= set(epoch_folders(tmp_path / "c"))
    shutil.rmtree(tmp_path / "c" / "checkpoints" / "epoch_006")
    again = MeanHead()
    fit(again, train, val, _cfg(epochs=6, keep_checkpoints=2), tmp_path / "c", ["a", "b", "c"], resume=True)
    for (k, a), (_, b) in zip(straight.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_tensorboard_logger_writes_one_point_per_epoch_and_purges_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val = _loaders()
    fit(MeanHead(), train, val, _cfg(epochs=3, log=["tensorboard"], keep_checkpoints=0), tmp_path, ["a", "b", "c"])
    shutil.rmtree(tmp_path / "checkpoints" / "epoch_003")  # killed during epoch 3's checkpoint
    fit(MeanHead(), train, val, _cfg(epochs=3, log=["tensorboard"], keep_checkpoints=0), tmp_path, ["a", "b", "c"],
        resume=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"lr", "train/target/loss", "val/top1"} <= set(events.Tags()["scalars"])
    steps = [e.step for e in events.Scalars("val/top1")]
    assert steps == [1, 2, 3]  # epoch 3 once: the events of the interrupted epoch were purged
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [round(e.value, 6) for e in events.Scalars("val/top1")][-1] == round(log[-1]["val"]["top1"], 6)


def test_a_save_killed_half_way_leaves_no_debris_after_the_next_start(tmp_path):
    train, val = _loaders()
    fit(MeanHead(), train, val, _cfg(epochs=2), tmp_path, ["a", "b", "c"])
    (tmp_path / "checkpoints" / ".best.json.x1.tmp").write_text("{")
    (tmp_path / "checkpoints" / ".epoch_003.abc").mkdir()
    (tmp_path / ".model.json.x2.tmp").write_text("{")
    fit(MeanHead(), train, val, _cfg(epochs=2), tmp_path, ["a", "b", "c"], resume=True)  # nothing left to train
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".epoch_*"))
    assert list(epoch_folders(tmp_path)) == [1, 2]
