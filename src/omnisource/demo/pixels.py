"""``omnisource demo mode=pixels``: the OmniSource story with whole (small) networks on a CPU.

The synthetic data of the feature demo (``demo.synthetic``), and the pipeline a GPU user runs
in pixel mode, shrunk to 2 CPU cores (64 px, small networks):

* the target-only run is a (2+1)D network, 8 frames at stride 2: the offline ImageNet
  EfficientNet-Lite0's spatial convolutions (frozen) with zero-initialised temporal
  convolutions (``efficientnet_lite0_2plus1d``; a SlowOnly from scratch stayed at chance on 60
  labelled clips, and inflating a ResNet needs torchvision's weights). It is the baseline, the 3D
  teacher of the untrimmed web videos — it scores their 2 s clips and ``omni.untrimmed=clips``
  keeps the positive ones (OmniSource §3.5) — and the student's architecture;
* a 2D teacher for the web images (``omni.teachers``: TSN over the offline ImageNet
  EfficientNet-Lite0, 4 segments), since deflating a 3D teacher to score images hurts (§3.2);
* the student trains jointly on target clips, kept web images turned into pseudo-clips by
  class-agnostic perspective warps (§3.4) and kept clips (batch ratio 2:1:1, Eq. 1);
* the report, which says which teacher scored which source.

One training seed (whole networks; the feature demo runs three). The workspace is
``<workspace>/pixels``; the generated data goes to ``<workspace>/data`` and is shared with the
feature demo when both use the same folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.table import Table

from ..config import dump_config, load_config
from ..console import console
from ..data.manifest import atomic_write_text, read_manifest
from ..report import write_report
from ..runner import run_pipeline
from ..workspace import Workspace
from .synthetic import generate, web_manifests

PIXEL_OVERRIDES = [
    "mode=pixels",
    "target.format=folders",
    "target.val_groups=['01','02','03','04','05','06']",
    "target.per_class=10",
    "model.name=efficientnet_lite0_2plus1d",
    "model.pretrained=imagenet",
    "model.dropout=0.3",
    "media.sampler=dense",
    "media.num_segments=8",
    "media.frame_interval=2",
    "media.input_size=64",
    "media.resize_short=72",
    "train.optimizer=adamw",
    "train.lr=0.001",
    "train.weight_decay=0.01",
    "train.epochs=12",
    "train.batch_size=8",
    "train.eval_every=12",
    "train.num_workers=1",
    "omni.teachers=[{name: tsn2d, overrides: {model.name: tsn_efficientnet_lite0, model.pretrained: imagenet, model.width: 1.0, "
    "media.sampler: tsn, media.num_segments: 4, train.lr: 0.001}}]",
    "omni.untrimmed=clips",
    "omni.clip_seconds=2",
    "omni.score_views=2",
    "omni.filter=both",
    "omni.threshold=0.5",
    "omni.frame_threshold=0.5",
    "omni.image_to_clip=perspective",
    "omni.resample=power",
    "omni.resample_power=0.2",
    # As in the feature demo: the synthetic scenes make the dedup's measured threshold flag web
    # renders as near-copies of validation videos, and its 128 px embedding of every validation
    # frame and web item is work the story does not need (`omnisource clean dedup` on demand).
    "clean.dedup=false",
]
# Data: the feature demo's generator with fewer web images (scoring and rendering cost here).
DATA = dict(groups=16, clips_per_group=3, web_per_class=60, untrimmed_per_class=15)


def run_pixel_demo(workspace: Path, overrides: list[str] | None = None) -> dict:
    """Returns {run: validation metrics} and prints them with the kept counts per source."""
    workspace = Path(workspace)
    t0 = time.time()
    data = workspace / "data"
    counts = generate(data, **DATA)
    manifests = web_manifests(data)
    console.print(f"demo data: {counts['videos']} target videos, {counts['web_images']} web images, "
                  f"{counts['web_videos']} untrimmed web videos in {data}")
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{manifests['images']}', batch_ratio: 0.5, "
           f"teachers: [tsn2d]}}, {{name: untrimmed, kind: untrimmed, format: manifest, "
           f"root: '{manifests['untrimmed']}', batch_ratio: 0.5, teachers: [target_only]}}]")
    ws = Workspace(workspace / "pixels")
    cfg = load_config(None, [f"workspace={ws}", f"target.root={data / 'videos'}", *PIXEL_OVERRIDES, web,
                             *(overrides or [])])
    ws.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ws.config_file, dump_config(cfg))
    results = run_pipeline(cfg, ws)
    kept = {}
    for src in cfg.web:
        sel = json.loads(ws.selection(src.name).read_text())
        kept[src.name] = {"teachers": sel.get("teachers", []), "kept": sel["kept"], "scored": sel["scored"],
                          "training_samples": len(read_manifest(ws.web(src.name, "train")).rows),
                          "precision": (sel.get("filter") or {}).get("precision")}
    table = Table(title=f"omnisource demo, pixel mode ({time.time() - t0:.0f} s): validation on held-out groups, "
                        "one training seed")
    for col in ("run", "top-1 %", "mean class acc. %", "validation clips"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, m in results.items():
        table.add_row(name, f"{100 * m['top1']:.1f}", f"{100 * m['mean_class_accuracy']:.1f}", str(m["num_samples"]))
    console.print(table)
    sources = Table(title="web sources")
    for col in ("source", "teachers", "kept / scored", "training samples", "filter precision"):
        sources.add_column(col, justify="left" if col in ("source", "teachers") else "right")
    for name, k in kept.items():
        sources.add_row(name, ", ".join(k["teachers"]), f"{k['kept']} / {k['scored']}", str(k["training_samples"]),
                        "" if k["precision"] is None else f"{k['precision']:.2f}")
    console.print(sources)
    empty = [name for name, k in kept.items() if not k["training_samples"]]
    if empty:
        console.print(f"[red]web sources with no kept sample: {', '.join(empty)}[/]")
    console.print(f"report: {write_report(cfg, ws)}")
    atomic_write_text(ws.path("demo_results.json"), json.dumps(
        {"runs": {n: {k: m[k] for k in ("top1", "top5", "mean_class_accuracy", "num_samples")}
                  for n, m in results.items()}, "sources": kept, "seconds": round(time.time() - t0)}, indent=2))
    return {"runs": results, "sources": kept}
