"""``omnisource demo``: the whole OmniSource pipeline on synthetic data, three settings side by side.

target-only (the teacher), OmniSource (teacher-filtered web images + untrimmed web videos,
joint training), and OmniSource without the teacher filter. The no-filter variant is its own
workspace under ``variants/`` sharing the feature cache of the main one.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from .. import pipeline
from ..config import dump_config, load_config
from ..runner import run_pipeline
from .synthetic import generate, web_manifests

DEMO_OVERRIDES = [
    "target.format=folders",
    "target.val_groups=['01','02','03','04']",
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
    "omni.threshold=0.5",
]


def run_demo(workspace: Path, overrides: list[str] | None = None) -> dict:
    workspace = Path(workspace)
    t0 = time.time()
    data = workspace / "data"
    counts = generate(data)
    manifests = web_manifests(data)
    pipeline.console.print(f"demo data: {counts['videos']} target videos, {counts['web_images']} web images, "
                           f"{counts['web_videos']} untrimmed web videos in {data}")
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{manifests['images']}'}}, "
           f"{{name: untrimmed, kind: untrimmed, format: manifest, root: '{manifests['untrimmed']}'}}]")
    base = [f"target.root={data / 'videos'}", *DEMO_OVERRIDES, web, *(overrides or [])]
    results = {}
    for name, extra, ws in (("omnisource", [], workspace),
                            ("omnisource_nofilter", ["omni.filter=none", "omni.student_run=omnisource_nofilter",
                                                     f"features.cache_root={workspace / 'features'}"],
                             workspace / "variants" / "nofilter")):
        cfg = load_config(None, [f"workspace={ws}", *base, *extra])
        ws.mkdir(parents=True, exist_ok=True)
        pipeline.atomic_write_text(ws / "config.yaml", dump_config(cfg))
        pipeline.console.rule(name)
        results.update(run_pipeline(cfg, ws))
    table = Table(title=f"omnisource demo ({time.time() - t0:.0f} s): validation on held-out groups")
    for col in ("setting", "top-1", "mean class acc.", "validation clips"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for name in ("target_only", "omnisource", "omnisource_nofilter"):
        m = results[name]
        table.add_row(name, f"{m['top1']:.3f}", f"{m['mean_class_accuracy']:.3f}", str(m["num_samples"]))
    pipeline.console.print(table)
    return results
