"""Training-loader throughput vs a decode-only upper bound and a seek-per-frame loader.

    python benchmarks/decode.py --data ../shared/data [--videos 100] [--workers 2] [--prepared]

All three run the same videos through a torch DataLoader with the same worker count (one torch
thread per worker):
  loader       8 frames by TSN train sampling -> media.read_frames (decode forward once per clip,
               seek only across keyframes) -> resize short side 128 -> random 112x112 crop -> tensor
  decode-only  decode every frame of each video sequentially (no colour conversion, no transforms);
               clips/s = videos / time, i.e. the cost of decoding each whole clip once
  seek/frame   the same 8 frames, but container.seek to each one and decode forward to it
Goal (issue): loader >= 70 % of the decode-only rate. --prepared also times the loader on copies
re-encoded by data.prepare (short side 128, 1 s GOP).

Reported per method: wall-clock clips/s and frames/s, and CPU ms per clip (workers + main process,
from getrusage). On a machine shared with other jobs the wall-clock rates swing and the scheduler
does not share the cores evenly between the methods; the CPU-time ratio is the stable figure.
"""
from __future__ import annotations

import argparse
import glob
import resource
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from omnisource.data import media, prepare, sampling, transforms
from omnisource.data.datasets import worker_loader

FRAMES, RESIZE, CROP = 8, 128, 112


def _clip(frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    return transforms.to_tensor(transforms.random_crop(transforms.resize_short(frames, RESIZE), CROP, rng))


def seek_per_frame(path: str, indices) -> np.ndarray:
    """The naive reader: one accurate seek per wanted frame (keyframe, then decode up to it)."""
    out = []
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        step = 1 / float(s.time_base * s.average_rate)
        start = s.start_time or 0
        for i in indices:
            target = start + int(round(i * step))
            c.seek(target, stream=s, backward=True)
            frame, frames = None, c.decode(s)
            for frame in frames:
                if frame.pts is not None and frame.pts >= target:
                    break
            frames.close()  # before the container closes (see media._ForwardDecoder.close)
            out.append(frame.to_ndarray(format="rgb24"))
    return np.stack(out)


class Clips(Dataset):
    def __init__(self, rows: list[dict], mode: str):
        self.rows, self.mode = rows, mode

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.load(self.rows[i], np.random.default_rng(i))

    def load(self, row: dict, rng: np.random.Generator):
        if self.mode == "decode":
            with av.open(row["path"]) as c:
                s = c.streams.video[0]
                s.codec_context.thread_count = 1
                return torch.tensor(sum(1 for _ in c.decode(s)))
        idx = sampling.tsn_indices(row["num_frames"], FRAMES, train=True, rng=rng)
        if self.mode == "seek":
            return _clip(seek_per_frame(row["path"], np.sort(idx)), rng)
        return _clip(media.read_frames(row["path"], idx, backend="pyav"), rng)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(rows: list[dict], modes: list[str], workers: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Per mode: (median wall seconds of a full pass, median CPU seconds of a pass, workers and
    main process together). CPU time stays meaningful when other jobs share the cores and wall
    rates swing. Passes of the modes alternate, so drifts shift all modes alike. Workers are
    forked afresh for each pass (~0.1 s, counted; joined workers' CPU shows in RUSAGE_CHILDREN):
    persistent workers would keep prefetching for one mode while another is timed."""
    loaders = {m: worker_loader(Clips(rows, m), batch_size=8, num_workers=workers) for m in modes}
    times, cpus = {m: [] for m in modes}, {m: [] for m in modes}
    for r in range(repeats):
        for m, loader in loaders.items():
            if m == "seek" and r > 0:  # slow and stable: one pass is enough
                continue
            t0, cpu0 = time.perf_counter(), _cpu()
            for _ in loader:
                pass
            times[m].append(time.perf_counter() - t0)
            cpus[m].append(_cpu() - cpu0)
    return {m: (statistics.median(times[m]), statistics.median(cpus[m])) for m in modes}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prepared", action="store_true", help="also time re-encoded copies")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    paths = sorted(glob.glob(str(Path(args.data) / "ucf101-6/videos/*/*.mp4")))
    if not paths:
        raise SystemExit(f"no videos under {args.data}/ucf101-6/videos")
    paths = paths[:: max(1, len(paths) // args.videos)][: args.videos]
    rows = [{"id": Path(p).stem, "kind": "video", "path": p, "status": "ok", "reason": "",
             "start_s": None, "end_s": None, "num_frames": media.probe(p).num_frames} for p in paths]
    n = len(rows)
    print(f"{n} videos, {sum(r['num_frames'] for r in rows) / n:.0f} frames each on average, "
          f"{args.workers} workers, torchcodec {'available' if media._TorchcodecDecoder else 'absent'}")
    t = timed(rows, ["decode", "loader", "seek"], args.workers, args.repeats)
    frames = sum(r["num_frames"] for r in rows)
    table = [("decode-only (every frame)", t["decode"], frames),
             ("loader (read_frames)", t["loader"], n * FRAMES),
             ("seek per frame", t["seek"], n * FRAMES)]
    if args.prepared:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            prep = prepare.prepare_media(rows, tmp, short_side=RESIZE, workers=args.workers, progress=False)
            print(f"prepare: {n} videos re-encoded in {time.perf_counter() - t0:.1f} s")
            tp = timed(prep, ["decode", "loader"], args.workers, args.repeats)
        pframes = sum(r["num_frames"] for r in prep if r["status"] == "ok")
        table += [("decode-only, prepared", tp["decode"], pframes),
                  ("loader, prepared", tp["loader"], n * FRAMES)]
    print(f"\n{'method':28s} {'clips/s':>8s} {'frames/s':>9s} {'CPU ms/clip':>12s} "
          f"{'clips/s if CPU-bound':>21s}")
    for name, (wall, cpu), nframes in table:
        print(f"{name:28s} {n / wall:8.1f} {nframes / wall:9.0f} {1000 * cpu / n:12.1f} "
              f"{max(args.workers, 1) * n / cpu:21.1f}")
    (dw, dc), (lw, lc), (sw, sc) = t["decode"], t["loader"], t["seek"]
    print(f"\nloader / decode-only: {dw / lw:.2f} by wall clock, {dc / lc:.2f} by CPU time "
          "(goal >= 0.70)")
    print(f"loader / seek-per-frame: {sw / lw:.2f} by wall clock, {sc / lc:.2f} by CPU time")
    if args.prepared:
        (pdw, pdc), (plw, plc) = tp["decode"], tp["loader"]
        print(f"prepared: loader / decode-only {pdw / plw:.2f} (CPU {pdc / plc:.2f}); "
              f"prepared loader / original loader {lw / plw:.2f} (CPU {lc / plc:.2f})")

if __name__ == "__main__":
    main()
