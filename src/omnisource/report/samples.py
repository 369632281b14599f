"""The report's look at what the teacher filter did with each web source, query by query.

Per source: a table of kept and dropped samples per query (dropped split by reason: the query
names no class, low confidence, disagreement with the query), and thumbnail grids of the kept
and the dropped samples with the highest and the lowest confidence. A query's confidence is
the teacher's probability of the query's class (what the filter judges; read from the score
shards), else its top-1 probability; the queries that name no class form one group, ranked by
the teacher's top-1 (the samples that look most like some target class). Everything is bounded
so that a source of a million samples and thousands of queries still makes a small page:
``MAX_QUERY_ROWS`` table rows (the rest summed in one), grids for the ``MAX_QUERY_GRIDS``
largest queries that name a class, ``PER_GROUP`` thumbnails per grid, JPEG thumbnails embedded
in the page and copied under ``report/figures/thumbs/``.
"""
from __future__ import annotations

import io

import numpy as np

from ..config import Config, WebSourceConfig
from ..workspace import Workspace
from . import html as H
from .collect import Unavailable, extremes, filtered_sources, target_classes

MAX_QUERY_ROWS = 30
MAX_QUERY_GRIDS = 6
PER_GROUP = 6
NO_CLASS = "(queries that name no class)"
REASONS = ("no class", "low confidence", "disagreement")


def drop_reason(row: dict) -> str:
    """Why the teacher filter dropped a sample: "no class", "low confidence" or "disagreement"
    (select's ``drop_reason``; read from the reason of manifests written before it), else ""."""
    if row.get("status") != "rejected":
        return ""
    if row.get("drop_reason"):
        return str(row["drop_reason"])
    reason = str(row.get("reason") or "")
    for needle, code in (("names no target class", "no class"), ("teacher confidence", "low confidence"),
                         ("differs from the query", "disagreement")):
        if needle in reason:
            return code
    return reason


def _query(row: dict) -> str:
    return (row.get("weak_labels") or [""])[0]


# --------------------------------------------------------------------------- pure functions


def query_counts(rows: list[dict], qmap: dict[str, int], classes: list[str]) -> list[dict]:
    """One dict per query: the class it names ("" when none), samples, removed before the filter
    (corrupt or duplicate), kept, dropped, and dropped per reason of ``REASONS``. Ordered: queries
    that name a class first, then by samples, most first."""
    out: dict[str, dict] = {}
    for r in rows:
        q = _query(r)
        c = out.setdefault(q, {"query": q, "class": classes[qmap[q]] if qmap.get(q, -1) >= 0 else "",
                               "samples": 0, "removed": 0, "kept": 0, "dropped": 0, **dict.fromkeys(REASONS, 0)})
        c["samples"] += 1
        if r["status"] == "ok":
            c["kept"] += 1
        elif r["status"] == "rejected":
            c["dropped"] += 1
            why = drop_reason(r)
            c[why if why in REASONS else "disagreement"] += 1
        else:
            c["removed"] += 1
    return sorted(out.values(), key=lambda c: (not c["class"], -c["samples"], c["query"]))


def bounded(counts: list[dict], limit: int = MAX_QUERY_ROWS) -> list[dict]:
    """The first ``limit`` rows of ``query_counts``, the others summed into one row, plus a total."""
    def total(items, name):
        keys = ("samples", "removed", "kept", "dropped", *REASONS)
        return {"query": name, "class": "", **{k: sum(c[k] for c in items) for k in keys}}

    out = list(counts[:limit])
    if len(counts) > limit:
        out.append(total(counts[limit:], f"… {len(counts) - limit} more queries"))
    return out + [total(counts, "all queries")] if len(counts) > 1 else out


def sample_groups(rows: list[dict], conf: list[float], n: int = PER_GROUP) -> dict[str, list[tuple[dict, float]]]:
    """The ``n`` kept and ``n`` dropped rows of highest and of lowest confidence ``conf`` (one value
    per row, NaN: unscored), as (row, confidence); a row shows once per status."""
    groups = {}
    for status, label in (("ok", "kept"), ("rejected", "dropped")):
        idx = [i for i, r in enumerate(rows) if r["status"] == status and np.isfinite(conf[i])]
        top, bottom = extremes([conf[i] for i in idx], n)
        groups[f"{label}, highest confidence"] = [(rows[idx[i]], conf[idx[i]]) for i in top]
        groups[f"{label}, lowest confidence"] = [(rows[idx[i]], conf[idx[i]]) for i in bottom]
    return groups


