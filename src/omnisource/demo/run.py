"""``omnisource demo``: synthetic data → import → validate → features → train → evaluate."""
from __future__ import annotations

import time
from pathlib import Path

from .. import pipeline
from ..config import dump_config, load_config
from ..runner import run_target_only
from .synthetic import generate

DEMO_OVERRIDES = [
    "target.format=folders",
    "target.val_groups=['01','02','03']",
    "target.per_class=4",
    "features.size=112",
    "features.frames=8",
    "features.head=tsn",
    "train.optimizer=adamw",
    "train.lr=0.003",
    "train.weight_decay=0.01",
    "train.epochs=40",
    "train.batch_size=8",
    "train.eval_every=10",
    "model.dropout=0.3",
]


def run_demo(workspace: Path, overrides: list[str] | None = None) -> dict:
    workspace = Path(workspace)
    t0 = time.time()
    data = workspace / "data"
    counts = generate(data)
    pipeline.console.print(f"demo data: {counts['videos']} videos, {counts['web_images']} web images in {data}")
    cfg = load_config(None, [f"workspace={workspace}", f"target.root={data / 'videos'}", *DEMO_OVERRIDES,
                             *(overrides or [])])
    workspace.mkdir(parents=True, exist_ok=True)
    pipeline.atomic_write_text(workspace / "config.yaml", dump_config(cfg))
    metrics = run_target_only(cfg, workspace)
    pipeline.console.print(f"demo finished in {time.time() - t0:.0f} s: target-only top-1 {metrics['top1']:.3f}, "
                           f"mean class accuracy {metrics['mean_class_accuracy']:.3f} "
                           f"({metrics['num_samples']} validation clips)")
    return metrics
