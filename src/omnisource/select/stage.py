"""``omnisource select``: keep confident web samples with pseudo-labels (OmniSource §3.2)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..config import Config
from ..console import console
from ..data.manifest import Manifest, ManifestError, atomic_write_text, read_manifest, write_manifest
from ..stamps import config_inputs, file_inputs, stage
from ..teacher.calibrate import CALIBRATION
from ..teacher.score import read_scores
from ..web import query_classes, query_inputs
from ..workspace import Workspace
from .filter import (class_thresholds, frame_filter, keep_mask, map_queries, precision_recall, precision_thresholds,
                     pseudo_labels, query_floor, sample_thresholds)


def evidence_of(cfg: Config) -> str:
    """What decides for an untrimmed video under ``omni.untrimmed``: its best 1 fps frame
    (``snippet``), its best clip (``clips``), or each frame by itself (``frames``, ``per_frame``)."""
    return {"snippet": "frames", "clips": "clips", "frames": "per_frame"}[cfg.omni.untrimmed]


def select_rows(rows: list[dict], scores: dict[str, dict], classes: list[str], rule: str, threshold: float,
                query_map: dict[str, str], query_index: dict[str, int] | None = None,
                min_keep: float = 0.0, evidence: str = "frames",
                thresholds: np.ndarray | None = None) -> tuple[list[dict], dict]:
    """Rows with ``label`` set (kept) or ``status=rejected`` and a reason; plus statistics.
    ``query_index`` (query -> class, ``web.query_classes``) replaces mapping by ``query_map``.
    ``evidence``: what decides for an untrimmed video, its best 1 fps frame (``frames``, for
    snippets) or its best ``omni.clip_seconds`` clip (``clips``, OmniSource §3.5), or each
    frame by itself (``per_frame``, ``filter.frame_filter``): a video is kept when some frame
    is, and records its kept frames (``kept_frames``) with their pseudo-labels (``frame_labels``);
    ``min_keep`` then ranks frames, not videos.

    ``min_keep``: each query also keeps its ``min_keep`` share of samples with the highest
    teacher probability of its class (of the teacher's top-1 under ``confidence``;
    ``filter.query_floor``); a row kept so records that floor as ``query_floor``, which the
    untrimmed transform uses as its frame threshold.

    ``thresholds`` (C,): one threshold per class (``calibrated_thresholds``) instead of
    ``threshold``; a row kept so records its class's as ``class_threshold`` (the untrimmed
    transform's frame threshold when lower than ``omni.frame_threshold``)."""
    queries = sorted({r["weak_labels"][0] for r in rows if r.get("weak_labels")})
    qmap = query_index if query_index is not None else map_queries(queries, classes, query_map)
    scored = [r for r in rows if r["status"] == "ok" and r["id"] in scores]
    pred = np.array([scores[r["id"]]["pred"] for r in scored], dtype=np.int64)
    prob = np.array([scores[r["id"]]["prob"] for r in scored])
    qcls = np.array([qmap.get((r.get("weak_labels") or [""])[0], -1) for r in scored], dtype=np.int64)
    untrimmed = np.array([bool(scores[r["id"]].get("frame_probs")) for r in scored], dtype=bool)
    if untrimmed.any():
        # An untrimmed video keeps its query's class (OmniSource §3.4): the teacher decides
        # whether some frames show it, i.e. confidence is that of the query's class.
        for i in np.flatnonzero(untrimmed & (qcls >= 0)):
            rec = scores[scored[i]["id"]]
            if evidence == "clips" and not rec.get("clip_probs"):
                raise ManifestError(f"{scored[i]['path']}: the teacher scores have no clip scores; "
                                    "re-run `omnisource score` (omni.untrimmed=clips needs them)")
            if evidence == "clips":
                # Agreement is judged on the clip that shows the query's class best: the other
                # clips of a long video may show anything (§3.5 keeps the positive clips).
                clips = np.asarray(rec["clip_probs"])
                best = int(clips[:, qcls[i]].argmax())
                prob[i], pred[i] = clips[best, qcls[i]], int(clips[best].argmax())
            else:
                prob[i] = np.asarray(rec["frame_probs"])[:, qcls[i]].max()
            if rule == "confidence":
                pred[i] = qcls[i]
    t = threshold if thresholds is None else thresholds
    per_sample = sample_thresholds(t, pred)
    keep = keep_mask(pred, prob, qcls, rule, t)
    floor = np.full(len(scored), np.inf)
    if min_keep > 0 and rule != "none":  # "none" keeps every sample that has a class anyway
        if rule == "confidence":  # rank by the teacher's top-1 within each query
            qprob, group = prob, np.array([queries.index((r.get("weak_labels") or [""])[0])
                                           if r.get("weak_labels") else -1 for r in scored])
        else:  # rank by the probability of the query's class, within each class
            qprob = np.array([prob[i] if untrimmed[i] else scores[r["id"]]["probs"][qcls[i]] if qcls[i] >= 0
                              else 0.0 for i, r in enumerate(scored)])
            group = qcls
        floor = query_floor(qprob, group, min_keep)
        by_rank = (qprob >= floor) & ~keep
        keep |= by_rank
        floor = np.where(by_rank, floor, np.inf)
    labels = pseudo_labels(pred, qcls, rule)
    # Under rule "none" a query that names no class cannot give a label.
    keep &= labels >= 0
    frames = _per_frame(scored, scores, untrimmed, qcls, rule, t, min_keep, queries) if evidence == "per_frame" else {}
    for i, (kept_idx, kept_labels, _) in frames.items():
        keep[i], floor[i] = len(kept_idx) > 0, np.inf
        if len(kept_idx):  # the video's label: its kept frames' most common one (each frame keeps its own)
            labels[i] = Counter(kept_labels.tolist()).most_common(1)[0][0]
    out, by_id = [], {r["id"]: i for i, r in enumerate(scored)}
    for r in rows:
        r = dict(r)
        no_class = qmap.get((r.get("weak_labels") or [""])[0], -1) < 0
        if r["status"] == "ok" and r["id"] not in scores and no_class and rule != "confidence":
            # never embedded nor scored: the rule drops it whatever the teacher says
            r.update(status="rejected", drop_reason="no class", reason="query names no target class")
        elif r["status"] == "ok" and r["id"] not in scores:
            r.update(status="corrupt", reason="no teacher score (failed to decode when embedded or scored)")
        elif r["id"] in by_id:
            i = by_id[r["id"]]
            r["teacher_pred"], r["teacher_prob"] = int(pred[i]), float(prob[i])
            if i in frames:
                r["frames_scored"], r["frames_kept"] = frames[i][2], len(frames[i][0])
            if keep[i]:
                r["label"] = int(labels[i])
                if i in frames:
                    r["kept_frames"], r["frame_labels"] = frames[i][0].tolist(), frames[i][1].tolist()
                if np.isfinite(floor[i]):
                    r["query_floor"] = float(floor[i])
                if thresholds is not None:
                    r["class_threshold"] = float(per_sample[i])
            else:
                r["status"] = "rejected"
                r["drop_reason"], r["reason"] = _why(rule, prob[i], per_sample[i], pred[i], qcls[i], classes,
                                                     r.get("weak_labels"))
                if i in frames and qcls[i] >= 0:
                    r["reason"] = f"none of its {frames[i][2]} frames passes the {rule} filter (best frame: {r['reason']})"
        out.append(r)
    stats = _stats(out, scored, keep, labels, classes)
    if frames:
        stats["frames"] = {"scored": int(sum(f[2] for f in frames.values())),
                           "kept": int(sum(len(f[0]) for f in frames.values()))}
    return out, stats


