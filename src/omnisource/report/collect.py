"""What a workspace holds, gathered for the report: counts, filter quality, curves, metrics.

Each ``gather_*`` function reads one kind of output and raises ``Unavailable`` with a short
reason when it is missing, so the report shows "not available: why" instead of failing.
The counting itself is done by small pure functions over arrays.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..config import Config, WebSourceConfig
from ..data.manifest import Manifest, ManifestError, read_manifest
from ..workspace import Workspace

STATUSES = ("ok", "corrupt", "duplicate", "rejected")


class Unavailable(Exception):
    """A report section that cannot be shown; the message says why, in a few words."""


def read_json(path: Path, what: str):
    if not path.is_file():
        raise Unavailable(f"{what}: {path.name} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Unavailable(f"{what}: {path.name} is not valid JSON ({err})") from None


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines log; a torn last line (a run killed mid-write) is skipped."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# --------------------------------------------------------------------------- pure counting


def status_counts(statuses) -> dict[str, int]:
    """Rows per status, every status of ``STATUSES`` present (0 when absent)."""
    found = Counter(str(s) for s in statuses)
    return {s: found.get(s, 0) for s in STATUSES} | {k: v for k, v in found.items() if k not in STATUSES}


def per_class_counts(query_class, kept_label, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """OmniSource Fig. 3: samples per class of a web source before and after teacher filtering.

    ``query_class``: class index of each clean sample's query (-1: the query names no class);
    ``kept_label``: the pseudo-label of each kept sample (-1: not kept). Returns ``before``
    of length C + 1 (the last bin counts queries that name no class) and ``after`` of length C.
    """
    q = np.asarray(query_class, dtype=np.int64)
    k = np.asarray(kept_label, dtype=np.int64)
    before = np.bincount(np.where(q >= 0, q, num_classes), minlength=num_classes + 1)[:num_classes + 1]
    after = np.bincount(k[k >= 0], minlength=num_classes)[:num_classes]
    return before, after


def extremes(probs, n: int) -> tuple[list[int], list[int]]:
    """Indices of the ``n`` highest and the ``n`` lowest probabilities (highest first, lowest
    first); with fewer than 2n items the lowest are those not already among the highest."""
    p = np.asarray(probs, dtype=np.float64)
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    top = order[:n]
    bottom = [i for i in reversed(order) if i not in top][:n]
    return top, bottom


# --------------------------------------------------------------------------- workspace readers


def source_names(cfg: Config, ws) -> list[str]:
    """Web sources of the config, else those whose manifests exist in the workspace."""
    if cfg.web:
        return [w.name for w in cfg.web]
    return Workspace.of(ws).web_sources()


def _manifest(path: Path) -> Manifest | None:
    if not path.exists():
        return None
    try:
        return read_manifest(path)
    except ManifestError as err:
        raise Unavailable(str(err)) from None


def target_manifest(ws) -> Manifest:
    """The most processed target manifest of the workspace (prepared > validated > imported)."""
    for stage in ("prepared", "validated", "imported"):
        m = _manifest(Workspace.of(ws).target(stage))
        if m is not None and m.classes:
            return m
    raise Unavailable("no target manifest in the workspace (run `omnisource import`)")


def target_classes(ws) -> list[str]:
    return target_manifest(ws).classes


def gather_stage_counts(cfg: Config, ws) -> list[dict]:
    """One row per source: collected, corrupt, duplicates, rejected by the teacher, kept, and the
    training samples the format transform made of the kept ones."""
    ws = Workspace.of(ws)
    rows = []
    for stage in ("validated", "imported"):
        m = _manifest(ws.target(stage))
        if m is not None:
            rows += target_stage_counts(m.rows)
            break
    for name in source_names(cfg, ws):
        m = _manifest(ws.web(name, "aux")) or _manifest(ws.web(name))
        if m is None:
            continue
        c = status_counts([r["status"] for r in m.rows])
        selected = ws.web(name, "aux").exists()
        train = _manifest(ws.web(name, "train"))
        rows.append({"source": name, "collected": len(m.rows), **c, "kept": c["ok"] if selected else None,
                     "training samples": sum(r["status"] == "ok" for r in train.rows) if train else None})
    if not rows:
        raise Unavailable("no manifests in the workspace yet")
    return rows


TARGET_SPLITS = {"train": "target: labeled for training", "val": "target: validation",
                 "test": "target: test"}


def target_stage_counts(rows: list[dict]) -> list[dict]:
    """Count rows of the target manifest per split the experiment uses: the labeled training
    videos (``target.per_class`` of them per class) and the validation ones. Imported videos
    the experiment leaves out (split ``unused``) are counted in :func:`unused_target`."""
    out = []
    for split, name in TARGET_SPLITS.items():
        part = [r for r in rows if r.get("split") == split]
        if part:
            c = status_counts([r["status"] for r in part])
            out.append({"source": name, "collected": len(part), **c, "kept": c["ok"],
                        "training samples": c["ok"] if split == "train" else None})
    return out


def unused_target(ws) -> int:
    """Imported target videos that this experiment does not use (e.g. beyond target.per_class)."""
    for stage in ("validated", "imported"):
        m = _manifest(Workspace.of(ws).target(stage))
        if m is not None:
            return sum(r.get("split") not in TARGET_SPLITS for r in m.rows)
    return 0


def filtered_sources(cfg: Config, ws, why: list[str]):
    """(name, aux manifest) of each web source the teacher has filtered; the others go to ``why``."""
    for name in source_names(cfg, ws):
        m = _manifest(Workspace.of(ws).web(name, "aux"))
        if m is None:
            why.append(f"{name} not filtered yet")
        else:
            yield name, m


def gather_class_counts(cfg: Config, ws) -> dict[str, dict]:
    """Per web source: classes, ``before`` (per query class, + "no class") and ``after`` counts."""
    from ..web import query_classes

    classes = target_classes(ws)
    sources = {w.name: w for w in cfg.web}
    out, why = {}, []
    for name, m in filtered_sources(cfg, ws, why):
        clean = [r for r in m.rows if r["status"] in ("ok", "rejected")]
        queries = [(r.get("weak_labels") or [""])[0] for r in clean]
        qmap = query_classes(Workspace.of(ws), sources.get(name, WebSourceConfig(name=name)), classes, queries, "report", quiet=True)
        qcls = [qmap.get((r.get("weak_labels") or [""])[0], -1) for r in clean]
        kept = [r["label"] if r["status"] == "ok" and r.get("label") is not None else -1 for r in clean]
        before, after = per_class_counts(qcls, kept, len(classes))
        out[name] = {"classes": classes, "before": before.tolist(), "after": after.tolist()}
    if not out:
        raise Unavailable("no filtered web source" + (f" ({'; '.join(why)})" if why else " (no web sources)"))
    return out


def gather_filter_quality(cfg: Config, ws) -> list[dict]:
    rows, why = [], []
    for name in source_names(cfg, ws):
        path = Workspace.of(ws).selection(name)
        if not path.exists():
            why.append(f"{name}: not filtered yet")
            continue
        stats = read_json(path, name)
        f = stats.get("filter")
        if not f:
            why.append(f"{name}: no ground truth (true_label) to compare with")
            continue
        rows.append({"source": name, **{k: f.get(k) for k in ("total", "kept", "relevant", "precision", "recall")}})
    if not rows:
        raise Unavailable("; ".join(why) or "no web sources")
    return rows


def gather_teachers(cfg: Config, ws) -> list[dict]:
    """Per source: the teachers that scored it (``scores/<source>/teachers.json``) and its kept count."""
    ws = Workspace.of(ws)
    rows, why = [], []
    for name in source_names(cfg, ws):
        if not ws.scores_info(name).exists():
            why.append(f"{name}: not scored yet")
            continue
        info = read_json(ws.scores_info(name), name)
        sel = read_json(ws.selection(name), name) if ws.selection(name).exists() else {}
        for t in info["teachers"]:
            rows.append({"source": name, "kind": info.get("kind"), "teacher": t["run"], "model": t.get("model"),
                         "type": t.get("kind"), "sampling": t.get("sampler"),
                         "windows": f"{info.get('clip_seconds'):g} s, {info.get('views')} views"
                         if info.get("kind") == "untrimmed" else "", "kept": sel.get("kept")})
    if not rows:
        raise Unavailable("; ".join(why) or "no web sources")
    return rows


def run_names(ws) -> list[str]:
    return Workspace.of(ws).run_names()


def gather_curves(ws) -> dict[str, list[dict]]:
    ws = Workspace.of(ws)
    out = {name: read_jsonl(ws.run(name) / "log.jsonl") for name in ws.run_names()
           if (ws.run(name) / "log.jsonl").exists()}
    out = {k: v for k, v in out.items() if v}
    if not out:
        raise Unavailable("no training logs (runs/*/log.jsonl)")
    return out


def gather_metrics(ws) -> dict[str, dict]:
    ws = Workspace.of(ws)
    out = {name: read_json(ws.run(name) / "metrics.json", name) for name in ws.run_names()
           if (ws.run(name) / "metrics.json").exists()}
    if not out:
        raise Unavailable("no evaluated runs (runs/*/metrics.json); run `omnisource evaluate`")
    return out


def baseline_run(cfg: Config, metrics: dict[str, dict], requested: str | None = None) -> str:
    """The run others are compared with: the requested one, else the (first) teacher run, else
    the target-only run of the config."""
    for name in ([requested] if requested else [*cfg.omni.teacher_runs, cfg.train.run_name]):
        if name in metrics:
            return name
    want = requested or (cfg.omni.teacher_runs or [cfg.train.run_name])[0]
    raise Unavailable(f"no baseline run: {want} has no metrics.json")


def gather_attention(ws) -> dict[str, dict]:
    """Attention weights left by domain-adaptation runs: ``runs/<run>/attention.jsonl`` (one
    record per web sample, sorted by weight; see train.transfer), or ``attention*.json|npy``
    (a list of numbers, or a mapping holding one under ``weights``).
    Returns {"<run>/<file>": {"weights": array, "records": the jsonl records or []}}."""
    ws, out = Workspace.of(ws), {}
    for name in ws.run_names():
        for path in sorted(ws.run(name).glob("attention*")):
            records = []
            try:
                if path.suffix == ".npy":
                    values = np.load(path, allow_pickle=False)
                elif path.suffix == ".jsonl":
                    records = read_jsonl(path)
                    values = [r["weight"] for r in records]
                elif path.suffix == ".json":
                    data = json.loads(path.read_text())
                    values = np.asarray(data.get("weights") if isinstance(data, dict) else data, dtype=np.float64)
                else:
                    continue
                values = np.asarray(values, dtype=np.float64).ravel()
            except (ValueError, TypeError, KeyError, OSError, json.JSONDecodeError):
                continue
            if values.size:
                out[f"{name}/{path.name}"] = {"weights": values, "records": records}
    if not out:
        raise Unavailable("no attention weights (written by domain-adaptation runs)")
    return out


def web_rows_by_id(cfg: Config, ws) -> dict[str, dict]:
    """Every row of the workspace's imported web manifests, by id."""
    rows = {}
    for name in source_names(cfg, ws):
        m = _manifest(Workspace.of(ws).web(name))
        rows.update({r["id"]: r for r in (m.rows if m else [])})
    return rows


def gather_sweeps(ws) -> dict[str, dict]:
    out = {}
    for path in sorted(Workspace.of(ws).sweeps_dir.glob("sweep_*.json")):
        data = read_json(path, path.stem)
        if data.get("points"):
            out[path.stem[len("sweep_"):]] = data
    if not out:
        raise Unavailable("no comparisons or sweeps yet (`omnisource compare`, `omnisource sweep grid|labels|teacher|ratio`)")
    return out
