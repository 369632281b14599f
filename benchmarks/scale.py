"""Scaling on the engines: teacher scoring with Ray Data at 1 and 2 workers against the local
engine, and DDP training under torchrun at 1 and 2 processes, printed as ratios.

    python benchmarks/scale.py --data ../shared/data [--images 384] [--clips 64] [--epochs 2]

Scoring: the product's pixel-mode scorer (TSN-EfficientNet-Lite0, ImageNet weights, 112 px) over
real web-sports images, written as score shards by ``score_in_shards``: the local engine (one
process, torch on every core), then ``--engine ray`` on a local Ray instance with an actor pool
of 1 and of 2 workers (same shards; Ray's start is not timed, the actors' model loading is).
Training: pixel-mode TSN-ResNet-18 (ImageNet-free, 112 px, 8 segments) on UCF101-6 clips,
``omnisource train`` as one process, then ``torchrun --standalone --nproc_per_node=2``, the same
global batch; clips/s from the epochs after the first (``seconds`` in log.jsonl). On N cores
about N x is the ceiling. Run it on a quiet machine; it prints the load it saw.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from omnisource.config import dump_config, load_config
from omnisource.data.manifest import new_row
from omnisource.distributed import ray as engine
from omnisource.models import create_model
from omnisource.teacher.score import load_teacher, score_in_shards
from omnisource.teacher.stage import ScorerFactory, _scorer
from omnisource.train.checkpoint import save_checkpoint
from omnisource.workspace import Workspace


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def scoring(data: Path, images: int, work: Path) -> dict[str, float]:
    files = sorted((data / "web-sports").glob("*/*.jpg"))[:images]
    if not files:
        raise SystemExit(f"no images under {data / 'web-sports'}")
    rows = [new_row("images", "image", str(f)) for f in files]
    ws = Workspace(work / "score-ws")
    cfg = load_config(None, ["mode=pixels", "model.name=tsn_efficientnet_lite0", "media.num_segments=1",
                             "media.input_size=112", "media.resize_short=112", "train.batch_size=32",
                             "train.device=cpu", "omni.teacher_runs=['teacher']"])
    model = create_model("tsn_efficientnet_lite0", 6, pretrained="imagenet")
    run = ws.run("teacher")
    save_checkpoint(run, 1, model, torch.optim.SGD(model.parameters(), lr=0.0), {}, dump_config(cfg))
    (run / "config.yaml").write_text(dump_config(cfg))
    classes = [str(i) for i in range(6)]
    fn = _scorer([load_teacher(ws, "teacher", classes)], cfg, ws, "image")
    out = {}
    t0 = time.perf_counter()
    score_in_shards(rows, fn, work / "scores-local", shard_size=64)
    out["local"] = len(rows) / (time.perf_counter() - t0)
    # Ray starts its workers at nice 15 (its `worker_niceness`); the local engine runs at the
    # caller's priority, so on a machine with other jobs the comparison would measure the nice level.
    engine.init(engine.RayOptions(niceness=0))
    try:
        for workers in (1, 2):
            opts = engine.RayOptions(workers=workers, batch_size=32)
            runner = functools.partial(engine.map_shards, factory=ScorerFactory(cfg, ws, "image", classes, None, ["teacher"]),
                                       opts=opts)
            t0 = time.perf_counter()
            score_in_shards(rows, fn, work / f"scores-ray{workers}", shard_size=64, run_shards=runner)
            out[f"ray{workers}"] = len(rows) / (time.perf_counter() - t0)
    finally:
        engine.shutdown()
    same = sorted(p.name for p in (work / "scores-local").iterdir()) == \
        sorted(p.name for p in (work / "scores-ray2").iterdir())
    print(f"scoring: {len(rows)} images, shards identical across engines: {same}")
    return out


def _clips(data: Path, per_class: int) -> list[Path]:
    out = []
    for cls in sorted(p for p in (data / "ucf101-6" / "videos").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.mp4"))
        out += files[::max(1, len(files) // per_class)][:per_class]  # spread over the groups
    return out


def training(data: Path, clips: int, epochs: int, work: Path) -> dict[str, float]:
    root = work / "ucf"
    files = _clips(data, max(1, clips // 6))
    for f in files:  # a class-folder copy of the subset (links: nothing is copied)
        dst = root / f.parent.name / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(f)
    ws = work / "train-ws"
    common = [f"target.root={root}", "mode=pixels",
              "model.name=tsn_resnet18", "model.pretrained=", "media.num_segments=8", "media.input_size=112",
              "media.resize_short=128", "target.val_groups=['08']", "train.batch_size=8", f"train.epochs={epochs}", "train.eval_every=1000",
              "train.device=cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    om = [sys.executable, "-m", "omnisource"]
    subprocess.run([*om, "import", "-w", str(ws), *common], check=True, env=env, stdout=subprocess.DEVNULL)
    out = {}
    for nproc in (1, 2):
        name = f"ddp{nproc}"
        launch = om if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        f"--nproc_per_node={nproc}", "-m", "omnisource"]
        subprocess.run([*launch, "train", "-w", str(ws), f"train.run_name={name}"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        log = [json.loads(x) for x in (ws / "runs" / name / "log.jsonl").read_text().splitlines()]
        timed = log[1:] if len(log) > 1 else log
        steps = log[-1]["steps"] - (log[0]["steps"] if len(log) > 1 else 0)
        out[name] = steps * 8 / sum(r["seconds"] for r in timed)
        out[f"{name}_world"] = log[-1]["world_size"]
    print(f"training: {len(files)} clips, global batch 8, {epochs} epochs (the first one not timed)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding web-sports/, ucf101-6/")
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="omnisource-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"cores {os.cpu_count()}, load average before: {_load()}")
    try:
        s = scoring(args.data, args.images, work)
        t = training(args.data, args.clips, args.epochs, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {_load()}")
    print(f"teacher scoring   local {s['local']:7.1f} img/s   ray 1 worker {s['ray1']:7.1f}   "
          f"ray 2 workers {s['ray2']:7.1f}")
    print(f"  ratios          ray1/local {s['ray1'] / s['local']:.2f}   ray2/local {s['ray2'] / s['local']:.2f}   "
          f"ray2/ray1 {s['ray2'] / s['ray1']:.2f}")
    print(f"DDP training      1 process {t['ddp1']:6.2f} clips/s   2 processes {t['ddp2']:6.2f} clips/s "
          f"(world sizes {t['ddp1_world']}, {t['ddp2_world']})")
    print(f"  ratio           2/1 {t['ddp2'] / t['ddp1']:.2f}   (ceiling about {os.cpu_count()}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
