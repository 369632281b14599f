"""Training under torchrun: 2-process gloo DDP on CPU against one process with the same global batch,
resume under DDP, pixel mode, domain adaptation (train.method=da) in both modes, and the per-rank
shares of the samplers."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from media_factory import write_da_media
from omnisource.cli import app
from omnisource.data.resample import ResampledSampler, class_weights, sample_weights
from omnisource.data.manifest import read_manifest
from omnisource.demo.synthetic import generate
from omnisource.distributed.ddp import ShardedBatchSampler, rank_seed

runner = CliRunner()
# No dropout: with it the ranks draw their own masks and the runs differ by more than arithmetic.
FEATURES = ["features.size=64", "features.frames=4", "train.optimizer=adamw", "train.lr=0.003",
            "train.schedule=constant", "train.batch_size=8", "model.dropout=0", "target.val_groups=['01']"]
# Two runs that see the same global batches differ only in the order of floating-point sums.
TOLERANCE = 1e-4


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def run(cmd, check=True, timeout=900):  # generous: a loaded 2-core machine runs these 10x slower
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, *map(str, cmd)], env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def torchrun(*args, nproc=2, check=True):
    """``torchrun --standalone --nproc_per_node=N -m omnisource ARGS`` (or a script: args[0] ending in .py)."""
    target = [] if str(args[0]).endswith(".py") else ["-m", "omnisource"]
    proc = run(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target, *args], check)
    return proc.stdout if check else proc


def log_of(ws, run):
    return [json.loads(line) for line in (ws / "runs" / run / "log.jsonl").read_text().splitlines()]


PIXEL = ["mode=pixels", "model.name=tsn_resnet18", "model.pretrained=", "model.width=0.125", "media.num_segments=2",
         "media.input_size=32", "media.resize_short=36", "train.epochs=1", "train.run_name=pixels", "train.lr=0.01"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    generate(root, groups=4, clips_per_group=2, web_per_class=1, size=64, frames=12, untrimmed_per_class=0)
    ws = root / "ws"
    invoke("import", "-w", ws, f"target.root={root / 'videos'}", *FEATURES)
    invoke("features", "-w", ws, "--manifest", ws / "manifests" / "target.parquet")
    return root, ws


def da_args(root, run, *extra):
    """A two-stage DA run named ``run`` (runs/<run>_image, runs/<run>_video) on write_da_media's media."""
    web = (f"web=[{{name: img, kind: image, root: '{root / 'web'}', query_map: {{beta pics: beta}}}}, "
           f"{{name: vid, kind: trimmed, root: '{root / 'webvid'}', query_map: {{beta pics: beta}}}}]")
    return ["-w", str(root / "ws"), web, *DA, f"da.image_run={run}_image", f"da.video_run={run}_video", *extra]


# No dropout (the network's, the feature-mode encoder's, the discriminators'), as above. A global
# batch of 4 per branch: 2 per process. SGD, not AdamW: AdamW divides each gradient by its running
# RMS, so an element of W whose gradient hovers around zero moves by about ±lr on noise in the last
# bits (seen with AdamW: 4 of W's 64 elements 4.5e-4 apart after 8 steps while every loss term
# agreed within 1e-7); with SGD the weights stay as close as the gradients are.
DA = ["train.method=da", "train.epochs=2", "train.batch_size=4", "train.device=cpu", "train.optimizer=sgd",
      "train.lr=0.1", "train.schedule=constant", "media.num_segments=2", "media.input_size=32",
      "media.resize_short=32", "media.min_size=16", "model.name=tsn_resnet18", "model.width=0.125",
      "model.pretrained=''", "model.dropout=0", "features.size=32", "features.frames=2",
      "features.backbone=resnet18", "features.pretrained=''", "da.adapter_dim=8", "da.disc_hidden=8", "da.dropout=0"]


# The feature-mode runs learn the attention's W: its gradient reaches it through every α of the
# global batch (transfer.DANet.forward), the part of the step that couples the processes' shares.
LEARN_W = "da.learn_w=true"


