"""Two-stage transfer (Kae & Song): the 2D -> (2+1)D model, stage training on arrays, and
`omnisource train train.method=da` on tiny media in both modes."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from media_factory import write_da_media
from omnisource.cli import app
from omnisource.config import DAConfig, TrainConfig
from omnisource.data.manifest import read_manifest
from omnisource.models import create_model
from omnisource.models.inflate2plus1 import AdapterVideo, FrameAdapter, inflate_2plus1
from omnisource.train.da_stage import frames_of, train_feature_da, weak_labelled


# EfficientNet-Lite0 with its ImageNet weights: at random init its features are ~1e-8.
@pytest.mark.parametrize("name, kw", [("tsn_resnet18", {"width": 0.125}),
                                      ("tsn_efficientnet_lite0", {"pretrained": "imagenet"})])
def test_video_model_starts_as_the_image_model_averaged_over_frames(name, kw):
    torch.manual_seed(0)
    image = create_model(name, 5, **kw)
    torch.nn.init.normal_(image.fc.weight, 0, 1.0)  # visible logits (the default init is tiny)
    image.eval()
    video = inflate_2plus1(image).eval()
    x = torch.rand(2, 3, 3, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([image(x[:, :, t]) for t in range(x.shape[2])]).mean(0)
        got = video(x)
    assert per_frame.abs().max() > 1e-3
    assert torch.allclose(got, per_frame, atol=1e-5, rtol=1e-4)
    spatial = video.spatial_parameters()
    assert spatial and not any(p.requires_grad for p in spatial)
    assert all(p.requires_grad for p in video.temporal_parameters())
    # a training step moves the temporal branches, never the copied spatial convs
    before = [p.detach().clone() for p in spatial]
    opt = torch.optim.SGD([p for p in video.parameters() if p.requires_grad], lr=0.5)
    video.train()
    torch.nn.functional.cross_entropy(video(x), torch.tensor([0, 1])).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, spatial))
    assert any(p.abs().sum() > 0 for p in video.temporal_parameters())
    with torch.no_grad():
        assert not torch.allclose(video.eval()(x), per_frame, atol=1e-5)
        assert torch.allclose(image(x[:, :, 0]), image.eval()(x[:, :, 0]))  # the image model is a separate copy


def test_feature_video_model_starts_as_the_adapter_averaged_over_frames():
    torch.manual_seed(0)
    adapter = FrameAdapter(6, 3, hidden=8).eval()
    torch.nn.init.normal_(adapter.fc.weight, 0, 1.0)
    video = AdapterVideo(adapter).eval()
    x = torch.randn(4, 5, 6)
    with torch.no_grad():
        assert torch.allclose(video(x), torch.stack([adapter(x[:, t]) for t in range(5)]).mean(0), atol=1e-6)
        assert torch.allclose(adapter(x), torch.stack([adapter(x[:, t]) for t in range(5)]).mean(0), atol=1e-6)
    assert not any(p.requires_grad for p in [*video.l1.parameters(), *video.l2.parameters()])


def test_weak_labels_and_frames():
    rows = [{"id": "a", "weak_labels": ["horse racing"]}, {"id": "b", "weak_labels": ["polo"]},
            {"id": "c", "weak_labels": ["Surfing"]}, {"id": "d", "weak_labels": ["polo", "bouncing ball"]}]
    classes = ["HorseRace", "Surfing", "bouncing_ball"]
    kept = weak_labelled(rows, classes, {"horse racing": "HorseRace"})
    assert [(r["id"], r["label"]) for r in kept] == [("a", 0), ("c", 1), ("d", 2)]
    # Without a map, names still match after normalisation, as in OmniSource's selection.
    assert [(r["id"], r["label"]) for r in weak_labelled(rows, classes, {})] == [("c", 1), ("d", 2)]
    x, y, ids = frames_of(np.arange(12.0).reshape(2, 3, 2), np.array([4, 5]), ["p", "q"])
    assert x.shape == (6, 1, 2) and x[3, 0].tolist() == [6.0, 7.0]
    assert y.tolist() == [4, 4, 4, 5, 5, 5] and ids == ["p"] * 3 + ["q"] * 3


def _arrays(seed=0, t=4, d=8, classes=3):
    """Web images / web videos with a domain shift from the target; 25 % of web labels wrong."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (classes, d))

    def clips(n, shift, noise_labels):
        y = rng.integers(0, classes, n)
        x = centres[y][:, None] + shift + rng.normal(0, 1, (n, t, d))
        weak = np.where(rng.random(n) < noise_labels, (y + 1) % classes, y)
        return x.astype(np.float32), weak, [f"s{seed}-{n}-{i}" for i in range(n)]

    images = clips(48, 0.5, 0.25)
    return {"image": (images[0][:, :1], images[1], images[2]), "video": clips(32, 0.3, 0.25),
            "target": clips(24, 0.0, 0.0)[0], "val": clips(30, 0.0, 0.0)[:2]}


