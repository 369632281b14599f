"""Using trained models: predict agrees with evaluate, exports agree with torch, bad inputs are
reported and the rest classified, old checkpoints still load. Tiny runs trained here."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from media_factory import write_frames, write_image, write_video
from omnisource.cli import app
from omnisource.data.manifest import read_manifest
from omnisource.demo.synthetic import generate

runner = CliRunner()
FEATURES = ["features.size=64", "features.frames=4", "train.epochs=6", "train.optimizer=adamw", "train.lr=0.003",
            "train.eval_every=2", "train.keep_checkpoints=1", "target.val_groups=['01']", "model.dropout=0.2"]
PIXELS_3D = ["target.val_groups=['01']", "mode=pixels", "model.name=r2plus1d_18", "model.pretrained=",
             "model.width=0.125", "media.num_segments=4", "media.sampler=dense", "media.frame_interval=2",
             "media.input_size=32", "media.resize_short=36", "train.batch_size=8", "train.epochs=2", "train.lr=0.01"]


def invoke(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    generate(root, groups=3, clips_per_group=2, web_per_class=1, size=64, frames=12, untrimmed_per_class=1)
    return root


def _train(ws, data, overrides):
    invoke("import", "-w", ws, f"target.root={data / 'videos'}", *overrides)
    invoke("validate", "-w", ws)
    if "mode=pixels" not in overrides:
        invoke("features", "-w", ws)
    invoke("train", "-w", ws)
    invoke("evaluate", "-w", ws)
    return ws / "runs" / "target_only"


@pytest.fixture(scope="module")
def feature_run(data, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("features") / "ws", data, FEATURES)


@pytest.fixture(scope="module")
def pixel_run(data, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("pixels") / "ws", data, PIXELS_3D)


def _confusion(run, records):
    manifest = read_manifest(run.parent.parent / "manifests" / "target.validated.parquet")
    label = {r["path"]: r["label"] for r in manifest.rows if r["split"] == "val"}
    cm = np.zeros((len(manifest.classes),) * 2, dtype=int)
    for r in records:
        cm[label[r["path"]], manifest.classes.index(r["labels"][0])] += 1
    return cm


def _val_manifest(run):
    return run.parent.parent / "manifests" / "target.validated.parquet"


def _agree(torch_records, export_records):
    assert [r["path"] for r in export_records] == [r["path"] for r in torch_records]
    for a, b in zip(torch_records, export_records):
        assert a["labels"] == b["labels"], a["path"]
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-4)


@pytest.fixture(scope="module")
def frame_run(data, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("frames") / "ws", data, [*FEATURES, "features.head=frames"])


@pytest.mark.slow
def test_feature_run_predict_equals_evaluate_and_onnx_equals_torch(feature_run, tmp_path):
    _predict_equals_evaluate_and_onnx_equals_torch(feature_run, tmp_path)


@pytest.mark.slow
def test_a_frame_level_head_predicts_exports_and_serves_the_mean_frame_softmax(frame_run, tmp_path):
    """features.head=frames: evaluate, predict, the card and the ONNX file agree on its output,
    the log of the frames' mean softmax."""
    import torch
    from safetensors.torch import load_file

    from omnisource.models import create_head

    card = json.loads((frame_run / "model.json").read_text())
    assert card["model"]["name"] == "frames"
    _predict_equals_evaluate_and_onnx_equals_torch(frame_run, tmp_path)
    best = json.loads((frame_run / "checkpoints" / "best.json").read_text())["epoch"]
    head = create_head("frames", card["model"]["in_dim"], len(card["classes"]), 4, 0.2).eval()
    head.load_state_dict(load_file(str(frame_run / "checkpoints" / f"epoch_{best:03d}" / "model.safetensors")))
    x = 5 * torch.randn(3, 4, card["model"]["in_dim"])
    with torch.no_grad():
        torch.testing.assert_close(head(x).softmax(-1), head.fc(x).softmax(-1).mean(1))