@pytest.fixture(scope="module")
def da_workspace(tmp_path_factory):
    root = write_da_media(tmp_path_factory.mktemp("ddp_da"))
    common = da_args(root, "unused")[:3] + [f"target.root={root / 'videos'}", "target.val_groups=['01']", *DA]
    for cmd in ("import", "import-web", "features"):
        invoke(cmd, *common)
    return root


@pytest.fixture(scope="module")
def launched(workspace, da_workspace):
    """One torchrun launch (tests/ddp_worker.py) that trains, in one 2-process group: the first two
    epochs of the feature-mode run "two" (the resume test finishes it with ``torchrun -m
    omnisource``), the pixel-mode run "pixels", the joint run of ``ddp_worker.joint`` and the two
    DA stages in feature mode ("two") and pixel mode ("pix", one epoch). Each launch costs two
    imports of torch and a rendezvous; one launch for five trainings keeps the suite short.
    Returns rank 0's output of each job."""
    root, ws = workspace
    jobs = [["omnisource", "train", "-w", str(ws), "train.epochs=2", "train.run_name=two"],
            ["omnisource", "train", "-w", str(ws), *PIXEL],
            ["joint", str(root / "joint_two")],
            ["omnisource", "train", *da_args(da_workspace, "two", LEARN_W)],
            ["omnisource", "train", *da_args(da_workspace, "pix", "mode=pixels", "train.epochs=1")]]
    (root / "jobs.json").write_text(json.dumps(jobs))
    out = torchrun(Path(__file__).with_name("ddp_worker.py"), root / "jobs.json")
    parts = out.split("=== job ")[1:]
    assert [p.split("\n", 1)[0] for p in parts] == [str(i) for i in range(len(jobs))], out[-3000:]
    return parts


@pytest.fixture(scope="module")
def resumed(workspace, da_workspace, launched):
    """A second launch, in fresh processes, that resumes the feature run "two" to four epochs and
    the DA run "two" after a kill in stage 2's last epoch (its checkpoint and log line gone).
    Returns rank 0's output of each job."""
    root, ws = workspace
    video = da_workspace / "ws" / "runs" / "two_video"
    shutil.rmtree(video / "checkpoints" / "epoch_002")
    (video / "log.jsonl").write_text((video / "log.jsonl").read_text().splitlines()[0] + "\n")
    for name in ("attention.jsonl", "metrics.json"):
        (video / name).unlink()
    jobs = [["omnisource", "train", "-w", str(ws), "--resume", "train.epochs=4", "train.run_name=two"],
            ["omnisource", "train", "--resume", *da_args(da_workspace, "two", LEARN_W)]]
    (root / "resume.json").write_text(json.dumps(jobs))
    out = torchrun(Path(__file__).with_name("ddp_worker.py"), root / "resume.json")
    parts = out.split("=== job ")[1:]
    assert [p.split("\n", 1)[0] for p in parts] == ["0", "1"], out[-3000:]
    return parts


