"""The pixel path with teachers whose answers are known: a "brightness" network says *bright*
with a probability that is a fixed function of a clip's mean brightness, so planted bright
segments of untrimmed videos must be the clips that scoring finds and selection keeps.

Covers: clip scores of untrimmed videos in pixel mode (windows, views) and ``omni.untrimmed=clips``
keeping exactly the planted positive clips; a teacher per source (a 2D one for images, a 3D one
for videos) and ensembles averaging; SPL labels from pixel clip scores, then pixel pre-training
and fine-tuning; domain adaptation stage 2 fed with chunks of untrimmed videos.
"""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from media_factory import write_image, write_video
from omnisource.cli import app
from omnisource.config import dump_config, load_config
from omnisource.data.manifest import read_manifest
from omnisource.models import register_model
from omnisource.teacher.score import read_scores
from omnisource.train.checkpoint import save_checkpoint

runner = CliRunner()
FPS, SEGMENT_S, SIZE = 10, 2, (40, 32)  # the web validator rejects a short side under 32
BRIGHT, DARK = 220, 30


class Brightness(nn.Module):
    """Logits ±gain·(m − ½) of a clip's mean brightness m in [0, 1] (class 0 = "bright").
    ``frames=True``: a 2D (TSN-like) network that also scores single frames."""

    def __init__(self, num_classes: int, gain: float, frames: bool):
        super().__init__()
        self.frames = frames
        self.conv = nn.Conv2d(3, 1, 1) if frames else nn.Conv3d(3, 1, 1)
        self.fc = nn.Linear(1, num_classes)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 3)
            self.conv.bias.fill_(-0.5)
            self.fc.weight.copy_(torch.tensor([[gain], [-gain]]))
            self.fc.bias.zero_()
        if frames:
            self.forward_frame_logits = lambda x: self(x)  # marks a frame-level (2D) teacher

    def forward(self, x):
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if self.frames:
            b, c, t, h, w = x.shape
            m = self.conv(x.transpose(1, 2).reshape(b * t, c, h, w)).reshape(b, -1).mean(1, keepdim=True)
        else:
            m = self.conv(x).flatten(1).mean(1, keepdim=True)
        return self.fc(m)


register_model("test_bright2d")(lambda num_classes, width=1.0, dropout=0.5, **kw: Brightness(num_classes, 4.0, True))
register_model("test_bright3d")(lambda num_classes, width=1.0, dropout=0.5, **kw: Brightness(num_classes, 20.0, False))


