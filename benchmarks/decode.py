"""Training-loader throughput vs a decode-only upper bound and a seek-per-frame loader.

    python benchmarks/decode.py --data ../shared/data [--videos 60] [--workers 2] [--prepared]

All three run the same videos through a torch DataLoader with the same worker count (one torch
thread per worker):
  loader       8 frames by TSN train sampling -> media.read_frames (decode forward once per clip,
               seek only across keyframes) -> resize short side 128 -> random 112x112 crop -> tensor
  decode-only  decode every frame of each video sequentially (no colour conversion, no transforms);
               clips/s = videos / time, i.e. the cost of decoding each whole clip once
  seek/frame   the same 8 frames, but container.seek to each one and decode forward to it
Goal (issue): loader >= 70 % of the decode-only rate. --prepared also times the loader on copies
re-encoded by data.prepare (short side 128, 1 s GOP).
"""
from __future__ import annotations

import argparse
import glob
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from omnisource.data import media, prepare, sampling, transforms

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
            frame = None
            for frame in c.decode(s):
                if frame.pts is not None and frame.pts >= target:
                    break
            out.append(frame.to_ndarray(format="rgb24"))
    return np.stack(out)


class Clips(Dataset):
    def __init__(self, rows: list[dict], mode: str):
        self.rows, self.mode = rows, mode

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        rng = np.random.default_rng(i)
        if self.mode == "decode":
            with av.open(row["path"]) as c:
                s = c.streams.video[0]
                s.codec_context.thread_count = 1
                n = sum(1 for _ in c.decode(s))
            return torch.tensor(n)
        idx = sampling.tsn_indices(row["num_frames"], FRAMES, train=True, rng=rng)
        if self.mode == "seek":
            return _clip(seek_per_frame(row["path"], np.sort(idx)), rng)
        return _clip(media.read_frames(row["path"], idx, backend="pyav"), rng)


def _one_thread(_):
    torch.set_num_threads(1)


def timed(rows: list[dict], mode: str, workers: int, repeats: int) -> tuple[float, int]:
    """Median seconds over `repeats` full passes (workers started and warmed before timing)."""
    loader = DataLoader(Clips(rows, mode), batch_size=8, num_workers=workers, worker_init_fn=_one_thread,
                        persistent_workers=workers > 0, collate_fn=lambda b: b)
    next(iter(loader))  # start the workers
    times, frames = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = sum(int(x) if x.ndim == 0 else 0 for batch in loader for x in batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), frames


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--videos", type=int, default=60)
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
    t_dec, frames = timed(rows, "decode", args.workers, args.repeats)
    t_load, _ = timed(rows, "loader", args.workers, args.repeats)
    t_seek, _ = timed(rows, "seek", args.workers, max(1, args.repeats - 2))
    table = [("decode-only (every frame)", n / t_dec, frames / t_dec),
             ("loader (read_frames)", n / t_load, n * FRAMES / t_load),
             ("seek per frame", n / t_seek, n * FRAMES / t_seek)]
    if args.prepared:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            prep = prepare.prepare_media(rows, tmp, short_side=RESIZE, workers=args.workers, progress=False)
            print(f"prepare: {n} videos re-encoded in {time.perf_counter() - t0:.1f} s")
            t_prep, _ = timed(prep, "loader", args.workers, args.repeats)
            t_pdec, pframes = timed(prep, "decode", args.workers, args.repeats)
        table += [("decode-only, prepared", n / t_pdec, pframes / t_pdec),
                  ("loader, prepared", n / t_prep, n * FRAMES / t_prep)]
    print(f"\n{'method':28s} {'clips/s':>9s} {'frames/s':>10s}")
    for name, clips, fps in table:
        print(f"{name:28s} {clips:9.1f} {fps:10.0f}")
    print(f"\nloader / decode-only = {t_dec / t_load:.2f}   (goal >= 0.70)")
    print(f"loader / seek-per-frame = {t_seek / t_load:.2f}")
    if args.prepared:
        print(f"prepared loader / original loader = {t_load / t_prep:.2f}")


if __name__ == "__main__":
    main()
