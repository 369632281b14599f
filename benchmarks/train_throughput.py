"""Training and inference throughput per model, and whether training is loader-bound or model-bound.

    python benchmarks/train_throughput.py --data ../shared/data                       # CPU, small settings
    python benchmarks/train_throughput.py --data /data --device cuda --amp --channels-last \\
        --size 224 --batch 16 --workers 8 --models tsn_resnet50,slowonly_r50          # a GPU

For each model, measured side by side in one process:

* ``model train``: clips/s of ``loop.train_step`` (forward, loss, backward, optimizer step, with
  the GradScaler under fp16) on clips already in memory on the device;
* ``model infer``: clips/s of a no-grad forward pass on the same clips;
* ``loader``: clips/s of the training loader alone (``VideoClipDataset`` decoding UCF101-6
  videos with the model's sampling, ``--workers`` worker processes, batches collated);
* ``end to end``: clips/s of the loader feeding ``train_step``, what a training run gets.

``loader / model train`` > 1 means the model is the bottleneck (model-bound), < 1 that decoding
is (loader-bound: add workers, ``omnisource prepare``, or faster storage). Prints a table and
writes ``--out`` (JSON) with the settings, the device name and the machine's load average.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from omnisource.config import MediaConfig, TrainConfig  # noqa: E402
from omnisource.data import importers  # noqa: E402
from omnisource.data.datasets import VideoClipDataset, make_loader  # noqa: E402
from omnisource.models import create_model  # noqa: E402
from omnisource.train.loop import build_optimizer, resolve_device, train_step  # noqa: E402
from omnisource.train.precision import amp_dtype, autocast, make_scaler, prepare_model, to_memory_format  # noqa: E402

# Sampling per model family: TSN takes one frame per segment, SlowOnly / R(2+1)D a dense clip.
DENSE_STRIDE = {"slowonly": 8, "r3d": 2, "r2plus1d": 2}


def media_for(name: str, frames: int, size: int) -> MediaConfig:
    family = name.split("_")[0]
    if family in DENSE_STRIDE:
        return MediaConfig(sampler="dense", num_segments=frames, frame_interval=DENSE_STRIDE[family],
                           input_size=size, resize_short=round(size * 8 / 7))
    return MediaConfig(sampler="tsn", num_segments=frames, input_size=size, resize_short=round(size * 8 / 7))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def measure(name: str, args, rows: list[dict], device: torch.device) -> dict:
    mcfg = media_for(name, args.frames, args.size)
    cfg = TrainConfig(batch_size=args.batch, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                      device=str(device), lr=1e-3, optimizer="sgd")
    torch.manual_seed(0)
    model = create_model(name, 6, pretrained=None, width=args.width)
    forward, fmt = prepare_model(model, device, cfg.channels_last, cfg.compile)
    scaler = make_scaler(device, amp_dtype(device, cfg.amp, cfg.amp_dtype))
    optimizer = build_optimizer(model, cfg)
    b = args.batch
    x = torch.rand(b, 3, args.frames, args.size, args.size, device=device)
    y = torch.randint(0, 6, (b,), device=device)
    out = {"model": name, "sampler": f"{mcfg.sampler} {mcfg.num_segments}x{mcfg.frame_interval}"}
    step = lambda: train_step(forward, [("target", x, y, 1.0)], optimizer, cfg, 6, device, scaler=scaler,  # noqa: E731
                              memory_format=fmt)
    out["model_train"] = b / _timed(step, args.steps, args.warmup, device)

    @torch.no_grad()
    def infer():
        model.eval()
        with autocast(device, amp_dtype(device, cfg.amp, cfg.amp_dtype)):
            forward(to_memory_format(x, fmt))

    out["model_infer"] = b / _timed(infer, args.steps, args.warmup, device)
    loader = make_loader(VideoClipDataset(rows, mcfg, train=True, seed=0), b, True, args.workers)
    batches = iter(loader)
    need = args.warmup + args.steps

    def next_batch():
        return next(batches)

    out["loader"] = b / _timed(next_batch, args.steps, args.warmup, device) if len(loader) >= need else None
    batches = iter(make_loader(VideoClipDataset(rows, mcfg, train=True, seed=1), b, True, args.workers))

    def loop_step():
        bx, by, _ = next(batches)
        train_step(forward, [("target", bx, by, 1.0)], optimizer, cfg, 6, device, scaler=scaler, memory_format=fmt)

    out["end_to_end"] = b / _timed(loop_step, args.steps, args.warmup, device) if len(loader) >= need else None
    if out["loader"]:
        out["loader_over_model"] = out["loader"] / out["model_train"]
        out["bound"] = "model-bound" if out["loader_over_model"] > 1 else "loader-bound"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding ucf101-6/videos")
    ap.add_argument("--models", default="tsn_resnet18,slowonly_r18,tsn_resnet50,slowonly_r50")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed iterations per measurement")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--amp", action="store_true", help="autocast: fp16 + GradScaler on CUDA, bf16 on CPU")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench-out/train_throughput.json"))
    args = ap.parse_args(argv)
    videos = args.data / "ucf101-6" / "videos"
    if not videos.is_dir():
        ap.error(f"{videos} not found: --data must hold ucf101-6/videos")
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = [r for r in importers.from_folders(videos).rows if r["status"] == "ok"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"device {name}, torch threads {torch.get_num_threads()}, load average {load}, batch {args.batch} x "
          f"{args.frames} frames x {args.size}², amp {args.amp}, channels_last {args.channels_last}, "
          f"compile {args.compile}, {args.workers} loader workers")
    results = []
    for model in [m for m in args.models.split(",") if m]:
        r = measure(model, args, rows, device)
        results.append(r)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{model:<16} {r['sampler']:<12} model train {fmt(r['model_train'])} clips/s, model infer "
              f"{fmt(r['model_infer'])}, loader {fmt(r['loader'])}, end to end {fmt(r['end_to_end'])}; "
              f"loader / model train {fmt(r.get('loader_over_model'))} ({r.get('bound', 'not measured')}), "
              f"infer / train {r['model_infer'] / r['model_train']:.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": name, "load_average": load,
                                    "settings": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                   indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
