"""``omnisource compare WS_OR_RUN...``: the evaluated runs of workspaces side by side.

A workspace contributes every run that has a ``metrics.json``; runs named ``<setting>_seedN``
are seeds of one setting (an *arm*). A run folder (``ws/runs/NAME``) contributes that run. Each
arm gets its top-1 and mean class accuracy with a 95 % interval — over its seeds (Student's t)
when it has several, else a Wilson interval over the validation clips — the web samples its
workspace's teacher filter kept per source (for a student run), and the config keys whose values
differ between the arms. A workspace's target-only run comes first. The difference of top-1 to
the first arm is paired: where both arms saved per-clip predictions (``predictions.npz``, written
by ``omnisource evaluate``) on the same validation clips, clip by clip on the seeds both have,
with a bootstrap interval over the clips (whole UCF101-style groups, from the first arm's target
manifest) and the seeds (``evaluate.paired``); else seed by seed (Student's t) where both have
≥ 2 common seeds on as many clips; else unpaired, without an interval. The table goes to
``<first workspace>/compare/compare.json|csv|png`` (``-w WS``: WS is the first) and into that
workspace's report.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from .config import ConfigError
from .config_io import flatten_config, read_config_file
from .console import console
from .data.manifest import ManifestError, atomic_write_bytes, atomic_write_text, read_manifest
from .evaluate import paired
from .evaluate.metrics import load_predictions
from .workspace import Workspace

SEED_SUFFIX = re.compile(r"_seed\d+$")
# Keys that name a run or a place rather than a setting.
NOT_SETTINGS = ("workspace", "train.run_name", "omni.student_run", "omni.teacher_runs", "train.seed",
                "features.cache_root", "train.device")
COLUMNS = ["arm", "runs", "clips", "top1", "top1_lo", "top1_hi", "mca", "mca_lo", "mca_hi", "delta_top1",
           "delta_lo", "delta_hi", "delta_paired", "kept", "settings"]


# --------------------------------------------------------------------------- pure functions


# 97.5 % quantiles of Student's t with 1..10 degrees of freedom; 1.96 (the normal's) beyond 30.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def t975(df: int) -> float:
    if df <= len(T975):
        return T975[df - 1]
    return 2.042 if df <= 30 else 1.96  # 2.042 is df = 30's: slightly wide for 11..29


def mean_interval(values) -> tuple[float, float, float]:
    """(mean, lo, hi): 95 % Student's t interval of the mean of ``values`` (lo = hi = mean for one value)."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = t975(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def wilson_interval(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def settings_view(cfg: dict) -> dict:
    """A config flattened for comparison: ``web`` as the list of its source names, each source's
    fields under ``web.<name>.<field>`` (so sources pair by name, not by position)."""
    cfg = dict(cfg)
    web = cfg.pop("web", None) or []
    flat = flatten_config(cfg)
    flat["web"] = [w.get("name") for w in web]
    for w in web:
        flat.update({f"web.{w.get('name')}.{k}": v for k, v in flatten_config(w).items() if k != "name"})
    return flat