# --------------------------------------------------------------------------- workspace readers


def query_class_probs(ws, name: str, wanted: dict[str, int]) -> dict[str, float]:
    """{id: the teacher's probability of class wanted[id]} from the source's score shards ({}
    when it has none). Reads only the id and probs columns."""
    import pyarrow.parquet as pq

    path = Workspace.of(ws).scores(name)
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path] if path.is_file() else []
    out = {}
    for f in files:
        t = pq.read_table(f, columns=["id", "probs"])
        for rid, probs in zip(t.column("id").to_pylist(), t.column("probs").to_pylist()):
            c = wanted.get(rid, -1)
            if c >= 0 and probs is not None and c < len(probs):
                out[rid] = float(probs[c])
    return out


def gather_query_samples(cfg: Config, ws, n: int = PER_GROUP, max_grids: int = MAX_QUERY_GRIDS) -> dict[str, dict]:
    """Per filtered web source: {"counts": query_counts rows, "grids": [(query, class or "",
    sample_groups, ranked by, {"kept"|"dropped": rows without a teacher score})]} for its
    ``max_grids`` largest queries naming a class, then the queries naming no class together."""
    from ..web import query_classes

    classes = target_classes(ws)
    sources = {w.name: w for w in cfg.web}
    out, why = {}, []
    for name, m in filtered_sources(cfg, ws, why):
        src = sources.get(name, WebSourceConfig(name=name))
        qmap = query_classes(Workspace.of(ws), src, classes, [_query(r) for r in m.rows], "report", quiet=True)
        counts = query_counts(m.rows, qmap, classes)
        probs = query_class_probs(ws, name, {r["id"]: qmap.get(_query(r), -1) for r in m.rows})
        by_query: dict[str, list[dict]] = {}
        for r in m.rows:
            if r["status"] in ("ok", "rejected"):
                by_query.setdefault(_query(r) if qmap.get(_query(r), -1) >= 0 else NO_CLASS, []).append(r)
        grids = []
        for c in [c for c in counts if c["class"]][:max_grids] + [{"query": NO_CLASS, "class": ""}]:
            rows = by_query.get(c["query"], [])
            if not rows:
                continue
            use_q = bool(c["class"]) and all(r["id"] in probs for r in rows)
            conf = [probs[r["id"]] if use_q else (r.get("teacher_prob") if r.get("teacher_prob") is not None
                                                  else np.nan) for r in rows]
            unscored = {label: [r for r, x in zip(rows, conf) if r["status"] == status and not np.isfinite(x)]
                        for status, label in (("ok", "kept"), ("rejected", "dropped"))}
            grids.append((c["query"], c["class"], sample_groups(rows, conf, n),
                          f"p({c['class']})" if use_q else "teacher top-1", unscored))
        out[name] = {"counts": counts, "grids": grids}
    if not out:
        raise Unavailable("; ".join(why) or "no web sources")
    return out


# --------------------------------------------------------------------------- HTML