def _predict_equals_evaluate_and_onnx_equals_torch(feature_run, tmp_path):
    metrics = json.loads((feature_run / "metrics.json").read_text())
    best = json.loads((feature_run / "checkpoints" / "best.json").read_text())["epoch"]
    assert metrics["epoch"] == best  # evaluate took the best epoch
    assert {p.name for p in (feature_run / "checkpoints").glob("epoch_*")} == {f"epoch_{best:03d}", "epoch_006"}
    records = jsonl(invoke("predict", feature_run, _val_manifest(feature_run), "--split", "val", "--json", "-k", "3"))
    assert len(records) == metrics["num_samples"] == 12
    assert all(len(r["labels"]) == 3 and r["probs"] == sorted(r["probs"], reverse=True) for r in records)
    cm = _confusion(feature_run, records)
    assert cm.tolist() == metrics["confusion_matrix"]  # the same prediction for every video
    assert np.trace(cm) / cm.sum() == pytest.approx(metrics["top1"])

    out = tmp_path / "model.onnx"
    invoke("export", feature_run, "--format", "onnx", "--output", out)
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, 4, 64, 64] and meta["epoch"] == best
    assert meta["classes"] == read_manifest(_val_manifest(feature_run)).classes
    assert meta["backbone"]["name"] == "efficientnet_lite0" and meta["checked_max_abs_prob_diff"] < 1e-4
    onnx_records = jsonl(invoke("predict", out, _val_manifest(feature_run), "--split", "val", "--json", "-k", "3"))
    _agree(records, onnx_records)


@pytest.mark.slow
def test_pixel_3d_run_predict_equals_evaluate_and_exports_equal_torch(pixel_run, tmp_path):
    metrics = json.loads((pixel_run / "metrics.json").read_text())
    card = json.loads((pixel_run / "model.json").read_text())
    assert card["mode"] == "pixels" and card["model"]["name"] == "r2plus1d_18"
    assert card["preprocessing"]["sampler"] == "dense" and card["preprocessing"]["crop"] == 32
    records = jsonl(invoke("predict", pixel_run, _val_manifest(pixel_run), "--split", "val", "--json", "-k", "6"))
    assert _confusion(pixel_run, records).tolist() == metrics["confusion_matrix"]

    out = tmp_path / "r2plus1d.onnx"
    invoke("export", pixel_run, "-o", out)
    _agree(records, jsonl(invoke("predict", out, _val_manifest(pixel_run), "--split", "val", "--json", "-k", "6")))
    invoke("export", pixel_run, "--format", "pt2", "-o", tmp_path / "r2plus1d.pt2")
    _agree(records, jsonl(invoke("predict", tmp_path / "r2plus1d.pt2", _val_manifest(pixel_run), "--split", "val",
                                 "--json", "-k", "6")))

    # Multi-view: --views 2 averages the same views as evaluate with media.test_views=2.
    two = jsonl(invoke("predict", pixel_run, _val_manifest(pixel_run), "--split", "val", "--json", "--views", "2"))
    invoke("evaluate", "-w", pixel_run.parent.parent, "media.test_views=2")
    metrics2 = json.loads((pixel_run / "metrics.json").read_text())
    assert _confusion(pixel_run, two).tolist() == metrics2["confusion_matrix"]
    assert [r["probs"] for r in two] != [r["probs"][:5] for r in records]  # other frames were seen