def p_bright(value: int, gain: float) -> float:
    """What a Brightness teacher says for a flat clip of grey ``value``."""
    return 1 / (1 + math.exp(-2 * gain * (value / 255 - 0.5)))


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel")
    for cls, value in (("bright", BRIGHT), ("dark", DARK)):
        for g in (1, 2, 3):
            for c in (1, 2):
                write_video(root / "videos" / cls / f"v_{cls}_g{g:02d}_c{c:02d}.mp4", 20, size=SIZE, fps=FPS,
                            frame_fn=lambda i, v=value: np.full((SIZE[1], SIZE[0], 3), v, np.uint8))
    planted = {}
    for k, segment in enumerate([0, 1, 2, None]):  # None: the query "bright" but nothing bright in it
        path = root / "untrimmed" / "bright" / f"u{k}.mp4"
        write_video(path, 3 * SEGMENT_S * FPS, size=SIZE, fps=FPS, frame_fn=lambda i, s=segment: np.full(
            (SIZE[1], SIZE[0], 3), BRIGHT if s is not None and i // (SEGMENT_S * FPS) == s else DARK, np.uint8))
        planted[str(path)] = segment
    for q, value in (("bright", BRIGHT), ("dark", DARK)):
        (root / "images" / q).mkdir(parents=True)
        for k in range(3):
            write_image(root / "images" / q / f"{k}.png", size=(40, 32), value=value)
    return root, planted


def _overrides(root, ws, *extra):
    web = (f"web=[{{name: images, kind: image, root: '{root / 'images'}', teachers: [t2d]}}, "
           f"{{name: both, kind: image, root: '{root / 'images'}', teachers: [t2d, t3d]}}, "
           f"{{name: long, kind: untrimmed, root: '{root / 'untrimmed'}', teachers: [t3d]}}]")
    return ["-w", ws, f"target.root={root / 'videos'}", "target.val_groups=['01']", "mode=pixels",
            "media.input_size=24", "media.resize_short=24", f"omni.clip_seconds={SEGMENT_S}", "omni.score_views=2",
            "omni.untrimmed=clips", "omni.filter=both", "omni.threshold=0.5", "omni.frame_threshold=0.5",
            "train.batch_size=4", web, *extra]


def _teacher_run(ws, name, model_name, sampler):
    """A finished run of the workspace holding a Brightness teacher."""
    from omnisource.models import create_model

    cfg = load_config(ws / "config.yaml", [f"model.name={model_name}", f"train.run_name={name}", "model.pretrained=",
                                           f"media.sampler={sampler}", "media.num_segments=4",
                                           "media.frame_interval=2"])
    model = create_model(cfg.model.name, 2)
    save_checkpoint(ws / "runs" / name, 1, model, torch.optim.SGD(model.parameters(), lr=0.1), {}, dump_config(cfg))
    (ws / "runs" / name / "config.yaml").write_text(dump_config(cfg))


@pytest.fixture(scope="module")
def scored(data, tmp_path_factory):
    root, planted = data
    ws = tmp_path_factory.mktemp("ws") / "ws"
    invoke("import", *_overrides(root, ws))
    invoke("import-web", "-w", ws)
    _teacher_run(ws, "t2d", "test_bright2d", "tsn")
    _teacher_run(ws, "t3d", "test_bright3d", "dense")
    for stage in ("score", "select", "transform"):
        invoke(stage, "-w", ws)
    return ws, planted


def test_clips_mode_keeps_exactly_the_planted_positive_clips(scored):
    ws, planted = scored
    scores = read_scores(ws / "scores" / "long")
    web = {r["path"]: r for r in read_manifest(ws / "manifests" / "web_long.parquet").rows}
    for path, segment in planted.items():
        rec = scores[web[path]["id"]]
        assert rec["clip_windows"] == [[0.0, 2.0], [2.0, 4.0], [4.0, 6.0]]
        bright = [round(p[0], 3) for p in rec["clip_probs"]]
        assert bright == [round(p_bright(BRIGHT if j == segment else DARK, 20.0), 3) for j in range(3)]
        assert len(rec["frame_probs"]) == 6  # a 3D teacher's window scores, one row per second
    kept = read_manifest(ws / "manifests" / "train_long.parquet").rows
    found = {r["path"]: [] for r in kept}
    for r in kept:
        found[r["path"]].append((r["start_s"], r["end_s"]))
        assert r["label"] == 0 and r["parent_id"] == web[r["path"]]["id"]
    expected = {p: [(2.0 * s, 2.0 * s + 2)] for p, s in planted.items() if s is not None}
    assert found == expected  # every planted segment found, nothing else kept
    aux = {r["path"]: r for r in read_manifest(ws / "manifests" / "aux_long.parquet").rows}
    negative = next(p for p, s in planted.items() if s is None)
    assert aux[negative]["status"] == "rejected" and "confidence" in aux[negative]["reason"]


def test_each_source_is_scored_by_its_own_teachers_and_ensembles_average(scored):
    ws, _ = scored
    info = {s: json.loads((ws / "scores" / s / "teachers.json").read_text()) for s in ("images", "both", "long")}
    assert [t["run"] for t in info["images"]["teachers"]] == ["t2d"]
    assert [t["run"] for t in info["both"]["teachers"]] == ["t2d", "t3d"]
    assert [(t["run"], t["kind"]) for t in info["long"]["teachers"]] == [("t3d", "3d")]
    for source, expected in (("images", lambda v: p_bright(v, 4.0)),
                             ("both", lambda v: (p_bright(v, 4.0) + p_bright(v, 20.0)) / 2)):
        rows = read_manifest(ws / "manifests" / f"web_{source}.parquet").rows
        scores = read_scores(ws / "scores" / source)
        for r in rows:
            value = BRIGHT if r["weak_labels"] == ["bright"] else DARK
            assert scores[r["id"]]["probs"][0] == pytest.approx(expected(value), abs=2e-3), (source, r["path"])
    sel = json.loads((ws / "selection" / "images.json").read_text())
    assert sel["teachers"] == ["t2d"] and sel["kept"] == 6  # every image agrees with its query
    from omnisource.report import write_report

    html = write_report(load_config(ws / "config.yaml"), ws).read_text()
    assert "Teachers per source" in html and "test_bright3d" in html and "test_bright2d" in html


def test_a_retrained_teacher_is_not_served_old_scores(scored, tmp_path):
    import shutil

    ws, _ = scored
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    cfg = load_config(copy / "config.yaml")
    from omnisource.models import create_model
    from omnisource.teacher.stage import score_stage

    model = create_model("test_bright2d", 2)
    with torch.no_grad():
        model.fc.weight.neg_()  # now it calls bright images dark
    save_checkpoint(copy / "runs" / "t2d", 2, model, torch.optim.SGD(model.parameters(), lr=0.1), {},
                    dump_config(cfg))
    score_stage(cfg, copy)
    rows = read_manifest(copy / "manifests" / "web_images.parquet").rows
    scores = read_scores(copy / "scores" / "images")
    bright = next(r for r in rows if r["weak_labels"] == ["bright"])
    assert scores[bright["id"]]["pred"] == 1


def test_spl_labels_come_from_the_pixel_clip_scores_then_pixel_pretrain_and_finetune(scored):
    ws, planted = scored
    invoke("weak-labels", "-w", ws, "weak.sources=[long]", "weak.labels=spl_full")
    doc = json.loads((ws / "manifests" / "weak.labelmap.json").read_text())
    cells = {c["label"]: (c["weak"], c["teacher"]) for c in doc["classes"]}
    rows = read_manifest(ws / "manifests" / "weak.parquet").rows
    assert len(rows) == 3 * len(planted)  # every 2 s clip of every video, none dropped
    for r in rows:
        segment = planted[r["path"]]
        teacher = 0 if segment is not None and r["start_s"] == 2.0 * segment else 1
        assert cells[r["label"]] == (0, teacher), (r["path"], r["start_s"])  # y = N·l + T(x), l = bright
    tiny = ["model.name=r3d_18", "model.width=0.125", "model.pretrained=", "media.sampler=dense",
            "media.num_segments=4", "train.epochs=1"]
    invoke("pretrain", "-w", ws, *tiny)
    from safetensors.torch import load_file

    pre = load_file(str(next((ws / "runs" / "pretrain" / "checkpoints").iterdir()) / "model.safetensors"))
    assert pre["fc.weight"].shape[0] == doc["num_classes"]
    invoke("finetune", "-w", ws, *tiny)
    m = json.loads((ws / "runs" / "finetune" / "metrics.json").read_text())
    assert m["num_samples"] == 4 and m["checkpoint"].endswith("model.safetensors")
    ft = load_file(str(next((ws / "runs" / "finetune" / "checkpoints").iterdir()) / "model.safetensors"))
    assert ft["fc.weight"].shape[0] == 2 and ft["conv1.weight"].shape == pre["conv1.weight"].shape


def test_domain_adaptation_stage_two_trains_on_untrimmed_chunks(data, tmp_path):
    root, planted = data
    ws = tmp_path / "da"
    out = invoke("import", *_overrides(root, ws, "model.name=tsn_resnet18", "model.width=0.125", "model.pretrained=",
                                       "media.num_segments=2", "train.epochs=1", "da.chunk_seconds=2",
                                       f"web=[{{name: long, kind: untrimmed, root: '{root / 'untrimmed'}'}}]"))
    invoke("import-web", "-w", ws)
    out = invoke("train", "-w", ws, "train.method=da")
    assert "cut into 12 chunks of 2 s" in " ".join(out.split())
    log = [json.loads(line) for line in (ws / "runs" / "da_video" / "attention.jsonl").read_text().splitlines()]
    video_ids = {r["id"] for r in read_manifest(ws / "manifests" / "web_long.parquet").rows}
    assert log and {r["id"] for r in log} <= video_ids and all(r["source"] == "frame" for r in log)
    assert sum(r["draws"] for r in log) >= 8  # stage 2 drew chunk clips (batch 4, 12 chunks, drop_last)
    assert (ws / "runs" / "da_video" / "metrics.json").exists()
