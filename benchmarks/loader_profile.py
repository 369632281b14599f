"""CPU time per training clip by stage: the product's `VideoClipDataset` beside the peer harness's
torchcodec-tsn pipeline, on the same videos in one process (no DataLoader, one thread).

    OMNISOURCE_PREPARED=/tmp/prep PYTHONPATH=src /tmp/peers-venv/bin/python benchmarks/loader_profile.py \\
        --prepared --clips 400 [--cprofile ours]

The clips are the videos the harness's RandomSampler draws (seed 0), each loaded by both pipelines
in turn (which one goes first alternates per clip), so a change of load lands on both. Stages are
timed by wrapping the functions each pipeline calls (exclusive time: a stage nested in another is
not counted twice); what is left of `__getitem__` is "glue" (Python bookkeeping between stages,
and the wrappers' own cost of ~2 us per call, which falls on ours: ~2 wrapped calls per decoded
frame). So each clip is loaded twice per side: plain for the totals and the ratio, then wrapped
for the stages.
Every 8 clips are collated and finalised as the harness does (`default_collate`, then uint8 ->
normalised float32). CPU seconds come from `time.process_time` and stay valid under load; the
paired ratio's 95 % interval is a bootstrap over clips. `--cprofile ours|torchcodec` prints the
top functions of that side's `__getitem__` instead of the stage table.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
import loader_rounds  # noqa: E402 - beside this file: where the harness and the data are


class Stages:
    """Exclusive CPU (and wall) time per named stage, over wrapped functions."""

    def __init__(self):
        self.cpu, self.wall, self.calls = defaultdict(float), defaultdict(float), defaultdict(int)
        self.stack: list[list] = []  # [name, cpu0, wall0, child cpu, child wall]
        self.saved: list[tuple] = []

    def enter(self, name: str) -> None:
        self.stack.append([name, time.process_time(), time.perf_counter(), 0.0, 0.0])

    def leave(self) -> None:
        c1, w1 = time.process_time(), time.perf_counter()
        name, c0, w0, cc, cw = self.stack.pop()
        self.cpu[name] += c1 - c0 - cc
        self.wall[name] += w1 - w0 - cw
        self.calls[name] += 1
        if self.stack:
            self.stack[-1][3] += c1 - c0
            self.stack[-1][4] += w1 - w0

    def wrap(self, obj, attr: str, name: str) -> None:
        orig = getattr(obj, attr)

        def timed(*a, **k):
            self.enter(name)
            try:
                return orig(*a, **k)
            finally:
                self.leave()

        self.saved.append((obj, attr, orig))
        setattr(obj, attr, timed)

    def restore(self) -> None:
        for obj, attr, orig in reversed(self.saved):
            setattr(obj, attr, orig)
        self.saved.clear()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(loader_rounds.HARNESS.parents[2] / "data/ucf101-6/videos"))
    ap.add_argument("--prepared", action="store_true", help="both read the prepare_media output "
                    "(OMNISOURCE_PREPARED=DIR, as benchmarks/loader_plugin.py)")
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=16, help="untimed clips first (imports, swscale contexts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cprofile", choices=["ours", "torchcodec"])
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    import torchcodec.decoders
    from torch.utils.data import RandomSampler, default_collate

    torch.set_num_threads(1)  # as in a DataLoader worker
    harness = loader_rounds._load(loader_rounds.HARNESS, "loader_bench")
    plugin = loader_rounds._load(_HERE / "loader_plugin.py", "_profile_plugin")

    import av
    from omnisource.config import MediaConfig
    from omnisource.data import containers, datasets, media, pyav_decode, transforms
    from omnisource.data.datasets import VideoClipDataset
    from omnisource.models.layers import IMAGENET_MEAN, IMAGENET_STD, Normalize

    root = str(Path(args.data).resolve())
    _, items = harness.list_videos(root)
    rows = plugin._prepared_rows(root, items) if args.prepared else plugin._rows(items)
    ours = VideoClipDataset(rows, MediaConfig(backend="pyav"), train=True, seed=args.seed)
    theirs_items = [(r["path"], r["path"], label) for (_, _, label), r in zip(items, rows)]
    theirs = harness._TorchcodecTSN(theirs_items, False)
    torch.manual_seed(args.seed)
    order = list(RandomSampler(range(len(items)), replacement=False, num_samples=args.warmup + args.clips))
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, ndim=5)

    st = {"ours": Stages(), "torchcodec": Stages()}

    def instrument(side: str) -> None:
        s = st[side]
        if side == "ours":
            for obj, attr, name in [
                    (datasets, "clip_indices", "index"), (datasets, "frame_span", "index"),
                    (av, "open", "open"), (containers, "video_info", "open"), (pyav_decode, "video_info", "open"),
                    (pyav_decode, "check_file", "open"), (media, "_check_file", "open"),
                    (pyav_decode.ForwardDecoder, "__init__", "open"),
                    (pyav_decode.ForwardDecoder, "maybe_seek", "seek"),
                    (pyav_decode.ForwardDecoder, "next", "demux+decode"),
                    (pyav_decode, "to_rgb", "convert (+resize)"),
                    (transforms, "resize_short", "crop/flip"), (transforms, "random_crop", "crop/flip"),
                    (transforms, "hflip", "crop/flip"), (transforms, "to_uint8_tensor", "to tensor (copy)")]:
                s.wrap(obj, attr, name)
        else:
            for obj, attr, name in [
                    (harness, "_tsn_indices", "index"), (torchcodec.decoders, "VideoDecoder", "open"),
                    (torchcodec.decoders.VideoDecoder, "get_frames_at", "seek+decode+convert"),
                    (F, "interpolate", "resize")]:
                s.wrap(obj, attr, name)

    def item(side: str, i: int, timed: bool):
        ds = ours if side == "ours" else theirs
        if not timed:
            return ds[i]
        s = st[side]
        instrument(side)
        try:
            s.enter("glue")
            try:
                return ds[i]
            finally:
                s.leave()
        finally:
            s.restore()

    def finalize(side: str, batch, timed: bool) -> None:
        s = st[side]
        if timed:
            s.enter("collate")
        b = default_collate(batch)
        if timed:
            s.leave()
            s.enter("finalize (main)")
        with torch.no_grad():
            if side == "ours":
                normalize(transforms.to_float(b[0]))
            else:
                harness._normalise_float(b[0])
        if timed:
            s.leave()

    for i in order[:args.warmup]:
        item("ours", i, False)
        item("torchcodec", i, False)

    prof = cProfile.Profile() if args.cprofile else None
    per_clip = {"ours": [], "torchcodec": []}
    batches = {"ours": [], "torchcodec": []}
    t_start = time.perf_counter()
    for n, i in enumerate(order[args.warmup:]):
        for side in (("ours", "torchcodec") if n % 2 == 0 else ("torchcodec", "ours")):
            if prof is not None and side == args.cprofile:
                prof.enable()
                item(side, i, False)
                prof.disable()
                continue
            c0 = time.process_time()  # the totals: plain __getitem__ (the wrappers cost per call)
            batches[side].append(item(side, i, False))
            if len(batches[side]) == 8:
                finalize(side, batches[side], False)
            per_clip[side].append(time.process_time() - c0)
            if prof is None:  # then the same clip again, by stage (collate and finalize: their own timers)
                item(side, i, True)
                if len(batches[side]) == 8:
                    finalize(side, batches[side], True)
            if len(batches[side]) == 8:
                batches[side] = []
    wall = time.perf_counter() - t_start

    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
        return 0

    n = args.clips
    print(f"{n} clips ({'prepared files' if args.prepared else 'original files'}), both pipelines per clip, "
          f"{wall:.1f} s wall for both; CPU ms per clip (exclusive, process_time) and calls per clip")
    names = ["index", "open", "seek", "demux+decode", "seek+decode+convert", "convert (+resize)", "resize",
             "crop/flip", "to tensor (copy)", "glue", "collate", "finalize (main)"]
    print(f"{'stage':<22} {'ours ms':>8} {'calls':>6} {'torchcodec ms':>13} {'calls':>6}")
    for name in names:
        row = [st[s].cpu.get(name) for s in ("ours", "torchcodec")]
        if all(v is None for v in row):
            continue
        cells = []
        for s in ("ours", "torchcodec"):
            v = st[s].cpu.get(name)
            cells.append(f"{1000 * v / n:>8.3f} {st[s].calls[name] / n:>6.1f}" if v is not None else f"{'-':>8} {'':>6}")
        print(f"{name:<22} {cells[0]} {cells[1]:>20}")
    tot = {s: sum(st[s].cpu.values()) for s in st}
    print(f"{'total (instrumented)':<22} {1000 * tot['ours'] / n:>8.3f} {'':>6} {1000 * tot['torchcodec'] / n:>13.3f}")
    a, b = np.array(per_clip["ours"]), np.array(per_clip["torchcodec"])
    rng = np.random.default_rng(0)
    boot = [b[k].sum() / a[k].sum() for k in (rng.integers(0, n, n) for _ in range(2000))]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(f"{'total (plain)':<22} {1000 * a.mean():>8.3f} {'':>6} {1000 * b.mean():>13.3f}")
    print(f"clips per CPU s (plain): ours {n / a.sum():.2f}, torchcodec-tsn {n / b.sum():.2f}; "
          f"ours / torchcodec-tsn {b.sum() / a.sum():.3f} (95 % bootstrap {lo:.3f}..{hi:.3f}); "
          f"wall share of stages: ours {sum(st['ours'].wall.values()):.1f} s, "
          f"torchcodec {sum(st['torchcodec'].wall.values()):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