@pytest.mark.slow
def test_predict_inputs_bad_files_and_the_python_api(feature_run, data, tmp_path):
    from omnisource import load_classifier

    video = sorted((data / "videos" / "bouncing_ball").glob("*.mp4"))[0]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(video, folder / "a.mp4")
    write_image(folder / "photo.jpg", size=(80, 60), value=180)
    write_frames(folder / "clip" / "frames", 6, size=(64, 48))
    write_video(folder / "clip" / "b.mkv", 10, size=(64, 48))
    write_image(folder / "clip" / "still.png", size=(80, 60), value=40).rename(folder / "clip" / "still")  # no ext
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "notes.txt").write_text("not media")
    given = [str(folder), str(video), str(tmp_path / "missing.mp4")]
    records = jsonl(invoke("predict", feature_run, *given, "--json", "-k", "2"))
    by_path = {r["path"]: r for r in records}
    assert list(by_path) == [f"{folder}/a.mp4", f"{folder}/clip/b.mkv", f"{folder}/clip/frames",
                             f"{folder}/clip/still", f"{folder}/notes.txt", f"{folder}/photo.jpg",
                             f"{folder}/zero.mp4", str(video), str(tmp_path / "missing.mp4")]
    assert "zero-byte" in by_path[f"{folder}/zero.mp4"]["error"]
    assert by_path[f"{folder}/notes.txt"]["error"] == "not a media file: text"
    assert by_path[str(tmp_path / "missing.mp4")]["error"] == "no such file or folder"
    ok = [r for r in records if "error" not in r]
    assert len(ok) == 6 and all(len(r["labels"]) == 2 for r in ok)
    assert by_path[f"{folder}/a.mp4"]["labels"] == by_path[str(video)]["labels"]  # same file, same answer

    clf = load_classifier(feature_run)  # best epoch, as the CLI
    assert clf.predict([str(video)], top_k=2) == [by_path[str(video)]]
    assert clf.predict(str(video), top_k=1)[0]["labels"] == by_path[str(video)]["labels"][:1]

    table = invoke("predict", feature_run, video, tmp_path / "missing.mp4")
    assert "error: no such" in table and "1 of 2 classified" in table
    by_name = jsonl(invoke("predict", feature_run.name, video, "--json", "-k", "2", "-w", feature_run.parent.parent))
    assert by_name == [by_path[str(video)]]  # a run name inside -w is the same model
    assert "neither a path nor a run" in invoke("predict", "nosuchrun", video, "-w", feature_run.parent.parent, code=2)
    out = invoke("predict", feature_run, folder / "zero.mp4", tmp_path / "missing.mp4", "--json", code=1)
    assert len(jsonl(out)) == 2  # every input still gets its line
    assert "expected last, best" in invoke("predict", feature_run, video, "--epoch", "first", code=2)
    assert "--split applies to manifests" in invoke("predict", feature_run, video, "--split", "val", code=2)


