"""``omnisource demo``: the whole OmniSource pipeline on synthetic data, three settings side by side.

target-only (the teacher), OmniSource (teacher-filtered web images + untrimmed web videos,
joint training), and OmniSource without the teacher filter. The no-filter variant is its own
workspace under ``variants/`` sharing the feature cache of the main one.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from rich.table import Table

from .. import pipeline
from ..config import dump_config, load_config
from ..console import console
from ..data.manifest import atomic_write_text
from ..report import write_report
from ..runner import run_pipeline, step
from ..workspace import Workspace
from .synthetic import generate, web_manifests

DEMO_OVERRIDES = [
    "target.format=folders",
    "target.val_groups=['01','02','03','04','05','06']",
    "target.per_class=5",
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
    "omni.threshold=0.8",  # with "both": the teacher agrees with the query at >= 0.8
    # The kept web images are unbalanced (the teacher is sure of some classes' photos far more
    # often than of others'): draw class c with probability ∝ N_c^0.2, OmniSource's best (Table 10).
    "omni.resample=power",
    "omni.resample_power=0.2",
]


SEEDS = 3  # training seeds per setting: with a few labels per class one run is not a result


def _more_seeds(cfg, ws: Path, name: str, student: bool) -> list[dict]:
    """Metrics of ``name`` retrained with seeds train.seed + 1 .. SEEDS-1 on the same data and
    selection (the chained run itself is the first). Fast in feature mode: only heads train."""
    from ..runner import student_config
    from ..train.joint import student_stage

    out = []
    for seed in range(1, SEEDS):
        scfg = copy.deepcopy(cfg)
        scfg.train.seed = cfg.train.seed + seed
        run = f"{name}_seed{seed}"
        if student:
            scfg.omni.student_run = run
            student_stage(scfg, ws, auto=True)
            scfg = student_config(scfg)
        else:
            scfg.train.run_name = run
            pipeline.train_stage(scfg, ws, auto=True)
        step(pipeline.evaluate_stage, scfg, ws)
        out.append(json.loads((Workspace.of(ws).run(scfg.train.run_name) / "metrics.json").read_text()))
    return out


def _mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def run_demo(workspace: Path, overrides: list[str] | None = None) -> dict:
    """Returns {setting: [metrics of each seed]} and prints them side by side."""
    workspace = Path(workspace)
    t0 = time.time()
    data = workspace / "data"
    counts = generate(data)
    manifests = web_manifests(data)
    console.print(f"demo data: {counts['videos']} target videos, {counts['web_images']} web images, "
                           f"{counts['web_videos']} untrimmed web videos in {data}")
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{manifests['images']}'}}, "
           f"{{name: untrimmed, kind: untrimmed, format: manifest, root: '{manifests['untrimmed']}'}}]")
    base = [f"target.root={data / 'videos'}", *DEMO_OVERRIDES, web, *(overrides or [])]
    results: dict[str, list[dict]] = {}
    main_cfg = None
    for name, extra, ws in (("omnisource", [], workspace),
                            ("omnisource_nofilter", ["omni.filter=none", "omni.student_run=omnisource_nofilter",
                                                     f"features.cache_root={workspace / 'features'}"],
                             workspace / "variants" / "nofilter")):
        cfg = load_config(None, [f"workspace={ws}", *base, *extra])
        ws.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Workspace(ws).config_file, dump_config(cfg))
        console.rule(name)
        first = run_pipeline(cfg, ws)
        main_cfg = main_cfg or cfg
        for run, metrics in first.items():
            if run in results:  # the variant reuses the teacher of the main workspace
                continue
            student = run == cfg.omni.student_run
            if cfg.mode == "features":
                results[run] = [metrics, *_more_seeds(cfg, ws, run, student)]
            else:  # pixel mode trains whole networks: one seed
                results[run] = [metrics]
    seeds = len(results["omnisource"])
    table = Table(title=f"omnisource demo ({time.time() - t0:.0f} s): validation on held-out groups, "
                        f"mean ± std over {seeds} training seed{'s' if seeds > 1 else ''}")
    for col in ("setting", "top-1 %", "mean class acc. %", "validation clips"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for name in ("target_only", "omnisource", "omnisource_nofilter"):
        runs = results[name]
        table.add_row(name, _mean_std([m["top1"] for m in runs]),
                      _mean_std([m["mean_class_accuracy"] for m in runs]), str(runs[0]["num_samples"]))
    console.print(table)
    console.print(f"report: {write_report(main_cfg, workspace)}")
    atomic_write_text(Workspace(workspace).path("demo_results.json"), json.dumps(
        {name: [{k: m[k] for k in ("top1", "top5", "mean_class_accuracy", "num_samples")} for m in runs]
         for name, runs in results.items()}, indent=2))
    return results