def differing_keys(configs: list[dict]) -> list[str]:
    """Config keys (settings_view) whose values are not the same in every config: run names,
    seeds and cache paths left out, and the fields of a web source that not every config has
    (``web`` itself says so)."""
    flat = [settings_view(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    out = []
    for k in keys:
        if k.startswith(NOT_SETTINGS) or not all(k in f for f in flat):
            continue
        if len({json.dumps(f[k], sort_keys=True, default=str) for f in flat}) > 1:
            out.append(k)
    return out


def _clip(interval: tuple[float, float, float]) -> tuple[float, float, float]:
    """An accuracy's interval within [0, 1] (few seeds make t intervals wider than that)."""
    m, lo, hi = interval
    return m, max(0.0, lo), min(1.0, hi)


def paired_delta(arm: dict, first: dict, target_rows: list[dict] | None = None) -> tuple[dict | None, str]:
    """(the clip-by-clip paired bootstrap of ``arm`` against ``first`` from their runs'
    predictions, {"delta", "lo", "hi", "clips", "groups", "seeds", ...}, or None; why not), clips
    of one group of ``target_rows`` drawn together."""
    mine, theirs = ({r["seed"]: r["predictions"] for r in a["runs"] if r.get("predictions") is not None}
                    for a in (arm, first))
    if not mine or not theirs:
        return None, "no per-clip predictions to pair"
    try:
        run_c, base_c, seeds, ids = paired.paired_correct(mine, theirs)
    except ValueError as err:  # no common seed, or other clips
        return None, str(err)
    groups = paired.clip_groups(target_rows, ids) if target_rows else None
    return dict(paired.paired_clip_bootstrap(run_c, base_c, paired.RESAMPLES, groups=groups), seeds_used=seeds), ""


def summarise(arm: dict, first: dict | None, target_rows: list[dict] | None = None) -> dict:
    """The row of one arm: {"name", "runs": [{"seed", "top1", "mca", "clips", "predictions"}], ...}
    -> table row; ``target_rows``: the first arm's target manifest (the clips' groups)."""
    runs = arm["runs"]
    top1 = [r["top1"] for r in runs]
    mca = [r["mca"] for r in runs]
    clips = runs[0]["clips"]
    row = {"arm": arm["name"], "runs": len(runs), "clips": clips}
    row["top1"], row["top1_lo"], row["top1_hi"] = _clip(mean_interval(top1))
    row["mca"], row["mca_lo"], row["mca_hi"] = _clip(mean_interval(mca))
    row["interval"] = "seeds" if len(runs) > 1 else "clips"
    if len(runs) == 1:
        row["top1_lo"], row["top1_hi"] = wilson_interval(top1[0], clips)
        row["mca_lo"] = row["mca_hi"] = None  # a mean of per-class accuracies: no binomial interval
    if first is not None and first is not arm:
        mine, theirs = ({r["seed"]: r for r in a["runs"]} for a in (arm, first))
        seeds = sorted(s for s in mine if s in theirs and mine[s]["clips"] == theirs[s]["clips"])
        clips, why = paired_delta(arm, first, target_rows)
        if clips is not None:
            row["delta_top1"], row["delta_lo"], row["delta_hi"] = clips["delta"], clips["lo"], clips["hi"]
            what = f"{clips['clips']} clips" + (f" in {clips['groups']} groups" if clips["groups"] < clips["clips"] else "")
            row["delta_paired"] = f"clips: {clips['seeds']} seed{'s' * (clips['seeds'] > 1)} × {what}"
        elif len(seeds) >= 2:
            row["delta_top1"], row["delta_lo"], row["delta_hi"] = mean_interval(
                [mine[s]["top1"] - theirs[s]["top1"] for s in seeds])
            row["delta_paired"] = f"seeds: {len(seeds)} ({why})"
        else:
            row["delta_top1"] = row["top1"] - float(np.mean([r["top1"] for r in first["runs"]]))
            row["delta_paired"] = f"unpaired ({len(seeds)} common seed{'s' * (len(seeds) != 1)}; {why})"
    if arm.get("kept"):
        row["kept"] = ", ".join(f"{src} {n}" for src, n in arm["kept"].items())
    return row


# --------------------------------------------------------------------------- reading runs


def _run_record(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = read_config_file(run / "config.yaml") if (run / "config.yaml").is_file() else {}
    seed = (cfg.get("train") or {}).get("seed", metrics.get("seed"))
    pred = run / (metrics.get("predictions") or "predictions.npz")
    try:  # an unreadable predictions file only costs the clip-by-clip pairing
        predictions = load_predictions(pred) if pred.is_file() else None
    except ValueError:
        predictions = None
    return {"seed": seed, "top1": float(metrics["top1"]), "mca": float(metrics["mean_class_accuracy"]),
            "clips": int(metrics.get("num_samples", 0)), "config": cfg, "predictions": predictions}


def _kept(ws: Workspace, run: str, cfg: dict) -> dict:
    """{source: kept} of the workspace's selection when ``run`` is its student run."""
    if run != (cfg.get("omni") or {}).get("student_run", "omnisource"):
        return {}
    out = {}
    for src in cfg.get("web") or []:
        path = ws.selection(src["name"])
        if path.is_file():
            out[src["name"]] = json.loads(path.read_text()).get("kept", 0)
    return out


def gather(inputs: list[str | Path]) -> tuple[list[dict], Workspace]:
    """(arms in the order given, the first input's workspace). Raises ConfigError for an input
    that is neither a workspace with evaluated runs nor an evaluated run folder."""
    arms, home = [], None
    for item in inputs:
        p = Path(item)
        if (p / "metrics.json").is_file():
            ws = Workspace(p.parent.parent) if p.parent.name == "runs" else Workspace(p.parent)
            groups = {p.name: [p]}
        elif p.is_dir():
            ws = Workspace(p)
            groups: dict[str, list[Path]] = {}
            for name in ws.run_names():
                if (ws.run(name) / "metrics.json").is_file():
                    groups.setdefault(SEED_SUFFIX.sub("", name), []).append(ws.run(name))
            if not groups:
                raise ConfigError(f"compare: {p} has no evaluated runs (runs/*/metrics.json); "
                                  "run `omnisource evaluate` there")
            base = read_config_file(ws.config_file) if ws.config_file.is_file() else {}
            teacher = (base.get("train") or {}).get("run_name", "target_only")
            groups = dict(sorted(groups.items(), key=lambda kv: kv[0] != teacher))  # the target-only run first
        else:
            raise ConfigError(f"compare: {p} is neither a workspace nor a run folder")
        home = home or ws
        for name, folders in groups.items():
            records = [_run_record(f) for f in folders]
            label = name if len(inputs) == 1 else f"{ws.root.name}/{name}"
            arms.append({"name": label, "runs": records, "kept": _kept(ws, folders[0].name, records[0]["config"]),
                         "workspace": ws})
    if len(arms) < 2:
        raise ConfigError(f"compare: found {len(arms)} evaluated setting in {', '.join(map(str, inputs))}; "
                          "need at least two")
    return arms, home


def _target_rows(ws: Workspace) -> list[dict] | None:
    """The rows of a workspace's target manifest (the groups of its validation clips), or None."""
    try:
        return read_manifest(ws.target_manifest()).rows
    except (ManifestError, OSError):
        return None


def compare(inputs: list[str | Path]) -> Path:
    """Write ``compare/compare.json|csv|png`` in the first input's workspace; prints the table."""
    from rich.table import Table

    from .report.figures import compare_figure, png_bytes
    from .report.html import interval_text

    arms, home = gather(inputs)
    configs = [a["runs"][0]["config"] for a in arms]
    keys = differing_keys(configs)
    target = _target_rows(arms[0]["workspace"])
    rows = []
    for arm, cfg in zip(arms, configs):
        flat = settings_view(cfg)
        row = summarise(arm, arms[0], target)
        row["settings"] = ", ".join(f"{k}={flat.get(k, '–')}" for k in keys)
        rows.append(row)
    out = home.root / "compare"
    path = atomic_write_text(out / "compare.json", json.dumps({"inputs": [str(i) for i in inputs],
                                                               "differing": keys, "rows": rows}, indent=2))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "compare.csv", buf.getvalue())
    png = png_bytes(compare_figure(rows))
    atomic_write_bytes(out / "compare.png", lambda tmp: Path(tmp).write_bytes(png))

    table = Table(title=f"compare: validation, 95 % intervals ({out})")
    for c in ("setting", "runs", "top-1 %", "mean class acc. %", "Δ top-1 vs first", "Δ paired on", "kept web",
              "settings"):
        table.add_column(c, justify="left" if c in ("setting", "Δ paired on", "kept web", "settings") else "right",
                         overflow="fold")
    for r in rows:
        table.add_row(r["arm"], f"{r['runs']} × {r['clips']} clips", interval_text(r, "top1"),
                      interval_text(r, "mca"), interval_text(r, "delta_top1", "delta_lo", "delta_hi", sign=True),
                      r.get("delta_paired", ""), r.get("kept", ""), r["settings"])
    console.print(table)
    return path

