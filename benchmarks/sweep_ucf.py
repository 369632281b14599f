"""The paper's label-amount and batch-ratio analyses (OmniSource Figs. 7, 8) on real data, via
the product's ``omnisource sweep`` functions, ending with the HTML report.

    python benchmarks/sweep_ucf.py --data ../shared/data --out bench-out/sweep_ucf \
        [--features bench-out/ucf_web/features] [--kinds labels,ratio]

Target: UCF101-6 (train groups 12-25, validation groups 08-11); web source: the web-sports
query folders, the four target queries mapped to their classes (the other queries name no
class and are dropped by the teacher filter). Feature mode with EfficientNet-Lite0 (128 px,
8 frames); ``--features`` (a cache made by benchmarks/ucf_web.py) is copied under --out and
reused, so no feature is computed twice. Prints each sweep's table; sweep_*.json/csv/png and
report/index.html land in --out/workspace.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from omnisource.config import load_config
from omnisource.evaluate.protocol import QUERY_MAP, TRAIN_GROUPS, VAL_GROUPS
from omnisource.report import write_report
from omnisource.sweep import sweep_labels, sweep_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ucf_web import require_data  # noqa: E402


def overrides(data: Path, cache: Path, epochs: int, seed: int) -> list[str]:
    qmap = ", ".join(f"'{q}': {c}" for q, c in QUERY_MAP.items())
    return [f"target.root={data / 'ucf101-6' / 'videos'}", "target.format=folders",
            f"target.val_groups={VAL_GROUPS}", f"target.train_groups={TRAIN_GROUPS}", f"target.seed={seed}",
            "features.size=128", "features.frames=8", f"features.cache_root={cache}",
            f"train.epochs={epochs}", "train.batch_size=8", "train.optimizer=adamw", "train.lr=0.001",
            "train.weight_decay=0.0001", f"train.eval_every={epochs}", f"train.seed={seed}", "train.device=cpu",
            "omni.filter=both", "omni.threshold=0.5", f"omni.seed={seed}",
            f"web=[{{name: images, kind: image, root: '{data / 'web-sports'}', query_map: {{{qmap}}}}}]"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder holding ucf101-6/ and web-sports/")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--features", type=Path, default=None, help="an existing feature cache root to copy and reuse")
    ap.add_argument("--kinds", default="labels,ratio", help="sweeps to run: labels, ratio (comma separated)")
    ap.add_argument("--amounts", default="3%,10%,30%", help="label subsets of `sweep labels`")
    ap.add_argument("--ratios", default="0.25,0.5,1.0", help="|B_A|/|B_T| values of `sweep ratio`")
    ap.add_argument("--ratio-amount", default="10%", help="label subset the ratio sweep runs on")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    require_data(ap, args.data)
    torch.set_num_threads(2)
    t0 = time.time()
    data, cache = args.data.resolve(), (args.out / "features").resolve()
    if args.features and not cache.exists():
        shutil.copytree(args.features, cache)  # the source cache stays read-only
    ws = (args.out / "workspace").resolve()
    cfg = load_config(None, [f"workspace={ws}", *overrides(data, cache, args.epochs, args.seed)])
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if "labels" in kinds:
        sweep_labels(cfg, ws, args.amounts.split(","))
    if "ratio" in kinds:
        # The ratio sweep on one label subset: its own base workspace so that its points are
        # full pipelines on that subset (sweep labels writes the subset manifest).
        sub = load_config(None, [f"workspace={ws}", *overrides(data, cache, args.epochs, args.seed)])
        subset = ws / "sweeps" / "labels" / args.ratio_amount.replace("%", "pct") / "subset.parquet"
        if not subset.exists():
            sweep_labels(cfg, ws, [args.ratio_amount])
        sub.target.format, sub.target.annotations = "manifest", str(subset)
        sweep_ratio(sub, ws, [float(r) for r in args.ratios.split(",")])
    print(f"report: {write_report(cfg, ws)}")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