@pytest.mark.slow
def test_predict_names_the_video_decoder_once(feature_run, data):
    """The decoder choice is one stderr line per command, however many videos are decoded (the
    dataset's early check and every read used to log it under two names)."""
    videos = sorted((data / "videos").rglob("*.mp4"))[:3]
    assert len(videos) == 3
    out = subprocess.run([sys.executable, "-m", "omnisource", "predict", str(feature_run), *map(str, videos), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    records = jsonl(out.stdout)
    assert [r["path"] for r in records] == [str(v) for v in videos] and all("labels" in r for r in records)
    assert [line for line in out.stderr.splitlines() if "video decoding" in line] == \
        ["video decoding: pyav (media.backend=auto)"]


@pytest.mark.slow
def test_checkpoints_from_before_model_cards_still_load(feature_run, data, tmp_path):
    from safetensors.torch import load_file, save_file

    from omnisource import load_classifier

    old = feature_run.parent / "old"
    shutil.copytree(feature_run, old)
    for card in old.rglob("model.json"):
        card.unlink()
    for weights in old.rglob("model.safetensors"):  # written without the card in its metadata
        save_file(load_file(str(weights)), str(weights))
    video = sorted((data / "videos" / "spinning_bar").glob("*.mp4"))[0]
    want = load_classifier(feature_run).predict([video])
    clf = load_classifier(old)  # described from config.yaml + the workspace's classes
    assert clf.card.get("legacy") and clf.predict([video]) == want

    alone = tmp_path / "model.safetensors"
    shutil.copy(next(old.rglob("model.safetensors")), alone)
    out = invoke("predict", alone, video, code=2)
    assert "upgrade-checkpoint" in out and len(out.strip().splitlines()) == 1
    invoke("upgrade-checkpoint", old)
    assert all((p / "model.json").is_file() for p in (old / "checkpoints").glob("epoch_*"))
    assert load_classifier(old).predict([video]) == want


def test_export_and_cli_refuse_what_they_cannot_do(tmp_path):
    assert invoke("--version").strip().startswith("omnisource ")
    out = invoke("export", tmp_path, "--format", "torchscript", code=2)
    assert "TorchScript is deprecated" in out
    assert "not found" in invoke("predict", tmp_path / "nothing", tmp_path, code=2)


def test_onnx_export_without_onnxscript_is_a_one_line_error(monkeypatch, tmp_path):
    import torch

    from omnisource.serve.export import _onnx

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as where it is not installed
    with pytest.raises(RuntimeError, match=r"needs the onnx and onnxscript packages: pip install") as err:
        _onnx(torch.nn.Linear(2, 2), torch.zeros(1, 2), tmp_path / "m.onnx", None)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


def test_stages_are_importable_from_one_place():
    import omnisource.stages as stages

    for name in stages.__all__:
        obj = getattr(stages, name)
        assert callable(obj) and (obj.__doc__ or "").strip(), name


def test_inputs_tell_frame_folders_from_photo_folders_and_read_manifests(tmp_path):
    from omnisource.data.manifest import Manifest, new_row, write_manifest
    from omnisource.serve.inputs import expand

    write_frames(tmp_path / "frames", 3)
    (tmp_path / "photos").mkdir()
    write_image(tmp_path / "photos" / "beach.jpg")
    write_image(tmp_path / "photos" / "dog.png")
    (tmp_path / "empty").mkdir()
    video = write_video(tmp_path / "v.mp4", 8)
    rows = [new_row("t", "video", str(video), split="val", start_s=0.0, end_s=0.2),
            new_row("t", "video", str(video), split="train"),
            new_row("t", "video", str(tmp_path / "bad.mp4"), split="val", status="corrupt", reason="zero-byte file")]
    manifest = write_manifest(Manifest(rows, ["a"]), tmp_path / "m.parquet")
    items = expand([str(tmp_path / "frames"), str(tmp_path / "photos"), str(tmp_path / "empty"), str(manifest)],
                   split="val")
    got = [(it.path, it.row.get("kind"), it.error) for it in items]
    assert got == [(str(tmp_path / "frames"), "frames", ""),
                   (str(tmp_path / "photos" / "beach.jpg"), "image", ""),
                   (str(tmp_path / "photos" / "dog.png"), "image", ""),
                   (str(tmp_path / "empty"), None, "the folder holds no video, image or frame folder"),
                   (str(video), "video", ""),
                   (str(tmp_path / "bad.mp4"), None, "corrupt in the manifest: zero-byte file")]
    assert items[4].row["end_s"] == 0.2  # the row's time window is kept


def test_a_domain_adaptation_run_is_refused_in_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    from omnisource.config import Config, dump_config

    epoch = tmp_path / "runs" / "da_image" / "checkpoints" / "epoch_001"
    epoch.mkdir(parents=True)
    save_file({"model.fc.weight": torch.zeros(3, 4), "discs.target_image.net.0.weight": torch.zeros(2, 4)},
              str(epoch / "model.safetensors"))
    (epoch / "state.pt").write_bytes(b"x")
    (epoch / "config.yaml").write_text(dump_config(Config()))
    out = invoke("predict", tmp_path / "runs" / "da_image", tmp_path, code=2)
    assert "domain-adaptation network" in out and len(out.strip().splitlines()) == 1


def test_a_card_pins_a_backbone_file_that_predict_refuses_changed_or_missing(tmp_path):
    """The card records the sha256 of a backbone weights file; rebuilding the network refuses the
    file once its bytes change or it is gone, instead of embedding with other weights."""
    import hashlib

    from omnisource.config import load_config
    from omnisource.models import create_head
    from omnisource.serve.predict import _backbone
    from omnisource.train.card import CardError, model_card

    weights = tmp_path / "backbone.pt"
    weights.write_bytes(b"trained backbone weights")
    cfg = load_config(overrides=[f"features.pretrained={weights}", "features.frames=4"])
    card = model_card(cfg, ["a", "b"], create_head("tsn", 1280, 2, 4))
    assert card["backbone"]["sha256"] == hashlib.sha256(b"trained backbone weights").hexdigest()
    weights.write_bytes(b"other weights")
    with pytest.raises(CardError, match="changed since the head was trained"):
        _backbone(card["backbone"])
    weights.unlink()
    with pytest.raises(CardError, match="are missing"):
        _backbone(card["backbone"])