def test_two_process_ddp_matches_one_process_and_resumes(workspace, launched, resumed):
    _, ws = workspace
    invoke("train", "-w", ws, "train.epochs=4", "train.run_name=one")
    assert "world size 2 (gloo), global batch 8 (4 per process), 4 steps per epoch" in launched[0]
    out = resumed[0]  # fresh processes
    assert "world size 2 (gloo)" in out and "resumed from" in out
    assert out.count("epoch 4/4") == 1  # rank 0 alone prints
    one, two = log_of(ws, "one"), log_of(ws, "two")
    assert len(two) == 4  # one line per epoch: rank 1 wrote nothing
    assert [r["world_size"] for r in one] == [1] * 4 and [r["world_size"] for r in two] == [2] * 4
    assert [r["steps"] for r in one] == [r["steps"] for r in two] == [4, 8, 12, 16]  # 36 samples, batch 8
    for a, b in zip(one, two):
        assert abs(a["train"]["target"]["loss"] - b["train"]["target"]["loss"]) < TOLERANCE
        assert a["val"]["top1"] == b["val"]["top1"]
    assert one[-1]["train"]["target"]["loss"] < 0.5 * one[0]["train"]["target"]["loss"]  # it learnt
    # Rank 0 alone keeps the run folder: the same best epoch, retention and model card as one process.
    listing = {run: sorted(p.name for p in (ws / "runs" / run / "checkpoints").iterdir()) for run in ("one", "two")}
    assert listing["two"] == listing["one"] and {"best.json", "epoch_004"} <= set(listing["two"])
    best = {run: json.loads((ws / "runs" / run / "checkpoints" / "best.json").read_text()) for run in ("one", "two")}
    assert best["two"] == best["one"]
    card_one, card_two = (json.loads((ws / "runs" / run / "model.json").read_text()) for run in ("one", "two"))
    for key in ("classes", "mode", "model"):
        assert card_two[key] == card_one[key]
    w1 = load_file(str(ws / "runs" / "one" / "checkpoints" / "epoch_004" / "model.safetensors"))
    w2 = load_file(str(ws / "runs" / "two" / "checkpoints" / "epoch_004" / "model.safetensors"))
    assert set(w1) == set(w2)  # saved from the unwrapped model: no "module." prefix
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=TOLERANCE, rtol=TOLERANCE)


def test_pixel_mode_network_under_torchrun(workspace, launched):
    root, ws = workspace
    assert "world size 2 (gloo)" in launched[1]
    log = log_of(ws, "pixels")
    assert len(log) == 1 and log[0]["world_size"] == 2 and log[0]["steps"] == 4
    assert (ws / "runs" / "pixels" / "checkpoints" / "epoch_001" / "model.safetensors").is_file()
    # The validation of the DDP run (each rank predicts its stride, rank 0 gathers) is the
    # evaluation of the same weights by one process over the whole validation split.
    invoke("evaluate", "-w", ws, "--epoch", "last", *PIXEL)
    metrics = json.loads((ws / "runs" / "pixels" / "metrics.json").read_text())
    assert metrics["num_samples"] == 12  # group 01: two clips of each of the six classes
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert log[0]["val"][key] == pytest.approx(metrics[key], abs=1e-9)


def test_uneven_global_batch_is_refused(monkeypatch):
    from omnisource.data.datasets import FeatureDataset, make_loader
    from omnisource.distributed import ddp

    monkeypatch.setattr(ddp, "_current", ddp.Dist(rank=1, world_size=2, backend="gloo"))
    data = FeatureDataset(np.zeros((20, 2, 4), np.float32), np.zeros(20, np.int64))
    with pytest.raises(ValueError, match="train.batch_size=7 does not split over 2 processes"):
        make_loader(data, 7, True)
    assert [len(b) for b in make_loader(data, 8, True).batch_sampler] == [4, 4]  # rank 1's half of each batch
    # The log speaks of the configured (global) sizes: a rank's share of 4 is a batch of 8.
    assert ddp.describe_batch(4) == "8 (4 per process)" and ddp.describe_batch(4, ddp.Dist()) == "4"


def test_joint_training_with_a_resampled_web_source_matches_one_process(workspace, launched, tmp_path):
    """Target + auxiliary batch (two forwards, one backward) through DDP, against one process."""
    from ddp_worker import joint

    root, _ = workspace
    joint(tmp_path / "one")  # the one-process reference, in this process
    assert "world size 2 (gloo), global batch 8 (4 per process), 5 steps per epoch" in launched[2]
    one, two = ([json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
                for d in (tmp_path / "one", root / "joint_two"))
    assert [r["steps"] for r in one] == [r["steps"] for r in two] == [5, 10, 15]
    assert [r["world_size"] for r in one] == [1, 1, 1] and [r["world_size"] for r in two] == [2, 2, 2]
    for a, b in zip(one, two):
        for src in ("target", "web"):
            assert abs(a["train"][src]["loss"] - b["train"][src]["loss"]) < TOLERANCE
    w1, w2 = torch.load(tmp_path / "one" / "final.pt"), torch.load(root / "joint_two" / "final.pt")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=TOLERANCE, rtol=TOLERANCE)