def _per_frame(scored, scores, untrimmed, qcls, rule, threshold, min_keep, queries) -> dict:
    """index of an untrimmed row in ``scored`` -> (its kept frame indices, their pseudo-labels,
    its frame count), from ``frame_filter`` over the frames of every untrimmed video at once (so
    ``min_keep`` ranks a query's frames across its videos)."""
    idx = np.flatnonzero(untrimmed)
    if not len(idx):
        return {}
    probs = [np.asarray(scores[scored[i]["id"]]["frame_probs"], np.float64) for i in idx]
    group = qcls[idx] if rule != "confidence" else np.array(
        [queries.index((scored[i].get("weak_labels") or [""])[0]) if scored[i].get("weak_labels") else -1 for i in idx])
    masks, labels = frame_filter(probs, qcls[idx], rule, threshold, min_keep, group)
    return {int(i): (np.flatnonzero(m), lab[m], len(m)) for i, m, lab in zip(idx, masks, labels)}


def calibrated_thresholds(cfg: Config, record: dict | None, classes: list[str]) -> tuple[np.ndarray | None, dict]:
    """(per-class thresholds or None, the selection record's ``calibration``) of
    ``omni.calibrate`` from a cross-fit record (``teacher.calibrate.crossfit``, or the
    ``calibration.json`` that `score` writes from it); (None, {}) when calibration is off. Without
    folds (some class has 1 labeled clip) every class keeps ``omni.threshold``."""
    o = cfg.omni
    if o.calibrate == "none":
        return None, {}
    if record is None:
        raise ManifestError(f"omni.calibrate={o.calibrate} but the teacher scores have no out-of-fold "
                            "probabilities; re-run `omnisource score`")
    info = {"rule": o.calibrate, "value": o.calibrate_value, "range": list(o.calibrate_range),
            "folds": int(record["folds"])}
    if not record["folds"]:
        return None, {**info, "note": record["reason"], "thresholds": dict.fromkeys(classes, o.threshold)}
    labels = np.asarray(record["labels"])
    rule = class_thresholds if o.calibrate == "keep" else precision_thresholds
    t = rule(np.asarray(record["probs"]), labels, o.calibrate_value, o.calibrate_range[0], o.calibrate_range[-1],
             o.threshold)
    return t, {**info, "clips": int(len(labels)), "thresholds": {c: round(float(v), 4) for c, v in zip(classes, t)}}


