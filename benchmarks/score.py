"""Teacher scoring throughput: end-to-end images/s against the model-only forward rate.

    python benchmarks/score.py --data ../shared/data [--images 512] [--workers 2]

End to end = the product's pixel-mode scorer (``teacher.pixels``): decode + resize + crop in
loader workers, TSN-EfficientNet-Lite0 forward, softmax, top-5 records. Model only = the same
forward on the same batches already decoded in memory. Goal: end to end >= 85 % of model only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from omnisource.config import load_config
from omnisource.data.datasets import VideoClipDataset, make_loader
from omnisource.data import transforms
from omnisource.data.manifest import new_row
from omnisource.models import create_model
from omnisource.teacher.score import Teacher
from omnisource.teacher.pixels import pixel_scorer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder holding web-sports/")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    args = ap.parse_args(argv)
    files = sorted((args.data / "web-sports").glob("*/*.jpg"))[: args.images]
    if not files:
        ap.error(f"no images under {args.data / 'web-sports'}")
    rows = [new_row("images", "image", str(f)) for f in files]
    cfg = load_config(None, ["mode=pixels", "media.num_segments=1", f"media.input_size={args.size}",
                             f"media.resize_short={args.size}", f"train.batch_size={args.batch}",
                             f"train.num_workers={args.workers}", "train.device=cpu"])
    model = create_model("tsn_efficientnet_lite0", 6, pretrained="imagenet").eval()
    teacher = Teacher(model, cfg, [str(i) for i in range(6)], Path("."))
    score = pixel_scorer([teacher], cfg, "image", torch.device("cpu"))

    loader = make_loader(VideoClipDataset(rows, cfg.media, False), args.batch, False, 0)
    batches = [transforms.to_float(x) for x, *_ in loader]  # decoded once, kept in memory
    with torch.no_grad():
        model(batches[0])  # warm-up
        t0 = time.perf_counter()
        for x in batches:
            model(x).softmax(-1)
        model_only = len(rows) / (time.perf_counter() - t0)

    score(rows[: args.batch])  # warm-up (worker start-up is counted below, as in a real run)
    t0 = time.perf_counter()
    records = score(rows)
    end_to_end = len(records) / (time.perf_counter() - t0)
    print(f"images: {len(rows)} at {args.size}px, batch {args.batch}, {args.workers} loader workers, "
          f"torch threads {torch.get_num_threads()}")
    print(f"model only   {model_only:8.1f} images/s")
    print(f"end to end   {end_to_end:8.1f} images/s")
    print(f"ratio        {end_to_end / model_only:8.2f}  (goal >= 0.85)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
