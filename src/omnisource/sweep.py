"""``omnisource sweep grid|labels|teacher|ratio``: pipeline reruns over settings.

- ``grid``: any config keys, ``key=v1,v2`` per axis, the product of the axes, each point with
  ``--seeds`` seeds (as Hydra's multirun); means over seeds with 95 % intervals, and the
  difference to the first point paired seed by seed.

- ``labels`` (Fig. 7): the whole pipeline, teacher included, on label subsets of the target
  training set: ``3%`` keeps 3 % of each class's training videos (at least one), ``5`` keeps 5
  per class. Subsets are nested (3 % ⊂ 10 % ⊂ 30 %) and the validation set never changes.
- ``teacher`` (Fig. 6): different teachers for the same student. A teacher is the target-only
  run trained with some overrides (e.g. ``features.head=linear``) in its own workspace; the
  student's config stays that of the sweep.
- ``ratio`` (Fig. 8): |B_A| : |B_T|, i.e. ``batch_ratio`` of every web source.

Each point is a workspace ``<workspace>/sweeps/<kind>/<point>/`` sharing one feature cache
(``features.cache_root``), so features are computed once. A finished point (``point.json`` with
the same config digest) is skipped, and ``run_pipeline`` resumes an interrupted one. The table
goes to ``<workspace>/sweeps/sweep_<kind>.json`` and ``.csv``, the plot to ``sweep_<kind>.png``;
``omnisource report`` shows them.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np

from .config import Config, ConfigError, dump_config, load_config, to_dict
from .console import console
from .data.manifest import Manifest, atomic_write_bytes, atomic_write_text, read_manifest, write_manifest
from .workspace import Workspace

COLUMNS = ["point", "seeds", "student_top1", "student_mca", "baseline_top1", "baseline_mca", "teacher_top1",
           "delta_top1", "delta_lo", "delta_hi", "kept", "precision", "recall", "error"]


# --------------------------------------------------------------------------- pure functions


def parse_amount(text: str) -> tuple[str, float]:
    """``"3%"`` -> ("fraction", 0.03); ``"5"`` -> ("per_class", 5)."""
    t = str(text).strip()
    try:
        if t.endswith("%"):
            value = float(t[:-1]) / 100
            if not 0 < value <= 1:
                raise ValueError
            return "fraction", value
        value = int(t)
        if value < 1:
            raise ValueError
        return "per_class", value
    except ValueError:
        raise ValueError(f"label amount {text!r}: expected a percentage in (0, 100] such as 10% "
                         f"or a number of videos per class such as 5") from None


def label_subset(labels, amount: str, seed: int = 0) -> np.ndarray:
    """Boolean mask over training samples keeping ``amount`` of each class (OmniSource Fig. 7).

    Each class's samples are ordered by one seeded permutation and the first k_c are kept,
    k_c = max(1, round(fraction · n_c)) or the per-class number (at most n_c); so subsets of
    growing amounts are nested.
    """
    kind, value = parse_amount(amount)
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        order = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        k = max(1, int(round(value * len(idx)))) if kind == "fraction" else int(value)
        keep[order[:min(k, len(idx))]] = True
    return keep


def pooled_filter(stats: list[dict]) -> dict:
    """Kept, precision and recall of the teacher filter pooled over web sources (selection
    stats; precision and recall only when every source has ground truth)."""
    kept = sum(s.get("kept", 0) for s in stats)
    out: dict = {"kept": kept}
    filters = [s.get("filter") for s in stats]
    if stats and all(filters):
        right = sum(f["precision"] * f["kept"] for f in filters if f["kept"])
        relevant = sum(f["relevant"] for f in filters)
        out["precision"] = right / kept if kept else None
        out["recall"] = right / relevant if relevant else None
    return out


def point_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9.]+", "-", str(text).replace("%", "pct")).strip("-")
    return name[:60] or "point"


# --------------------------------------------------------------------------- running points


def _digest(cfg: Config) -> str:
    data = to_dict(cfg)
    data.pop("workspace", None)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _shared(cfg: Config, workspace: Path) -> Config:
    """The sweep's base config with the feature cache pinned to the base workspace's."""
    cfg = copy.deepcopy(cfg)
    cfg.features.cache_root = str(Workspace.of(workspace).features_root(cfg).resolve())
    return cfg


def _metrics(ws, run: str) -> dict:
    path = Workspace.of(ws).run(run) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_point(cfg: Config, ws: Path, name: str, teacher: Path | None = None) -> dict:
    """Run the pipeline in ``ws`` (skipped when its point.json matches the config) and
    summarise it. ``teacher``: a finished run folder copied in as the scoring teacher."""
    from .runner import run_pipeline

    cfg = copy.deepcopy(cfg)
    ws = Workspace.of(ws)
    cfg.workspace = str(ws)
    if teacher is not None:  # the swept teacher scores every source
        cfg.omni.teacher_runs = ["teacher"]
        for w in cfg.web:
            w.teachers = []
    digest = _digest(cfg) + (_digest(load_config(teacher / "config.yaml")) if teacher is not None else "")
    done = ws.path("point.json")
    if done.exists():
        old = json.loads(done.read_text())
        if old.get("digest") == digest:
            console.print(f"[dim]sweep point {name}: done ({ws})[/]")
            return old["result"]
    ws.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ws.config_file, dump_config(cfg))
    if teacher is not None:
        _install_teacher(ws, teacher, digest)
    console.rule(f"sweep point {name}")
    from .data.manifest import ManifestError

    try:
        run_pipeline(cfg, ws)
        error = None
    except (ManifestError, ConfigError) as e:  # e.g. a teacher of few labels keeps no web sample: a result too
        error = str(e)
        console.print(f"[yellow]sweep point {name}: {error}; recorded, the sweep goes on[/]")
    student, base = _metrics(ws, cfg.omni.student_run), _metrics(ws, cfg.train.run_name)
    teacher_m = _metrics(ws, cfg.omni.teacher_runs[0]) if cfg.omni.teacher_runs else {}
    sel = [json.loads(ws.selection(w.name).read_text()) for w in cfg.web if ws.selection(w.name).exists()]
    result = {"point": name, "workspace": str(ws),
              "student_top1": student.get("top1"), "student_mca": student.get("mean_class_accuracy"),
              "baseline_top1": base.get("top1"), "baseline_mca": base.get("mean_class_accuracy"),
              "teacher_top1": teacher_m.get("top1"), **(pooled_filter(sel) if cfg.web else {})}
    if error is not None:
        return {**result, "error": error}  # no point.json: the next sweep tries the point again
    atomic_write_text(done, json.dumps({"digest": digest, "result": result}, indent=2))
    return result


def _install_teacher(ws: Workspace, teacher: Path, digest: str) -> None:
    """Copy a teacher run into ``ws/runs/teacher``; the score stage's stamp holds the teacher's
    checkpoint digest, so a different teacher than last time makes scoring and everything after
    it run again."""
    dest, mark = ws.run("teacher"), ws.path("teacher.digest")
    if dest.is_dir() and mark.exists() and mark.read_text() == digest:
        return
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(teacher, dest)
    atomic_write_text(mark, digest)


def _full_target(cfg: Config, sweep_dir: Path) -> Manifest:
    """The target manifest with every labeled training video (imported once per sweep)."""
    from .pipeline import import_target

    scratch = Workspace(sweep_dir / "_target")
    full = copy.deepcopy(cfg)
    full.target.per_class = 0
    digest_file = scratch.path("digest.txt")
    digest = hashlib.sha1(json.dumps(to_dict(full.target), sort_keys=True).encode()).hexdigest()[:16]
    if not scratch.target().exists() or not digest_file.exists() or digest_file.read_text() != digest:
        import_target(full, scratch)
        atomic_write_text(digest_file, digest)
    return read_manifest(scratch.target())


def sweep_labels(cfg: Config, workspace, amounts: list[str]) -> Path:
    """OmniSource Fig. 7: rerun everything on label subsets of the target training set."""
    ws = Workspace.of(workspace)
    sweep_dir = ws.sweeps_dir / "labels"
    base = _shared(cfg, ws)
    for a in amounts:
        parse_amount(a)
    full = _full_target(base, sweep_dir)
    train = [i for i, r in enumerate(full.rows) if r.get("split") == "train" and r.get("status") == "ok"]
    if not train:
        raise ValueError("sweep labels: the target manifest has no training videos")
    points = []
    for a in amounts:
        mask = label_subset([full.rows[i]["label"] for i in train], a, cfg.target.seed)
        chosen = {train[i] for i in np.flatnonzero(mask)}
        rows = [r for i, r in enumerate(full.rows) if i in chosen or r.get("split") != "train"]
        name = point_name(a)
        subset = write_manifest(Manifest(rows, full.classes), sweep_dir / name / "subset.parquet")
        pcfg = copy.deepcopy(base)
        pcfg.target.format, pcfg.target.annotations, pcfg.target.per_class = "manifest", str(subset.resolve()), 0
        result = run_point(pcfg, sweep_dir / name, name)
        points.append({**result, "point": a, "labeled": len(chosen)})
    return write_summary(ws, "labels", points)


def sweep_teacher(cfg: Config, workspace, teachers: list[str]) -> Path:
    """OmniSource Fig. 6: the same student scored-and-filtered by different teachers."""
    if not cfg.web:
        raise ConfigError("sweep teacher: no web sources configured (the `web` list of the config is empty)")
    ws = Workspace.of(workspace)
    sweep_dir = ws.sweeps_dir / "teacher"
    base = _shared(cfg, ws)
    points = []
    for i, spec in enumerate(teachers):
        name = f"t{i}-{point_name(spec)}"
        tcfg = load_config(_yaml_file(sweep_dir / "teachers" / name, base), shlex.split(spec))
        tcfg.web, tcfg.features.cache_root = [], base.features.cache_root
        tws = Workspace(sweep_dir / "teachers" / name)
        run_point(tcfg, tws, f"teacher {spec}")
        result = run_point(base, sweep_dir / name, name, teacher=tws.run(tcfg.train.run_name))
        points.append({**result, "point": spec})
    return write_summary(ws, "teacher", points)


def _yaml_file(folder: Path, cfg: Config) -> Path:
    return atomic_write_text(folder / "base.yaml", dump_config(cfg))


def sweep_ratio(cfg: Config, workspace, ratios: list[float]) -> Path:
    """OmniSource Fig. 8: |B_A| : |B_T| (``batch_ratio`` of every web source)."""
    if not cfg.web:
        raise ConfigError("sweep ratio: no web sources configured (the `web` list of the config is empty)")
    if any(r <= 0 for r in ratios):
        raise ConfigError(f"sweep ratio: ratios must be positive, got {ratios}")
    ws = Workspace.of(workspace)
    sweep_dir = ws.sweeps_dir / "ratio"
    base = _shared(cfg, ws)
    points = []
    for r in ratios:
        pcfg = copy.deepcopy(base)
        for w in pcfg.web:
            w.batch_ratio = float(r)
        name = point_name(f"r{r:g}")
        points.append({**run_point(pcfg, sweep_dir / name, name), "point": f"{r:g}:1"})
    return write_summary(ws, "ratio", points)


def split_values(text: str) -> list[str]:
    """``"a,b,[c,d]"`` -> ["a", "b", "[c,d]"]: commas inside brackets, braces or quotes stay."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return out