def test_commands_other_than_training_refuse_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["score", "-w", str(tmp_path)])
    assert result.exit_code == 2 and "only the training commands" in result.output


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _web_ids(root):
    """Ids of the web samples whose query names a target class (gamma names none), by source."""
    return {name: {r["id"] for r in read_manifest(root / "ws" / "manifests" / f"web_{name}.parquet").rows
                   if r["weak_labels"] and r["weak_labels"][0] != "gamma"} for name in ("img", "vid")}


def _attention_complete(run, ids: dict[str, set], log, batch=4):
    """attention.jsonl holds every web sample of its sources exactly once, and its draws add up to
    the steps of the run times the global batch (every sample of every step, once)."""
    att = _jsonl(run / "attention.jsonl")
    for source, want in ids.items():
        rows = [a for a in att if a["source"] == source]
        assert sorted(a["id"] for a in rows) == sorted(want)  # no id missing, none twice
        assert sum(a["draws"] for a in rows) == log[-1]["steps"] * batch
    assert {a["source"] for a in att} == set(ids)
    return {(a["source"], a["id"]): a for a in att}


def test_domain_adaptation_under_torchrun_matches_one_process_and_resumes(da_workspace, launched, resumed):
    """Both DA stages in feature mode: 2 processes (stage 2 killed in its last epoch and resumed
    under torchrun in fresh processes) against one process with the same global batches."""
    root = da_workspace
    invoke("train", *da_args(root, "one", LEARN_W))
    assert "world size 2 (gloo), global batch 4 (2 per process) per branch, 4 steps per epoch" in launched[3]
    assert "resumed from" in resumed[1] and resumed[1].count("two_video epoch 2/2") == 1  # rank 0 alone prints
    ids = _web_ids(root)
    for stage, sources in (("image", {"image": ids["img"], "frame": ids["vid"]}), ("video", {"frame": ids["vid"]})):
        run_one, run_two = root / "ws" / "runs" / f"one_{stage}", root / "ws" / "runs" / f"two_{stage}"
        one, two = _jsonl(run_one / "log.jsonl"), _jsonl(run_two / "log.jsonl")
        assert [r["world_size"] for r in one] == [1, 1] and [r["world_size"] for r in two] == [2, 2]
        assert [r["steps"] for r in one] == [r["steps"] for r in two] == ([4, 8] if stage == "image" else [2, 4])
        for a, b in zip(one, two):
            assert set(a["train"]) == set(b["train"]) and len(a["train"]) > 2  # CE and domain terms
            for term in a["train"]:
                assert abs(a["train"][term] - b["train"][term]) < TOLERANCE, (stage, term)
            for key in ("min", "max", "std"):
                assert abs(a["attention"][key] - b["attention"][key]) < TOLERANCE
            assert a["val"] == pytest.approx(b["val"], abs=1e-9)
        assert one[0]["attention"]["max"] - one[0]["attention"]["min"] > 1e-3  # α is not uniform
        w1 = load_file(str(run_one / "checkpoints" / "epoch_002" / "model.safetensors"))
        w2 = load_file(str(run_two / "checkpoints" / "epoch_002" / "model.safetensors"))
        assert set(w1) == set(w2) and any(k.startswith("discs.") for k in w1)  # no "module." prefix
        for k in w1:
            torch.testing.assert_close(w1[k], w2[k], atol=TOLERANCE, rtol=TOLERANCE)
        assert (w1["attention.weight"] - torch.eye(8)).abs().max() > 1e-3  # W learnt
        att_one, att_two = _attention_complete(run_one, sources, one), _attention_complete(run_two, sources, two)
        assert att_one.keys() == att_two.keys()
        for key, a in att_one.items():
            assert a["draws"] == att_two[key]["draws"] and abs(a["weight"] - att_two[key]["weight"]) < TOLERANCE
        m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (run_one, run_two))
        assert m1["num_samples"] == m2["num_samples"] == 2 and m1["top1"] == m2["top1"]


