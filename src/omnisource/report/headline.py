"""The report's first section: did web data help, by how much, and with what.

Runs are grouped into *arms*, one setting trained with several seeds (``omnisource``,
``omnisource_seed1``, ... form the arm ``omnisource``); the arms of variant workspaces under
``<workspace>/variants/<name>/`` (the demo's no-filter arm) join those of the workspace. Every
arm is compared clip by clip with the baseline run trained with the same seed, from the runs'
``predictions.npz`` (written by ``omnisource evaluate``); the interval is
``evaluate.paired.paired_clip_bootstrap``, a bootstrap over validation clips (whole groups where the
clips have UCF101-style groups) and seeds.
"""
from __future__ import annotations

import re

import numpy as np

from ..config import Config, load_config
from ..evaluate import paired
from ..evaluate.metrics import load_predictions
from ..evaluate.paired import RESAMPLES, paired_clip_bootstrap, paired_correct
from ..workspace import Workspace
from . import html as H
from .collect import Unavailable, read_json, target_manifest

SEED_SUFFIX = re.compile(r"_seed\d+$")


def arm_of(run: str) -> str:
    """``omnisource_seed2`` -> ``omnisource``: the runs of one setting differ in seed only."""
    return SEED_SUFFIX.sub("", run)


def variant_workspaces(ws) -> list[tuple[str, Workspace]]:
    """(name, workspace) of each variant workspace: ``variants/<name>/`` holding a config.yaml."""
    root = Workspace.of(ws).variants_dir
    return sorted((p.name, Workspace(p)) for p in root.iterdir() if (p / "config.yaml").is_file()) \
        if root.is_dir() else []


def _read_run(ws: Workspace, run: str) -> tuple[object, dict]:
    """(seed, {"run", "metrics", "predictions" or None, "why"}) of an evaluated run."""
    metrics = read_json(ws.run(run) / "metrics.json", run)
    seed, pred, why = metrics.get("seed"), None, ""
    path = ws.run(run) / metrics["predictions"] if metrics.get("predictions") else ws.predictions(run)
    if seed is None:
        why = "its metrics.json records no seed"
    elif not path.is_file():
        why = "no per-clip predictions (predictions.npz)"
    else:
        try:
            pred = load_predictions(path)
        except ValueError as err:
            why = str(err)
    return (seed if seed is not None else f"? ({run})"), {"run": run, "metrics": metrics, "predictions": pred,
                                                          "why": why}


def gather_arms(ws) -> dict[str, dict]:
    """{arm: {"workspace": folder, "runs": {seed: run record}}}, the workspace's arms first. A
    variant's arm that the workspace has too (the teacher it re-trains) is not taken twice."""
    arms: dict[str, dict] = {}
    for variant, folder in [(None, Workspace.of(ws)), *variant_workspaces(ws)]:
        found: dict[str, dict] = {}
        for run in folder.run_names():
            if (folder.run(run) / "metrics.json").is_file():
                seed, record = _read_run(folder, run)
                found.setdefault(arm_of(run), {"workspace": folder, "runs": {}})["runs"][seed] = record
        for name, arm in found.items():
            if variant is None or name not in arms:
                arms[name] = arm
    return arms


def clip_groups(ws, ids: list[str]) -> list | None:
    """The group of each validation clip (``evaluate.paired.clip_groups``); None without a target manifest."""
    try:
        return paired.clip_groups(target_manifest(ws).rows, ids)
    except Unavailable:
        return None


def verdict(result: dict, baseline: str) -> str:
    """The headline sentence of a ``paired_clip_bootstrap`` result (its numbers are fractions)."""
    d, lo, hi = (100 * result[k] for k in ("delta", "lo", "hi"))
    what = "Web data helped" if lo > 0 else "Web data hurt" if hi < 0 else "No clear effect of web data"
    return (f"{what}: {d:+.1f} top-1 points (95 % interval {lo:+.1f} to {hi:+.1f}) over {baseline} "
            f"on {result['clips']} validation clips")


def _filter(cfg: Config, selection: dict | None = None) -> str:
    """The filter rule and its threshold(s); with a selection record, the calibrated per-class
    thresholds it used (omni.calibrate)."""
    o = cfg.omni
    if o.filter == "none":
        return "none (query labels)"
    if o.calibrate == "none":
        return f"{o.filter}, threshold {o.threshold:g}"
    cal = (selection or {}).get("calibration")
    if not cal:
        return f"{o.filter}, thresholds per class ({o.calibrate} {o.calibrate_value:g}, out of fold)"
    if not cal.get("folds"):
        return f"{o.filter}, threshold {o.threshold:g} (not calibrated: {cal.get('note', 'no folds')})"
    per = ", ".join(f"{c} {t:.2f}" for c, t in cal["thresholds"].items())
    return f"{o.filter}, thresholds per class ({o.calibrate} {o.calibrate_value:g}, {cal['folds']} folds): {per}"


def _settings(cfg: Config, ws, seeds: list) -> str:
    try:
        train = [r["label"] for r in target_manifest(ws).rows if r.get("split") == "train" and r["status"] == "ok"]
        per = np.bincount(train) if train else np.zeros(1, int)
        labels = f"{per.min()}" if per.min() == per.max() else f"{per.min()} to {per.max()}"
    except Unavailable:
        labels = str(cfg.target.per_class or "all")
    f, t = cfg.features, cfg.train
    model = (f"backbone {f.backbone} ({f.pretrained or 'random init'}, frozen features: {f.frames} frames at "
             f"{f.size} px, {f.head} head)" if cfg.mode == "features"
             else f"model {cfg.model.name} ({cfg.model.pretrained or 'from scratch'})")
    return (f"Settings: {labels} labeled videos per class · {model} · teacher filter {_filter(cfg)} · "
            f"{t.epochs} epochs, {t.optimizer}, lr {t.lr:g} · seeds {', '.join(map(str, seeds))}.")


