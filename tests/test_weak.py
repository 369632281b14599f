"""Weak-label pre-training data (tag draw, square-root resampling, tail-preserving subsampling,
clip selection) and fine-tune / linear-probe preparation, on tiny inputs worked out by hand."""
import numpy as np
import pytest
import torch

from omnisource.data.resample import sample_weights
from omnisource.models import create_head, create_model
from omnisource.train.probe import finetune_groups, linear_probe_groups
from omnisource.weak import labels as wl


def test_draw_tags_one_of_the_sample_tags_per_epoch():
    tags = [[0], [1, 2], [0, 1, 2]]
    draws = np.stack([wl.draw_tags(tags, seed=3, epoch=e) for e in range(60)])
    assert (draws[:, 0] == 0).all()
    assert set(draws[:, 1]) == {1, 2} and set(draws[:, 2]) == {0, 1, 2}
    assert (wl.draw_tags(tags, 3, 7) == wl.draw_tags(tags, 3, 7)).all()  # same epoch, same draw
    with pytest.raises(ValueError, match="at least one tag"):
        wl.draw_tags([[0], []], 0, 0)


def test_vocabulary_and_encoding():
    vocab = wl.tag_vocabulary([["surf", "beach"], ["archery"], ["surf"]])
    assert vocab == ["archery", "beach", "surf"]
    assert wl.encode_tags([["surf", "beach"], ["archery"]], vocab) == [[2, 1], [0]]


def test_square_root_resampling():
    # Classes with 9 and 1 samples: class mass 3 : 1, i.e. 3/4 and 1/4.
    tags = [[0]] * 9 + [[1]]
    w = wl.tag_sample_weights(tags, 2, power=0.5)
    assert w[:9].sum() == pytest.approx(0.75) and w[9] == pytest.approx(0.25)
    assert np.allclose(w, sample_weights(np.array([t[0] for t in tags]), 2, "power", power=0.5))
    # A two-tag sample counts 1/2 for each tag: counts (1.5, 0.5), masses sqrt(1.5), sqrt(0.5).
    w2 = wl.tag_sample_weights([[0], [0, 1]], 2, power=0.5)
    m0, m1 = np.sqrt(1.5), np.sqrt(0.5)
    raw = np.array([m0 / 1.5, 0.5 * m0 / 1.5 + 0.5 * m1 / 0.5])
    assert np.allclose(w2, raw / raw.sum())


def test_tail_preserving_subsample():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    # cap 4: 4 + 4 + 2 = 10 <= 11 (cap 5 would need 12); one left over goes to the largest class.
    keep = wl.tail_preserving_subsample(labels, 11, seed=0)
    assert len(keep) == 11 and len(set(keep)) == 11
    assert np.bincount(labels[keep]).tolist() == [5, 4, 2]
    assert set(np.flatnonzero(labels == 2)) <= set(keep)  # the tail class is whole
    assert wl.tail_preserving_subsample(labels, 100).tolist() == list(range(17))
    assert np.bincount(labels[wl.tail_preserving_subsample(labels, 6)], minlength=3).tolist() == [2, 2, 2]


def test_select_clips_fixed_videos_and_minutes():
    durations = [30.0, 120.0, 60.0, 5.0]
    # Two videos, longest first, one centre clip of 10 s each.
    assert wl.select_clips(durations, 10, budget_videos=2, prefer="long") == [(1, 55.0, 65.0), (2, 25.0, 35.0)]
    # 1.5 minutes of short videos: 5 s + 30 s + 60 s = 95 s fits, 120 s more would not.
    clips = wl.select_clips(durations, 10, budget_minutes=1.6, prefer="short")
    assert [c[0] for c in clips] == [3, 0, 2]
    assert clips[0] == (3, 0.0, 5.0)  # shorter than a clip: the whole video
    # Every non-overlapping clip of a 30 s video; random positions stay inside their thirds.
    assert wl.select_clips([30.0], 10, clips_per_video=0) == [(0, 0.0, 10.0), (0, 10.0, 20.0), (0, 20.0, 30.0)]
    rnd = wl.select_clips([100.0], 10, clips_per_video=2, position="random", seed=1)
    assert 0 <= rnd[0][1] <= 40 and 50 <= rnd[1][1] <= 90
    with pytest.raises(ValueError, match="video preference"):
        wl.select_clips(durations, prefer="middle")


def test_finetune_new_head_and_per_layer_lr():
    torch.manual_seed(0)
    head = create_head("temporal", 16, 7, 4, hidden_dim=8)
    body_before = head.temporal.weight.detach().clone()
    groups = finetune_groups(head, 3, body_lr_scale=0.1)
    assert head.fc.out_features == 3
    scales = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scales[id(head.temporal.weight)] == 0.1 and scales[id(head.fc.weight)] == 1.0
    assert len(scales) == len(list(head.parameters()))
    assert torch.equal(head.temporal.weight, body_before)  # the body is kept


def test_linear_probe_freezes_body_and_batchnorm():
    torch.manual_seed(0)
    model = create_model("tsn_resnet18", 5, pretrained=None, width=0.25)
    groups = linear_probe_groups(model, 2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(model.fc.weight), id(model.fc.bias)}
    assert sum(len(g["params"]) for g in groups) == 2
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    model.train()
    assert not bn.training and model.fc.training
    opt = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.1)
    conv = next(p for p in model.backbone.parameters() if p.ndim == 4)
    body = conv.detach().clone()
    loss = model(torch.rand(2, 3, 2, 32, 32) * 3).logsumexp(-1).sum()
    loss.backward()
    opt.step()
    assert torch.equal(bn.running_mean, stats)  # running statistics untouched in training
    assert torch.equal(conv, body)
    assert model.fc.out_features == 2