def test_feature_da_trains_both_stages_and_writes_the_run_files(tmp_path):
    from rich.console import Console

    data = _arrays()
    cfg = TrainConfig(epochs=3, batch_size=8, optimizer="adamw", lr=1e-2, device="cpu", seed=0)
    da = DAConfig(adapter_dim=32, disc_hidden=16, video_lr_scale=0.1)
    out = train_feature_da(data, ["a", "b", "c"], cfg, da, tmp_path, console=Console(quiet=True))
    for stage, run in (("image", "da_image"), ("video", "da_video")):
        assert out[stage]["metrics"]["top1"] >= 0.8  # chance is 1/3
        log = [json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        assert len(log) == 3 and "domain_target_frame" in log[-1]["train"]
        att = [json.loads(x) for x in (tmp_path / run / "attention.jsonl").read_text().splitlines()]
        assert [a["weight"] for a in att] == sorted(a["weight"] for a in att)
        assert {a["source"] for a in att} == ({"image", "frame"} if stage == "image" else {"frame"})
        assert json.loads((tmp_path / run / "metrics.json").read_text())["num_samples"] == 30
    first = [json.loads(x) for x in (tmp_path / "da_image" / "log.jsonl").read_text().splitlines()][0]
    assert {"ce_image", "ce_frame", "domain_target_image", "domain_image_frame"} <= set(first["train"])


@pytest.mark.parametrize("mode", ["pixels", "features"])
def test_cli_train_method_da(tmp_path, mode):
    write_da_media(tmp_path)
    ws = tmp_path / "ws"
    web = (f"web=[{{name: img, kind: image, root: '{tmp_path / 'web'}', query_map: {{beta pics: beta}}}}, "
           f"{{name: vid, kind: trimmed, root: '{tmp_path / 'webvid'}', query_map: {{beta pics: beta}}}}]")
    common = ["-w", str(ws), f"target.root={tmp_path / 'videos'}", "target.val_groups=['01']", web,
              "train.epochs=1", "train.batch_size=4", "train.device=cpu", f"mode={mode}", "media.num_segments=2",
              "media.input_size=32", "media.resize_short=32", "model.name=tsn_resnet18", "model.width=0.125",
              "model.pretrained=''", "features.size=32", "features.frames=2", "features.backbone=resnet18",
              "features.pretrained=''", "da.adapter_dim=8", "da.disc_hidden=8",
              "media.min_size=16"]  # the tiny test media (32x24) are below the default 32
    runner = CliRunner()
    for cmd in (["import"], ["import-web"], *([["features"]] if mode == "features" else [])):
        r = runner.invoke(app, [*cmd, *common])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", *common, "train.method=da"])
    assert r.exit_code == 0, r.output
    web_ids = {row["id"] for name in ("img", "vid") for row in read_manifest(ws / "manifests" / f"web_{name}.parquet").rows}
    for run in ("da_image", "da_video"):
        metrics = json.loads((ws / "runs" / run / "metrics.json").read_text())
        cm = np.array(metrics["confusion_matrix"])  # top-1 is what the run's own confusion matrix says
        assert metrics["num_samples"] == 2 == cm.sum() and metrics["top1"] == pytest.approx(np.trace(cm) / 2)
        att = [json.loads(x) for x in (ws / "runs" / run / "attention.jsonl").read_text().splitlines()]
        assert att and {a["id"] for a in att} <= web_ids
    # stage 2 alone starts from the stage-1 checkpoint; a missing stage 1 is one clear line
    r = runner.invoke(app, ["train", *common, "train.method=da", "da.stages=video", "da.image_run=nothing"])
    assert r.exit_code == 2 and "no stage-1 checkpoint" in r.output


def test_resumed_da_run_ends_with_the_same_weights(tmp_path):
    import shutil

    from rich.console import Console
    from safetensors.torch import load_file

    data = _arrays(seed=1)
    cfg = TrainConfig(epochs=2, batch_size=8, optimizer="adamw", lr=1e-2, device="cpu", seed=0)
    da = DAConfig(adapter_dim=16, disc_hidden=8)
    quiet = Console(quiet=True)
    train_feature_da(data, ["a", "b", "c"], cfg, da, tmp_path / "one", ("image",), console=quiet)
    train_feature_da(data, ["a", "b", "c"], cfg, da, tmp_path / "two", ("image",), console=quiet)
    run = tmp_path / "two" / "da_image"
    shutil.rmtree(run / "checkpoints" / "epoch_002")  # killed during the second epoch
    (run / "log.jsonl").write_text((run / "log.jsonl").read_text().splitlines()[0] + "\n")
    train_feature_da(data, ["a", "b", "c"], cfg, da, tmp_path / "two", ("image",), resume=True, console=quiet)
    a = load_file(str(tmp_path / "one" / "da_image" / "checkpoints" / "epoch_002" / "model.safetensors"))
    b = load_file(str(run / "checkpoints" / "epoch_002" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "attention.jsonl").read_text() == (tmp_path / "one" / "da_image" / "attention.jsonl").read_text()
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
