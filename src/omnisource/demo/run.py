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
from ..report.headline import compare_arms, gather_arms
from ..runner import run_pipeline, step
from ..workspace import Workspace
from .synthetic import generate, web_manifests

# The data: 16 groups of three clips per class as in data version 9, of which 07-16 are the
# training groups (their scenes, and so the labeled clips, unchanged), and 30 validation groups of
# one clip each, 01-06 and 17-40. The gain of web data sits in a few validation scenes, and the
# clips of one group are near-duplicates: with 6 groups of 3 clips per class, the report's group
# bootstrap spanned 0 on one run and not on the next (docs/benchmarks.md, "A validation set of
# many scenes").
VAL_GROUPS = (*range(1, 7), *range(17, 41))
DATA = dict(groups=40, clips_per_group=3, val_groups=VAL_GROUPS, val_clips_per_group=1)

# Everything else is the product's default (filter "both" at threshold 0.5, still images, ...).
# Its recipe departs from the defaults (SGD, lr 0.01, 10 epochs), which the real-data benchmarks
# chose: its 30 training clips make 40 iterations in all with them, and target-only top-1 drops
# (docs/benchmarks.md, "Training recipe").
DEMO_OVERRIDES = [
    # The scenario: the validation groups are held out, five labeled videos per class.
    f"target.val_groups=[{','.join(repr(f'{g:02d}') for g in VAL_GROUPS)}]",
    "target.per_class=5",
    # The clips are 96 px: embed at 112 rather than upscale them to the default 128 (less compute).
    "features.size=112",
    # A head on frozen features, trained like the real-data benchmarks train theirs (AdamW). The
    # 30 labeled clips make 4 iterations per epoch: 100 epochs are 400 steps, so the student sees
    # each kept web sample a few times (40 epochs showed it about a third of them once).
    "train.optimizer=adamw",
    "train.lr=0.003",
    "train.weight_decay=0.01",
    "train.epochs=100",
    "train.eval_every=10",  # fewer validation passes: the curves keep their shape, the demo runs faster
    "model.dropout=0.3",  # of the 1,280-d frozen feature (the default 0.5 was not measured here)
    # The kept web images are unbalanced (the teacher is sure of some classes' photos far more
    # often than of others'): draw class c with probability ∝ N_c^0.2, OmniSource's best (Table 10).
    "omni.resample=power",
    "omni.resample_power=0.2",
    # The synthetic web images are renders of the target set's few scenes, so the dedup's measured
    # threshold flags ~14 % of them as near-copies of validation videos (5 of 36 on the test
    # world): the demo skips it; `omnisource clean dedup` shows it on demand.
    "clean.dedup=false",
]


SEEDS = 5  # training seeds per setting: with a few labels per class one run is not a result


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


def run_demo(workspace: Path, overrides: list[str] | None = None, data: Path | None = None) -> dict:
    """Returns {setting: [metrics of each seed]} and prints them side by side. ``data``: where
    the synthetic data is (generated there unless it already is; default WORKSPACE/data), so
    several demo workspaces, e.g. one per ``target.seed``, can share one dataset."""
    workspace = Path(workspace)
    t0 = time.time()
    data = Path(data) if data else workspace / "data"
    counts = generate(data, **DATA)
    manifests = web_manifests(data)
    console.print(f"demo data: {counts['videos']} target videos, {counts['web_images']} web images, "
                           f"{counts['web_videos']} untrimmed web videos in {data}")
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{manifests['images']}'}}, "
           f"{{name: untrimmed, kind: untrimmed, format: manifest, root: '{manifests['untrimmed']}'}}]")
    base = [f"target.root={data / 'videos'}", *DEMO_OVERRIDES, web, *(overrides or [])]
    results: dict[str, list[dict]] = {}
    main_cfg = None
    # The variant shares the feature cache of the main workspace (or the one the overrides name).
    cache = Workspace(workspace).features_root(load_config(None, base))
    for name, extra, ws in (("omnisource", [], workspace),
                            ("omnisource_nofilter", ["omni.filter=none", "omni.student_run=omnisource_nofilter",
                                                     f"features.cache_root={cache}"],
                             Workspace(workspace).variants_dir / "nofilter")):
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
    # Each setting against target-only trained with the same seed, clip by clip (as the report's headline).
    _, paired = compare_arms(workspace, gather_arms(workspace), main_cfg.train.run_name)
    table = Table(title=f"omnisource demo ({time.time() - t0:.0f} s): validation on held-out groups, "
                        f"mean ± std over {seeds} training seed{'s' if seeds > 1 else ''}")
    for col in ("setting", "top-1 %", "mean class acc. %", "Δ top-1 vs target-only (95 % interval)",
                "validation clips"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for name in ("target_only", "omnisource", "omnisource_nofilter"):
        runs, p = results[name], paired.get(name)
        delta = f"{100 * p['delta']:+.1f} ({100 * p['lo']:+.1f} to {100 * p['hi']:+.1f})" if p else ""
        table.add_row(name, _mean_std([m["top1"] for m in runs]),
                      _mean_std([m["mean_class_accuracy"] for m in runs]), delta, str(runs[0]["num_samples"]))
    console.print(table)
    console.print(f"report: {write_report(main_cfg, workspace)}")
    atomic_write_text(Workspace(workspace).path("demo_results.json"), json.dumps(
        {name: [{k: m[k] for k in ("top1", "top5", "mean_class_accuracy", "num_samples")} for m in runs]
         for name, runs in results.items()}, indent=2))
    return results