DROP_REASONS = ("no class", "low confidence", "disagreement")


def _why(rule, prob, threshold, pred, qcls, classes, weak_labels=None) -> tuple[str, str]:
    """(one of DROP_REASONS, the sentence) for a sample the filter drops."""
    if qcls < 0 and rule in ("agreement", "both", "none"):
        query = (weak_labels or [""])[0]
        return "no class", f"query {query!r} names no target class (map it with the source's query_map)"
    if rule in ("confidence", "both") and prob < threshold:
        return "low confidence", f"teacher confidence {prob:.2f} < {threshold:.2f}"
    return "disagreement", f"teacher top-1 {classes[pred]} differs from the query's class {classes[qcls]}"


def _stats(out, scored, keep, labels, classes) -> dict:
    kept = Counter(classes[r["label"]] for r in out if r["status"] == "ok" and r.get("label") is not None)
    dropped = Counter(classes[r["teacher_pred"]] for r in out
                      if r["status"] == "rejected" and r.get("teacher_pred") is not None)
    stats = {"scored": len(scored), "kept": int(keep.sum()),
             "kept_per_class": dict(kept), "rejected_by_teacher_top1": dict(dropped),
             "status": dict(Counter(r["status"] for r in out))}
    if scored and "true_label" in scored[0]:
        # Ground truth known (benchmarks inject noise): a kept sample is right when its
        # pseudo-label is its true class; recall counts over samples of some target class.
        truth = np.array([classes.index(r["true_label"]) if r.get("true_label") in classes else -1 for r in scored])
        stats["filter"] = precision_recall(keep, labels, truth, classes)
    return stats


@stage("select", lambda cfg, ws: {
    **config_inputs(cfg, "omni.filter", "omni.threshold", "omni.min_keep", "omni.calibrate", "omni.calibrate_value",
                    "omni.calibrate_range", "omni.untrimmed",
                    "web"), **query_inputs(ws),
    **file_inputs(ws, [ws.target_manifest()] + [p for s in cfg.web for p in (ws.web(s.name), ws.scores(s.name))])},
    lambda cfg, ws: [p for s in cfg.web for p in (ws.web(s.name, "aux"), ws.selection(s.name))])
def select_stage(cfg: Config, workspace) -> list[Path]:
    """Keep the web samples the teacher filter accepts, pseudo-labelled
    (``manifests/aux_<source>.parquet``, ``selection/<source>.json``)."""
    ws = Workspace.of(workspace)
    classes = read_manifest(ws.target_manifest()).classes
    outs = []
    for src in cfg.web:
        manifest = read_manifest(ws.web(src.name))
        scores = read_scores(ws.scores(src.name))
        queries = [r["weak_labels"][0] for r in manifest.rows if r["status"] == "ok" and r.get("weak_labels")]
        index = query_classes(ws, src, classes, queries, "select")
        calib = ws.scores(src.name) / CALIBRATION
        thresholds, calibration = calibrated_thresholds(
            cfg, json.loads(calib.read_text()) if calib.exists() else None, classes)
        rows, stats = select_rows(manifest.rows, scores, classes, cfg.omni.filter, cfg.omni.threshold, src.query_map,
                                  index, cfg.omni.min_keep, evidence_of(cfg), thresholds)
        if calibration:
            stats["calibration"] = calibration
        info = ws.scores_info(src.name)
        stats["teachers"] = [t["run"] for t in json.loads(info.read_text())["teachers"]] if info.exists() else []
        out = write_manifest(Manifest(rows, classes), ws.web(src.name, "aux"))
        atomic_write_text(ws.selection(src.name), json.dumps(stats, indent=2))
        pr = stats.get("filter")
        shown = (f"threshold {cfg.omni.threshold}" if thresholds is None else
                 f"thresholds per class {thresholds.min():.2f}-{thresholds.max():.2f}")
        console.print(f"select {src.name}: kept {stats['kept']} of {stats['scored']} ({cfg.omni.filter}, {shown})"
                      + (f", precision {pr['precision']:.2f} recall {pr['recall']:.2f}" if pr else ""))
        outs.append(out)
    return outs