def _arm_config(cfg: Config, ws, arm: dict) -> Config | None:
    """The config an arm ran with: ``cfg`` for the workspace's own arms, else the variant's."""
    if arm["workspace"] == Workspace.of(ws):
        return cfg
    path = arm["workspace"].config_file
    return load_config(path) if path.is_file() else None


def _sources(cfg: Config, ws, arms: dict, baseline: str) -> list[list]:
    """One row per web source of each student arm: kind, filter, scored, kept (share), precision, recall."""
    rows = []
    for name, arm in arms.items():
        acfg = _arm_config(cfg, ws, arm)
        if name == baseline or acfg is None or arm_of(acfg.omni.student_run) != name:
            continue
        for src in acfg.web:
            sel = arm["workspace"].selection(src.name)
            if sel.is_file():
                s = read_json(sel, src.name)
                f = s.get("filter") or {}
                kept = f"{s['kept']} ({100 * s['kept'] / s['scored']:.0f} %)" if s.get("scored") else s.get("kept")
                rows.append([name, src.name, src.kind, _filter(acfg, s), s.get("scored"), kept,
                             f.get("precision", "unknown"), f.get("recall", "unknown")])
    return rows


def compare_arms(ws, arms: dict, baseline: str) -> tuple[list[list], dict[str, dict]]:
    """Table rows (setting, seeds, top-1 mean ± std, Δ, interval, paired seeds) and the
    paired results of the arms that have per-clip predictions; clips of one group (from the
    workspace's target manifest) are resampled together."""
    base = {s: r["predictions"] for s, r in arms[baseline]["runs"].items() if r["predictions"] is not None}
    rows, results = [], {}
    for name, arm in sorted(arms.items(), key=lambda a: a[0] != baseline):  # the baseline first
        runs = arm["runs"]
        top1 = [100 * r["metrics"]["top1"] for r in runs.values()]
        row = [name + (" (baseline)" if name == baseline else ""), len(runs), f"{np.mean(top1):.1f} ± {np.std(top1):.1f}"]
        if name == baseline:
            rows.append(row + ["", "", ""])
            continue
        preds = {s: r["predictions"] for s, r in runs.items() if r["predictions"] is not None}
        try:
            if not preds or not base:
                missing = runs if not preds else arms[baseline]["runs"]
                raise Unavailable(next(iter(missing.values()))["why"])
            run_c, base_c, seeds, ids = paired_correct(preds, base)
            res = results[name] = dict(paired_clip_bootstrap(run_c, base_c, RESAMPLES, groups=clip_groups(ws, ids)),
                                       seeds_used=seeds)
            rows.append(row + [f"{100 * res['delta']:+.1f}", f"{100 * res['lo']:+.1f} to {100 * res['hi']:+.1f}",
                               ", ".join(map(str, seeds))])
        except (Unavailable, ValueError) as err:
            rows.append(row + ["–", f"not available: {err}", "–"])
    return rows, results


def headline(cfg: Config, ws, baseline: str) -> str:
    """HTML of the headline section; Unavailable when no arm can be compared with the baseline."""
    arms = gather_arms(ws)
    if baseline not in arms:
        raise Unavailable(f"no baseline run: {baseline} has no metrics.json")
    if len(arms) == 1:
        raise Unavailable(f"only the baseline {baseline} is evaluated; nothing to compare")
    rows, results = compare_arms(ws, arms, baseline)
    main = arm_of(cfg.omni.student_run)
    main = main if main in results else next(iter(results), None)
    if main is None:
        raise Unavailable(f"no run can be compared clip by clip with {baseline}: "
                          + "; ".join(f"{r[0]}: {r[4][len('not available: '):]}" for r in rows if r[4]))
    res = results[main]
    label = "target-only" if baseline in (*cfg.omni.teacher_runs, cfg.train.run_name) else baseline
    main_cfg = _arm_config(cfg, ws, arms[main]) or cfg
    plural = "s" if res["seeds"] > 1 else ""
    what = (f"the {res['clips']} validation clips" if res["groups"] == res["clips"] else
            f"the {res['groups']} groups of the {res['clips']} validation clips (the clips of one group film "
            "one scene, so they are drawn together)")
    how = (f"{main} against {baseline}: mean over {res['seeds']} seed{plural}, each difference taken clip by "
           f"clip against the {label} run trained with the same seed; 95 % interval: {RESAMPLES:,} bootstrap "
           f"resamples of {what} and of the {res['seeds']} seed{plural}.")
    sources = _sources(cfg, ws, arms, baseline)
    return (f'<p class="headline">{H.esc(verdict(res, label))}</p>\n<p>{H.esc(how)}</p>\n'
            f"<p>{H.esc(_settings(main_cfg, ws, res['seeds_used']))}</p>\n"
            + H.table(["setting", "seeds", "top-1 % (mean ± std)", f"Δ top-1 points vs {baseline} (paired)",
                       "95 % interval", "paired seeds"], rows)
            + ("<p>Web sources: kept = samples the teacher filter kept of those it scored; precision = kept "
               "samples whose label is their true class / kept, recall = those / samples of a target class "
               "(where the ground truth is known).</p>"
               + H.table(["setting", "source", "kind", "filter", "scored", "kept", "precision", "recall"], sources)
               if sources else H.unavailable("no filtered web source behind these runs")))