# ----------------------------------------------------------------------------- CLI chain


def test_cli_spl_pretrain_then_finetune_and_probe(tmp_path):
    import json

    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from omnisource.cli import app
    from omnisource.data.manifest import read_manifest
    from omnisource.demo.synthetic import generate, web_manifests

    root = tmp_path / "data"
    generate(root, groups=3, clips_per_group=2, web_per_class=3, size=48, frames=12, untrimmed_per_class=1)
    m = web_manifests(root)
    ws = tmp_path / "ws"
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{m['images']}'}}, "
           f"{{name: untrimmed, kind: untrimmed, format: manifest, root: '{m['untrimmed']}'}}]")
    base = ["-w", str(ws), f"target.root={root / 'videos'}", "target.val_groups=['01']", "features.size=32",
            "features.frames=4", "features.head=temporal", "train.epochs=2", "train.optimizer=adamw",
            "omni.clip_seconds=2", "weak.labels=spl_b", web]
    runner = CliRunner()

    def invoke(*args, code=0):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == code, result.output
        return result.output

    for cmd in ("import", "import-web", "features", "train", "score", "weak-labels", "pretrain"):
        invoke(cmd, *base)
    weak = read_manifest(ws / "manifests" / "weak.parquet")
    doc = json.loads((ws / "manifests" / "weak.labelmap.json").read_text())
    n = len(read_manifest(ws / "manifests" / "target.parquet").classes)
    assert doc["num_classes"] == 2 * n == len(weak.classes)
    # Noise ratio: the share of used samples whose teacher disagrees with the query. SPL keeps every
    # diagonal cell, so the samples it drops disagree too.
    disagree = sum(r["teacher_pred"] != doc["classes"][r["label"]]["weak"] for r in weak.rows)
    assert doc["of"] > 0 and doc["noise_ratio"] == pytest.approx((disagree + doc["of"] - doc["samples"]) / doc["of"])
    assert weak.rows and all(0 <= r["label"] < 2 * n for r in weak.rows)
    clips = [r for r in weak.rows if r.get("parent_id")]
    assert clips and all(r["end_s"] - r["start_s"] <= 2.0 + 1e-6 for r in clips)
    invoke("probe", *base, "--checkpoint", ws / "runs" / "pretrain")
    invoke("finetune", *base)  # default checkpoint: runs/<weak.pretrain_run>
    pre = load_file(str(ws / "runs" / "pretrain" / "checkpoints" / "epoch_002" / "model.safetensors"))
    probe = load_file(str(ws / "runs" / "probe" / "checkpoints" / "epoch_002" / "model.safetensors"))
    tuned = load_file(str(ws / "runs" / "finetune" / "checkpoints" / "epoch_002" / "model.safetensors"))
    assert pre["fc.weight"].shape[0] == 2 * n and probe["fc.weight"].shape[0] == n == tuned["fc.weight"].shape[0]
    assert torch.equal(probe["temporal.weight"], pre["temporal.weight"])  # the body loaded and frozen
    assert not torch.equal(tuned["temporal.weight"], pre["temporal.weight"])  # fine-tuned
    for run in ("probe", "finetune"):
        m = json.loads((ws / "runs" / run / "metrics.json").read_text())
        cm = np.array(m["confusion_matrix"])  # top-1 is what the run's own confusion matrix says
        assert cm.sum() == m["num_samples"] > 0 and m["top1"] == pytest.approx(np.trace(cm) / cm.sum())
    out = invoke("finetune", *base, "--checkpoint", tmp_path / "missing", code=2)
    assert "not found" in out and "Traceback" not in out
    assert "weak.k" in invoke("weak-labels", *base, "weak.k=0", code=2)
    # Tags as labels (no teacher), one video under the budget, cut to 5 samples keeping the tail.
    invoke("weak-labels", *base, "weak.labels=weak", "weak.budget_videos=1", "weak.budget_samples=5")
    tags = read_manifest(ws / "manifests" / "weak.parquet")
    assert len(tags.rows) == 5 and len({r["parent_id"] for r in tags.rows if r.get("parent_id")}) <= 1
    assert all(tags.classes[r["label"]] == r["weak_labels"][0] for r in tags.rows)


def test_pixel_checkpoint_with_other_classes_loads_for_probe(tmp_path):
    """Pixel mode: a checkpoint pre-trained on 4 (SPL) classes becomes a 3-class model whose body
    is the checkpoint's and whose classifier is new, as transfer_stage builds it."""
    from safetensors.torch import save_file

    from omnisource.weak.stage import resolve_checkpoint

    torch.manual_seed(0)
    pre = create_model("tsn_resnet18", 4, pretrained=None, width=0.25)
    epoch = tmp_path / "run" / "checkpoints" / "epoch_001"
    epoch.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in pre.state_dict().items()}, str(epoch / "model.safetensors"))
    (epoch / "state.pt").write_bytes(b"")
    file, trained = resolve_checkpoint(tmp_path / "run")
    assert file == epoch / "model.safetensors" and trained is None
    model = create_model("tsn_resnet18", 3, pretrained=str(file), width=0.25)
    conv = next(n for n, p in model.named_parameters() if p.ndim == 4)
    assert torch.equal(dict(model.named_parameters())[conv], dict(pre.named_parameters())[conv])
    linear_probe_groups(model, 3)
    assert model.fc.out_features == 3 and not dict(model.named_parameters())[conv].requires_grad
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")
