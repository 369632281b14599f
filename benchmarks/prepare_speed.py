"""`prepare` throughput with 1 worker against more, on the same videos, in interleaved rounds.

    python benchmarks/prepare_speed.py --data ../shared/data/ucf101-6/videos [--workers 1,2] [--rounds 2]

Each round splits the videos into one part per worker count (rotated between rounds, so every
setting sees every part) and prepares each part into a fresh temporary folder with
`prepare_media(workers=N)`, pool start-up included. Printed: videos/s per setting (median over
rounds), each setting's speed-up over the first one (goal: >= 1.8x with 2 workers on 2 cores),
the CPU seconds per video (this process and its pool workers; equal CPU per video means the
speed-up is bounded only by the cores the machine gives) and the cores kept busy on average.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from omnisource.data.importers import from_folders
from omnisource.data.prepare import prepare_media


def _cpu_seconds() -> float:
    """User + system time of this process and its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ucf101-6/videos")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--videos", type=int, default=0, help="use only this many videos (0: all)")
    args = ap.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    rows = [r for r in from_folders(args.data).rows if r["status"] == "ok"]
    rows = rows[: args.videos] if args.videos else rows
    parts = [rows[i::len(counts)] for i in range(len(counts))]
    rates: dict[int, list[float]] = {w: [] for w in counts}
    cpu: dict[int, list[float]] = {w: [] for w in counts}
    cores: dict[int, list[float]] = {w: [] for w in counts}
    for r in range(args.rounds):
        for k, w in enumerate(counts):
            part = parts[(k + r) % len(parts)]
            with tempfile.TemporaryDirectory(prefix="prepare-speed-") as out:
                c0, t = _cpu_seconds(), time.perf_counter()
                done = prepare_media(part, out, workers=w, progress=False)
                wall, used = time.perf_counter() - t, _cpu_seconds() - c0
            bad = sum(d["status"] != "ok" for d in done)
            rate = len(part) / wall
            rates[w].append(rate)
            cpu[w].append(used / len(part))
            cores[w].append(used / wall)
            print(f"# round {r + 1}: {w} worker(s), {len(part)} videos, {rate:.2f} videos/s, "
                  f"{used / len(part):.3f} CPU s/video, {used / wall:.2f} cores busy"
                  + (f", {bad} failed" if bad else ""), file=sys.stderr, flush=True)
    base = statistics.median(rates[counts[0]])
    print(f"{len(rows)} videos from {args.data}, {args.rounds} rounds")
    for w in counts:
        med = statistics.median(rates[w])
        print(f"workers {w}: {med:6.2f} videos/s  speed-up over {counts[0]}: {med / base:.2f}x  "
              f"CPU {statistics.median(cpu[w]):.3f} s/video  {statistics.median(cores[w]):.2f} cores busy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
