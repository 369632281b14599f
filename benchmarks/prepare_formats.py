"""x264 settings for `prepare`: file size and the CPU cost of decoding TSN clips from the output.

    python benchmarks/prepare_formats.py --data ../shared/data/ucf101-6/videos [--every 9]

Every --every-th video is prepared (short side 128, 1 s GOP) once per x264 variant into a
temporary folder; then, per variant, the CPU time (this process, one thread) of reading 8-frame
TSN clips with the product's reader (`pyav_decode.decode_pyav`, with and without non-reference
skipping) and of decoding each file whole. CPU time, not wall time, so a busy machine matters
less; the minimum over 3 passes is printed, with the ratio to the first variant.
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


def _cpu_ms(fn, paths, passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        t = time.process_time()
        for p in paths:
            fn(p)
        best = min(best, (time.process_time() - t) / len(paths) * 1000)
    return best


def _whole(path) -> None:
    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.thread_count = 1
        for _ in c.decode(video=0):
            pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ucf101-6/videos")
    ap.add_argument("--every", type=int, default=9, help="use every n-th video (default: %(default)s)")
    args = ap.parse_args(argv)
    videos = sorted(args.data.glob("*/*.mp4"))[:: args.every]
    rows, base = [], None
    print(f"{len(videos)} videos from {args.data}; CPU ms per clip / per whole file (min of 3 passes)")
    print(f"{'x264':<66} {'KB/file':>7} {'clip':>6} {'no-skip':>7} {'whole':>6} {'clip ratio':>10}")
    for name, params in VARIANTS.items():
        with tempfile.TemporaryDirectory(prefix="prepare-formats-") as out:
            x264 = dict(prepare.X264, **{"x264-params": params})
            if not params:
                x264.pop("x264-params")
            saved, prepare.X264 = prepare.X264, x264
            try:
                paths = [Path(out) / f"{i}.mp4" for i in range(len(videos))]
                for src, dst in zip(videos, paths):
                    prepare.reencode(src, dst)
            finally:
                prepare.X264 = saved
            size = sum(p.stat().st_size for p in paths) / len(paths) / 1024
            rng = np.random.default_rng(0)
            clips = {p: sampling.tsn_indices(media.probe(p).num_frames, 8, True, rng) for p in paths}
            skip = _cpu_ms(lambda p: pyav_decode.decode_pyav(p, clips[p], short_side=128), paths)
            noskip = _cpu_ms(lambda p: pyav_decode.decode_pyav(p, clips[p], short_side=128, skip_nonref=False), paths)
            whole = _cpu_ms(_whole, paths)
        base = base or skip
        print(f"{name:<66} {size:>7.0f} {skip:>6.2f} {noskip:>7.2f} {whole:>6.2f} {skip / base:>10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