def thumbnail(row: dict, size: int = 112, fmt: str = "PNG") -> bytes:
    """An image (PNG, or JPEG for photos) of an image sample, or of a video sample's middle frame."""
    from PIL import Image

    from ..data import media

    if row["kind"] == "image":
        frame = media.read_image(row["path"])
    else:
        info = media.probe(row["path"], row["kind"])
        first, num = media.frame_window(info, row.get("start_s"), row.get("end_s"))
        frame = media.read_frames(row["path"], [first + num // 2], kind=row["kind"])[0]
    im = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def caption(row: dict, conf: float, qclass: str, classes: list[str]) -> str:
    """"BasketballDunk 0.43 · top-1 Surfing 0.51 · disagreement": the ranked confidence (of the
    query's class), the teacher's top-1 when it is another class, and why a drop was dropped;
    for a query naming no class "chess → Archery 0.62 · no class"."""
    pred = row.get("teacher_pred")
    top = classes[pred] if pred is not None and 0 <= pred < len(classes) else "?"
    if qclass:
        text = f"{qclass} {conf:.2f}"
        if top != qclass:
            text += f" · top-1 {top}" + (f" {row['teacher_prob']:.2f}" if row.get("teacher_prob") is not None else "")
    else:
        text = f"{_query(row) or '?'} → {top} {conf:.2f}"
    why = drop_reason(row)
    return text + (f" · {why}" if why else "")


def _no_thumbs(what: str, unscored: list[dict]) -> str:
    """Why a grid is empty: no samples of that status, or none the teacher scored."""
    what = f"{what} " if what else ""
    if not unscored:
        return f"no {what}samples"
    why = (": their queries name no class, dropped before scoring"
           if all(drop_reason(r) == "no class" for r in unscored) else "")
    return f"{len(unscored)} {what}samples, none scored by the teacher{why}"


def section(cfg: Config, ws, writer) -> str:
    """HTML of the per-query section; ``writer`` embeds and saves images (stage._Writer)."""
    from ..data.media import MediaError

    classes = target_classes(ws)
    parts = ["<p>Per query: the class it names, its samples, those removed before the teacher filter "
             "(corrupt, duplicate), kept, and dropped: because the query names no target class, the "
             "teacher's confidence is below <code>omni.threshold</code>, or its top-1 is not the query's "
             "class. Thumbnails: each query's kept and dropped samples with the highest and the lowest "
             "confidence, the teacher's probability of the query's class; the queries that name no class "
             "together, by the teacher's top-1 probability.</p>"]
    cols = ["query", "class", "samples", "removed", "kept", "dropped", *REASONS]
    for name, data in gather_query_samples(cfg, ws).items():
        rows = [[c["query"], c["class"] or "–", *[c[k] for k in cols[2:]]] for c in bounded(data["counts"])]
        parts.append(f"<h3>{H.esc(name)}: kept and dropped per query</h3>"
                     + H.table(["query", "class it names", "samples", "removed before", "kept", "dropped",
                                "dropped: no class", "dropped: low confidence", "dropped: disagreement"], rows))
        shown = sum(bool(c["class"]) for c in data["counts"])
        if shown > MAX_QUERY_GRIDS:
            parts.append(f"<p>Thumbnails of the {MAX_QUERY_GRIDS} largest of the {shown} queries that name a "
                         "class.</p>")
        for g, (query, qclass, groups, ranked, unscored) in enumerate(data["grids"]):
            head = f"{name} · {query}" + (f" → {qclass}" if qclass else "")
            if not any(groups.values()):  # e.g. queries naming no class, dropped before scoring
                parts.append(f"<h3>{H.esc(head)}</h3>"
                             + H.unavailable(_no_thumbs("", unscored["kept"] + unscored["dropped"])))
                continue
            for title, items in groups.items():
                what = title.split(",")[0]
                if not items:  # none of this status, or all of them shown among the highest
                    if title.endswith("highest confidence"):
                        parts.append(f"<h3>{H.esc(head)}: {H.esc(what)}</h3>"
                                     + H.unavailable(_no_thumbs(what, unscored[what])))
                    continue
                if title.endswith("highest confidence") and not groups[f"{what}, lowest confidence"]:
                    title = f"{what}, all {len(items)}"  # too few for a lowest-confidence grid
                figs = []
                for k, (r, conf) in enumerate(items):
                    text = caption(r, conf, qclass, classes)
                    try:
                        pic = writer.image(thumbnail(r, fmt="JPEG"), f"thumbs/{name}_{g}_{title.replace(', ', '_')}_{k}",
                                           text, "thumb", ext="jpg")
                    except (MediaError, OSError, ValueError, IndexError) as err:
                        pic = H.unavailable(f"cannot decode ({err})")
                    figs.append(f"<figure>{pic}<figcaption>{H.esc(text)}</figcaption></figure>")
                parts.append(f"<h3>{H.esc(head)}: {H.esc(title)} ({H.esc(ranked)})</h3>"
                             f'<div class="thumbs">{"".join(figs)}</div>')
    return "\n".join(parts)
