"""``omnisource report WORKSPACE``: one self-contained HTML page plus the figures as PNG files.

Sections: first a headline (did web data help: the paired top-1 difference over the baseline
with a bootstrap interval, the web sources and what the filter kept of them, the settings; see
``headline``), then counts per stage and source, per-class counts before/after filtering
(OmniSource Fig. 3), filter precision/recall where ground truth exists, results table, training
curves per source, confusion matrices, the class pairs whose confusion score fell or rose most
against a baseline run (App. Tables 18–19), each web source's kept and dropped samples per
query with thumbnails of the highest/lowest-confidence ones (``samples``), and the sweeps of ``omnisource sweep``. Anything missing becomes a
short "not available: why" line.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

from ..config import Config, load_config
from ..data.manifest import ManifestError, atomic_write_bytes, atomic_write_text
from ..workspace import Workspace
from . import collect, figures, runs, samples
from . import html as H
from .collect import Unavailable
from .confusion import pair_changes
from .headline import arm_of, headline, variant_workspaces


class _Writer:
    """Renders figures once: embedded in the page and saved under ``report/figures``."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "figures"
        self.written: set[Path] = set()

    def figure(self, fig, name: str, alt: str) -> str:
        png = figures.png_bytes(fig)
        return self.png(png, name, alt)

    def png(self, png: bytes, name: str, alt: str, cls: str = "plot") -> str:
        return self.image(png, name, alt, cls)

    def image(self, data: bytes, name: str, alt: str, cls: str = "plot", ext: str = "png") -> str:
        """Embed ``data`` (PNG, or JPEG with ``ext="jpg"``) and save it as ``figures/<name>.<ext>``."""
        path = self.dir / f"{_safe(name)}.{ext}"
        atomic_write_bytes(path, lambda tmp: Path(tmp).write_bytes(data))
        self.written.add(path)
        return H.img(data, alt, cls, "jpeg" if ext == "jpg" else "png")

    def prune(self) -> None:
        """Remove figures of an earlier report that this one did not draw again."""
        for path in self.dir.rglob("*") if self.dir.is_dir() else []:
            if path.suffix in (".png", ".jpg") and path not in self.written:
                path.unlink(missing_ok=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_/" else "_" for c in name)


def _section(build: Callable[[], str]) -> str:
    """A section's HTML, or "not available: why" when its inputs are missing or unreadable."""
    try:
        return build()
    except Unavailable as err:
        return H.unavailable(str(err))
    except (ManifestError, OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as err:
        return H.unavailable(f"could not read the inputs ({type(err).__name__}: {err})")


def _counts(cfg, ws, w: _Writer) -> str:
    rows = collect.gather_stage_counts(cfg, ws)
    cols = ["collected", "corrupt", "duplicate", "rejected", "kept", "training samples"]
    unused = collect.unused_target(ws)
    why = f" (target.per_class={cfg.target.per_class} labeled training videos per class)" \
        if cfg.target.per_class else ""
    note = f"<p>{unused} more imported target videos are not used by this experiment{why}.</p>" if unused else ""
    return (H.table(["source", *cols], [[r["source"], *[r.get(c) for c in cols]] for r in rows]) + note
            + w.figure(figures.stage_counts_figure(rows), "stage_counts", "samples per stage and source"))


def _class_counts(cfg, ws, w: _Writer) -> str:
    parts = []
    for name, c in collect.gather_class_counts(cfg, ws).items():
        labels = c["classes"] + ["(no class)"]
        rows = [[lab, b, a] for lab, b, a in zip(labels, c["before"], c["after"] + [0]) if b or a]
        parts.append(f"<h3>{H.esc(name)}</h3>" + H.table(["class of the query", "before filtering", "kept"], rows)
                     + w.figure(figures.class_counts_figure(name, c["classes"], c["before"], c["after"]),
                                f"class_counts_{name}", f"{name}: samples per class"))
    return "\n".join(parts)


def _teachers(cfg, ws, w: _Writer) -> str:
    rows = collect.gather_teachers(cfg, ws)
    cols = ["source", "kind", "teacher", "model", "type", "sampling", "windows", "kept"]
    note = "<p>An ensemble (several teachers of one source) averages their probabilities.</p>"
    return note + H.table(["source", "source kind", "teacher run", "model", "2D / 3D", "sampling",
                           "untrimmed windows", "kept"], [[r[c] for c in cols] for r in rows])


def _filter_quality(cfg, ws, w: _Writer) -> str:
    rows = collect.gather_filter_quality(cfg, ws)
    cols = ["total", "kept", "relevant", "precision", "recall"]
    note = ("<p>precision: kept samples whose pseudo-label is their true class / kept; "
            "recall: those / samples of some target class.</p>")
    return note + H.table(["source", *cols], [[r["source"], *[r[c] for c in cols]] for r in rows])


def _results(cfg, ws, w: _Writer, baseline: Optional[str]) -> str:
    metrics = collect.gather_metrics(ws)
    try:
        base = collect.baseline_run(cfg, metrics, baseline)
    except Unavailable:
        base = None
    rows = []
    for name, m in metrics.items():
        delta = m["top1"] - metrics[base]["top1"] if base else None
        rows.append([name + (" (baseline)" if name == base else ""), m.get("num_samples"), m.get("top1"),
                     m.get("top5"), m.get("mean_class_accuracy"), delta if name != base else None])
    arms = {arm_of(n) for n in metrics}
    for variant, folder in variant_workspaces(ws):  # the runs of a variant that the workspace lacks
        try:
            variant_metrics = collect.gather_metrics(folder)
        except Unavailable:
            continue
        for name, m in variant_metrics.items():
            if arm_of(name) not in arms:
                delta = m["top1"] - metrics[base]["top1"] if base else None
                rows.append([f"{variant}/{name}", m.get("num_samples"), m.get("top1"), m.get("top5"),
                             m.get("mean_class_accuracy"), delta])
    return H.table(["run", "validation samples", "top-1", "top-5", "mean class acc.", "Δ top-1 vs baseline"], rows)


def _headline(cfg, ws, baseline: Optional[str]) -> str:
    try:
        metrics = collect.gather_metrics(ws)
    except Unavailable:
        metrics = {}
    return headline(cfg, ws, collect.baseline_run(cfg, metrics, baseline))


def _pairs(cfg, ws, w: _Writer, baseline: Optional[str]) -> str:
    metrics = collect.gather_metrics(ws)
    base = collect.baseline_run(cfg, metrics, baseline)
    others = [n for n in metrics if n != base]
    if not others:
        raise Unavailable(f"only the baseline run {base} is evaluated; nothing to compare")
    parts = ["<p>s<sub>ij</sub> = (n<sub>ij</sub> + n<sub>ji</sub>) / (n<sub>ij</sub> + n<sub>ji</sub> + "
             f"n<sub>ii</sub> + n<sub>jj</sub>) on the validation set, against the baseline run "
             f"<b>{H.esc(base)}</b>.</p>"]
    for name in others:
        m, b = metrics[name], metrics[base]
        if m.get("classes") != b.get("classes"):
            parts.append(f"<h3>{H.esc(name)}</h3>" + H.unavailable("its classes differ from the baseline's"))
            continue
        ch = pair_changes(m["confusion_matrix"], b["confusion_matrix"], m["classes"])
        for key, title in (("fell", "confusion fell most"), ("rose", "confusion rose most")):
            rows = [[f"{e['pair'][0]} – {e['pair'][1]}", e["baseline"], e["run"], e["delta"]] for e in ch[key]]
            parts.append(f"<h3>{H.esc(name)}: {title}</h3>"
                         + (H.table(["class pair", f"s_ij {base}", f"s_ij {name}", "change"], rows) if rows
                            else H.unavailable("no pair changed this way")))
    return "\n".join(parts)


def _attention(cfg, ws, w: _Writer, n: int = 5) -> str:
    """A histogram of each run's attention weights and, from attention.jsonl, its n lowest- and
    highest-weighted web samples (Kae & Song: noisy samples should sit at the bottom)."""
    parts, web_rows = [], None
    for name, att in collect.gather_attention(ws).items():
        v = att["weights"]
        parts.append(w.figure(figures.histogram_figure(f"{name} (n={len(v)})", v), f"attention_{name}", name))
        records = att["records"]
        if not records:
            continue
        web_rows = collect.web_rows_by_id(cfg, ws) if web_rows is None else web_rows
        for title, chosen in (("lowest", records[:n]), ("highest", records[-n:][::-1])):
            rows = []
            for r in chosen:
                row = web_rows.get(r["id"], {})
                truth = row.get("true_label")
                rows.append([r["source"], (row.get("weak_labels") or ["?"])[0], "" if truth is None else truth,
                             f"{r['weight']:.3f}", Path(row.get("path", r["id"])).name])
            parts.append(f"<h3>{H.esc(name)}: {title}-weighted web samples</h3>"
                         + H.table(["source", "query", "true class", "weight (1 = uniform)", "file"], rows))
    return "\n".join(parts)


def _compare(ws, w: _Writer) -> str:
    """The table of the last ``omnisource compare`` run from this workspace, and its figure."""
    data = collect.read_json(Workspace.of(ws).root / "compare" / "compare.json", "compare")
    rows = [[r["arm"], f"{r['runs']} × {r['clips']} clips", H.interval_text(r, "top1"), H.interval_text(r, "mca"),
             H.interval_text(r, "delta_top1", "delta_lo", "delta_hi", sign=True), r.get("delta_paired", ""),
             r.get("kept", ""), r["settings"]] for r in data["rows"]]
    return ("<h3>compare</h3>" + H.table(["setting", "runs", "top-1 %", "mean class acc. %", "Δ top-1 vs first",
                                          "Δ paired on", "kept web", "settings"], rows)
            + w.figure(figures.compare_figure(data["rows"]), "compare", "compare"))


def _sweeps(cfg, ws, w: _Writer) -> str:
    parts = []
    if (Workspace.of(ws).root / "compare" / "compare.json").is_file():
        parts.append(_compare(ws, w))
    try:
        sweeps = collect.gather_sweeps(ws)
    except collect.Unavailable:
        if parts:
            return parts[0]
        raise
    for kind, data in sweeps.items():
        cols = [c for c in ("student_top1", "baseline_top1", "teacher_top1", "student_mca", "baseline_mca",
                            "kept", "precision", "recall") if any(c in p for p in data["points"])]
        rows = [[p["point"], *[p.get(c) for c in cols]] for p in data["points"]]
        parts.append(f"<h3>sweep {H.esc(kind)}</h3>" + H.table(["point", *cols], rows)
                     + w.figure(figures.sweep_figure(kind, data["points"]),
                                f"sweep_{kind}", f"sweep {kind}"))
    return "\n".join(parts)


def write_report(cfg: Config, workspace, baseline: str | None = None, self_check: bool = False,
                 out: str | Path | None = None) -> Path:
    """Write ``<workspace>/report/index.html`` (or ``out``) and its figures; returns the HTML path."""
    ws = Workspace.of(workspace)
    if not ws.exists():
        raise FileNotFoundError(f"{ws}: workspace folder not found")
    html_path = Path(out) if out else ws.report_dir / "index.html"
    w = _Writer(html_path.parent)
    sections = [
        ("headline", "Did web data help?", lambda: _headline(cfg, ws, baseline)),
        ("counts", "Samples per stage", lambda: _counts(cfg, ws, w)),
        ("classes", "Per-class counts before and after filtering", lambda: _class_counts(cfg, ws, w)),
        ("teachers", "Teachers per source", lambda: _teachers(cfg, ws, w)),
        ("filter", "Teacher filter precision and recall", lambda: _filter_quality(cfg, ws, w)),
        ("results", "Results", lambda: _results(cfg, ws, w, baseline)),
        ("curves", "Training curves", lambda: runs.curves_section(cfg, ws, w, baseline)),
        ("confusion", "Confusion matrices", lambda: runs.confusion_section(cfg, ws, w, baseline)),
        ("pairs", "Confusion pairs against the baseline", lambda: _pairs(cfg, ws, w, baseline)),
        ("thumbs", "Web samples per query: kept, dropped, thumbnails", lambda: samples.section(cfg, ws, w)),
        ("sweeps", "Comparisons and sweeps", lambda: _sweeps(cfg, ws, w)),
    ]
    if any(ws.runs_dir.glob("*/attention*")):
        sections.insert(8, ("attention", "Attention weights", lambda: _attention(cfg, ws, w)))
    built = [(a, t, _section(fn)) for a, t, fn in sections]
    subtitle = f"workspace {ws.root.resolve()} · mode {cfg.mode} · written {time.strftime('%Y-%m-%d %H:%M')}"
    atomic_write_text(html_path, H.page("OmniSource experiment report", subtitle, built, self_check))
    w.prune()
    return html_path


def report_stage(cfg: Config, workspace) -> Path:
    return write_report(cfg, workspace)


def workspace_config(workspace: Path, overrides: list[str] | None = None) -> Config:
    """The config a workspace was run with (its config.yaml), else the defaults."""
    path = Workspace.of(workspace).config_file
    cfg = load_config(path if path.is_file() else None, list(overrides or []))
    cfg.workspace = str(workspace)
    return cfg