def grid_points(axes: list[str]) -> list[dict[str, str]]:
    """Hydra-multirun style: each ``key=v1,v2,...`` is an axis; the points are the product of the
    axes in the order given ({key: value} each). A single value is an axis of one point."""
    import itertools

    parsed = []
    for text in axes:
        key, sep, values = text.partition("=")
        vals = split_values(values) if sep else []
        if not key.strip() or not vals or any(v == "" for v in vals):
            raise ConfigError(f"sweep grid: {text!r}: expected key=value1,value2,... such as omni.threshold=0.5,0.8")
        parsed.append([(key.strip(), v) for v in vals])
    if not parsed:
        raise ConfigError("sweep grid: no axis given: pass key=value1,value2,... such as omni.filter=confidence,both")
    return [dict(p) for p in itertools.product(*parsed)]


def sweep_grid(cfg: Config, workspace, axes: list[str], seeds: int = 1) -> Path:
    """Every point of the grid (see grid_points), each trained with ``seeds`` seeds (train.seed,
    train.seed + 1, ...) in ``<workspace>/sweeps/grid/<point>/seed<s>/``; top-1 means with their
    95 % interval over seeds, and the difference to the first point paired seed by seed."""
    from .compare import mean_interval

    if seeds < 1:
        raise ConfigError(f"sweep grid: --seeds must be at least 1, got {seeds}")
    ws = Workspace.of(workspace)
    sweep_dir = ws.sweeps_dir / "grid"
    base = _shared(cfg, ws)
    points = grid_points(axes)
    swept = [k for k in points[0] if len({p[k] for p in points}) > 1]
    base_file = _yaml_file(sweep_dir, base)
    configs = []  # every point's config is checked before anything runs
    for p in points:
        for s in range(seeds):
            configs.append((p, s, load_config(base_file, [f"{k}={v}" for k, v in p.items()]
                                              + [f"train.seed={base.train.seed + s}"])))
    results: dict[str, list[dict]] = {}
    for p, s, pcfg in configs:
        name = point_name(" ".join(f"{k}={p[k]}" for k in swept) or "base")
        results.setdefault(name, []).append(run_point(pcfg, sweep_dir / name / f"seed{s}", f"{name} seed {s}"))
    first = next(iter(results.values()))
    out = []
    for (name, runs), p in zip(results.items(), points):
        row = {"point": " ".join(f"{k}={p[k]}" for k in swept) or "base", "settings": {k: p[k] for k in swept},
               "seeds": len(runs)}
        for key in ("student_top1", "baseline_top1", "student_mca", "baseline_mca"):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                row[key], row[f"{key}_lo"], row[f"{key}_hi"] = mean_interval(values)
        key = "student_top1" if cfg.web else "baseline_top1"
        if runs is not first and all(r.get(key) is not None for r in runs + first):
            row["delta_top1"], row["delta_lo"], row["delta_hi"] = mean_interval(
                [a[key] - b[key] for a, b in zip(runs, first)])
        kept = [r["kept"] for r in runs if r.get("kept") is not None]
        if kept:
            row["kept"] = float(np.mean(kept))
        out.append(row)
    return write_summary(ws, "grid", out)


def write_summary(workspace, kind: str, points: list[dict]) -> Path:
    """sweep_<kind>.json / .csv / .png under <workspace>/sweeps; prints the table."""
    from rich.table import Table

    from .report.figures import png_bytes, sweep_figure

    out = Workspace.of(workspace).sweeps_dir
    path = atomic_write_text(out / f"sweep_{kind}.json", json.dumps({"kind": kind, "points": points}, indent=2))
    cols = [c for c in COLUMNS + ["labeled"] if any(c in p for p in points)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(points)
    atomic_write_text(out / f"sweep_{kind}.csv", buf.getvalue())
    png = png_bytes(sweep_figure(kind, points))
    atomic_write_bytes(out / f"sweep_{kind}.png", lambda tmp: Path(tmp).write_bytes(png))
    table = Table(title=f"sweep {kind}: validation")
    for c in cols:
        table.add_column(c.replace("_", "\n"), justify="left" if c == "point" else "right", overflow="fold")
    for p in points:
        table.add_row(*[f"{p[c]:.3f}" if isinstance(p.get(c), float) else str(p.get(c, "–")) for c in cols])
    console.print(table)
    return path