def test_pixel_mode_domain_adaptation_under_torchrun(da_workspace, launched):
    """Both stages on whole (tiny) networks: rank 0 writes every run file, the attention log
    holds every web sample once; BatchNorm normalises each process's share, which the log says."""
    root = da_workspace
    out = launched[4]
    assert "world size 2 (gloo), global batch 4 (2 per process) per branch" in out
    assert "BatchNorm statistics are those of each process's share of a batch (2 processes)" in out
    ids = _web_ids(root)
    for stage, sources in (("image", {"image": ids["img"], "frame": ids["vid"]}), ("video", {"frame": ids["vid"]})):
        run = root / "ws" / "runs" / f"pix_{stage}"
        log = _jsonl(run / "log.jsonl")
        assert len(log) == 1 and log[0]["world_size"] == 2 and log[0]["steps"] == 2  # 8 web videos, batch 4
        assert (run / "checkpoints" / "epoch_001" / "model.safetensors").is_file()
        assert json.loads((run / "metrics.json").read_text())["num_samples"] == 2
        _attention_complete(run, sources, log)
    assert (root / "ws" / "runs" / "pix_video" / "config.yaml").is_file()


def test_domain_adaptation_refuses_a_batch_that_does_not_split(monkeypatch, da_workspace):
    from omnisource.distributed import ddp

    monkeypatch.setattr(ddp, "_current", ddp.Dist(rank=0, world_size=2, backend="gloo"))
    result = runner.invoke(app, ["train", *da_args(da_workspace, "odd", "train.batch_size=3")])
    assert result.exit_code == 2 and "train.batch_size=3 does not split over 2 processes" in result.output
    assert not (da_workspace / "ws" / "runs" / "odd_image" / "checkpoints").exists()


def test_sharded_batches_are_disjoint_and_make_the_single_process_batches():
    one = ShardedBatchSampler(37, 8, shuffle=True, drop_last=True, seed=3)
    ranks = [ShardedBatchSampler(37, 8, shuffle=True, drop_last=True, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in (one, *ranks):
        s.set_epoch(5)
    single = list(one)
    shares = [list(s) for s in ranks]
    assert len(single) == len(shares[0]) == len(shares[1]) == 4
    for step, batch in enumerate(single):
        a, b = shares[0][step], shares[1][step]
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert sorted(a + b) == sorted(batch)
    one.set_epoch(6)
    assert list(one) != single  # a new permutation every epoch


def test_resampled_shares_are_disjoint_and_follow_the_target_distribution():
    labels = np.repeat(np.arange(4), [400, 100, 25, 5])  # unbalanced web classes
    weights = sample_weights(labels, 4, "power", power=0.2)
    per_rank = 6000
    draws = []
    for rank in (0, 1):
        s = ResampledSampler(weights, per_rank, seed=11, rank=rank, world_size=2)
        s.set_epoch(2)
        draws.append(list(s))
    single = ResampledSampler(weights, 2 * per_rank, seed=11)
    single.set_epoch(2)
    positions = single.all_indices()
    # Rank r takes draws r, r + 2, ...: disjoint positions of one global sequence, which together
    # are exactly the single process's draws.
    assert draws[0] == positions[0::2] and draws[1] == positions[1::2]
    merged = np.bincount(labels[np.array(draws[0] + draws[1])], minlength=4) / (2 * per_rank)
    np.testing.assert_allclose(merged, class_weights(np.bincount(labels), "power", power=0.2), atol=0.015)
    for d in draws:  # each share follows the distribution too
        share = np.bincount(labels[np.array(d)], minlength=4) / per_rank
        np.testing.assert_allclose(share, merged, atol=0.02)
    # Without resampling (plain shuffling) the shares of one pass are disjoint sets of samples.
    plain = [list(ResampledSampler(None, 50, seed=11, rank=r, world_size=2, size=100)) for r in (0, 1)]
    assert not set(plain[0]) & set(plain[1]) and sorted(plain[0] + plain[1]) == list(range(100))


def test_rank_seeds_derive_from_the_config_seed():
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(8)}) == 8
    assert rank_seed(7, 1) == rank_seed(7, 1) != rank_seed(8, 1)
