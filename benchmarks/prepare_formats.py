"""x264 settings for `prepare`: file size and the CPU cost of decoding TSN clips from the output.

    python benchmarks/prepare_formats.py --data ../shared/data/ucf101-6/videos [--every 9]

Every --every-th video is prepared (short side 128, 1 s GOP) once per x264 variant into a
temporary folder; then, per variant, the CPU time (this process, one thread) of reading 8-frame
TSN clips with the product's reader (`pyav_decode.decode_pyav`, with and without non-reference
skipping) and of decoding each file whole. CPU time, not wall time, so a busy machine matters
less; every pass times every variant (in a rotated order, so a change of load lands on all of
them), and the minimum over the passes is printed, with the ratio to the first variant.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from omnisource.data import media, prepare, pyav_decode, sampling

VARIANTS = {  # x264-params on top of crf 23 / veryfast
    "cabac (x264 default)": "",
    "cavlc (cabac=0, the default)": "cabac=0",
    "cavlc + b-pyramid=none": "cabac=0:b-pyramid=none",
    "tune=fastdecode (cavlc, no deblocking, no weighted prediction)": "cabac=0:no-deblock=1:weightb=0:weightp=0",
}


def _cpu_ms(fn, paths) -> float:
    t = time.process_time()
    for p in paths:
        fn(p)
    return (time.process_time() - t) / len(paths) * 1000


def _whole(path) -> None:
    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.thread_count = 1
        for _ in c.decode(video=0):
            pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ucf101-6/videos")
    ap.add_argument("--every", type=int, default=9, help="use every n-th video (default: %(default)s)")
    ap.add_argument("--variants", default="", help="comma-separated numbers (1-based) of VARIANTS to run "
                    "(default: all); the first one is the base of the ratio")
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args(argv)
    names = list(VARIANTS)
    if args.variants:
        names = [names[int(k) - 1] for k in args.variants.split(",")]
    videos = sorted(args.data.glob("*/*.mp4"))[:: args.every]
    print(f"{len(videos)} videos from {args.data}; CPU ms per clip / per whole file "
          f"(min of {args.passes} interleaved passes)", flush=True)
    with tempfile.TemporaryDirectory(prefix="prepare-formats-") as out:
        prepared = {}
        for v, name in enumerate(names):
            x264 = dict(prepare.X264, **{"x264-params": VARIANTS[name]})
            if not VARIANTS[name]:
                x264.pop("x264-params")
            paths = [Path(out) / f"{v}-{i}.mp4" for i in range(len(videos))]
            for src, dst in zip(videos, paths):
                prepare.reencode(src, dst, x264=x264)
            prepared[name] = paths
        rng = np.random.default_rng(0)
        clips = {p: sampling.tsn_indices(media.probe(p).num_frames, 8, True, rng)
                 for paths in prepared.values() for p in paths}
        tasks = {"clip": lambda p: pyav_decode.decode_pyav(p, clips[p], short_side=128),
                 "no-skip": lambda p: pyav_decode.decode_pyav(p, clips[p], short_side=128, skip_nonref=False),
                 "whole": _whole}
        best = {(n, t): float("inf") for n in names for t in tasks}
        for k in range(args.passes):  # every pass times every variant, in a rotated order
            for name in names[k % len(names):] + names[: k % len(names)]:
                for task, fn in tasks.items():
                    best[name, task] = min(best[name, task], _cpu_ms(fn, prepared[name]))
        print(f"{'x264':<66} {'KB/file':>7} {'clip':>6} {'no-skip':>7} {'whole':>6} {'clip ratio':>10}")
        for name in names:
            size = sum(p.stat().st_size for p in prepared[name]) / len(videos) / 1024
            clip, noskip, whole = (best[name, t] for t in tasks)
            print(f"{name:<66} {size:>7.0f} {clip:>6.2f} {noskip:>7.2f} {whole:>6.2f} "
                  f"{clip / best[names[0], 'clip']:>10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
