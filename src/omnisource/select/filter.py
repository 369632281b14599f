"""Teacher filtering of web data (OmniSource §3.2).

Rules: ``confidence`` keeps a sample whose teacher top-1 probability reaches the threshold
(its pseudo-label is the teacher's top-1); ``agreement`` keeps it when the teacher's top-1
equals the class of its query (mmaction2's released lists); ``both`` needs both.
``query_floor`` adds a per-class floor: each query also keeps its best-ranked share of samples,
by the teacher's probability of the query's class (agreement rules) or of its top-1 (confidence).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

import numpy as np

RULES = ("confidence", "agreement", "both", "none")


def normalise_name(name: str) -> str:
    """Lower case, accents and punctuation dropped, words joined by single spaces."""
    s = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", s)  # CamelCase -> camel case
    s = re.sub(r"[^A-Za-z0-9]+", " ", s).lower().strip()
    return re.sub(r"\s+", " ", s)


def map_queries(queries: list[str], classes: list[str], mapping: dict[str, str] | None = None,
                table: dict[str, str] | None = None) -> dict[str, int]:
    """Query -> target class index (-1 when the query names no class).

    An explicit ``mapping`` (query -> class name) wins; then ``table``, the query -> class column of
    the query manifest that ``omnisource queries`` writes (so its hashtags and translations map
    to the class they were made from); otherwise names match after ``normalise_name`` ("horse
    race" -> HorseRace, "bouncing ball" -> bouncing_ball); other wordings ("horse racing") need
    the mapping.
    """
    by_name = {normalise_name(c): i for i, c in enumerate(classes)}
    by_name.update({normalise_name(c).replace(" ", ""): i for i, c in enumerate(classes)})
    index = {c: i for i, c in enumerate(classes)}
    by_table = {}
    for q, c in (table or {}).items():
        if c in index:
            by_table.setdefault(q, index[c])
            by_table.setdefault(normalise_name(q), index[c])
    out = {}
    for q in queries:
        if mapping and q in mapping:
            target = mapping[q]
            if target not in classes:
                raise ValueError(f"query map: {q!r} -> {target!r}, which is not a target class")
            out[q] = classes.index(target)
            continue
        n = normalise_name(q)
        found = by_table.get(q, by_table.get(n, -1))
        out[q] = found if found >= 0 else by_name.get(n, by_name.get(n.replace(" ", ""), -1))
    return out


def unmapped_queries(qmap: dict[str, int], queries) -> list[tuple[str, int]]:
    """(query, samples) of the queries that name no class, most samples first; ``queries`` holds
    one entry per sample."""
    counts = Counter(q for q in queries if qmap.get(q, -1) < 0)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def teacher_rows(rows: list[dict], classes: list[str], query_map: dict[str, str] | None, rule: str) -> list[dict]:
    """The web rows the teacher has to see: under ``confidence`` every one (a sample whose query
    names no class can be kept with the teacher's label), under the other rules only those whose
    query names a class, since the others are dropped whatever the teacher says."""
    if rule == "confidence":
        return list(rows)
    queries = sorted({(r.get("weak_labels") or [""])[0] for r in rows})
    qmap = map_queries(queries, classes, query_map)
    return [r for r in rows if qmap[(r.get("weak_labels") or [""])[0]] >= 0]


def keep_mask(pred: np.ndarray, prob: np.ndarray, query_class: np.ndarray, rule: str = "confidence",
              threshold: float = 0.5) -> np.ndarray:
    """Boolean mask of samples kept. ``pred``/``prob``: teacher top-1 class and probability;
    ``query_class``: class of the sample's query (-1 = none)."""
    pred, prob, query_class = np.asarray(pred), np.asarray(prob), np.asarray(query_class)
    if rule == "none":
        return np.ones(len(pred), dtype=bool)
    confident = prob >= threshold
    agree = (pred == query_class) & (query_class >= 0)
    if rule == "confidence":
        return confident
    if rule == "agreement":
        return agree
    if rule == "both":
        return confident & agree
    raise ValueError(f"unknown filter rule {rule!r}; expected one of {RULES}")


def query_floor(query_prob: np.ndarray, group: np.ndarray, min_keep: float) -> np.ndarray:
    """Per sample, the probability reached by the ``ceil(min_keep · n)`` most likely of the n
    samples of its group (its query's class, or its query; inf for group -1): a per-class
    threshold calibrated on the web data, so that a class the teacher is unsure of still keeps
    its best-ranked samples instead of none."""
    query_prob, group = np.asarray(query_prob, np.float64), np.asarray(group)
    floor = np.full(len(query_prob), np.inf)
    if min_keep <= 0:
        return floor
    for q in np.unique(group[group >= 0]):
        idx = np.flatnonzero(group == q)
        n = max(1, int(np.ceil(min(1.0, min_keep) * len(idx))))
        floor[idx] = np.sort(query_prob[idx])[::-1][n - 1]
    return floor


def pseudo_labels(pred: np.ndarray, query_class: np.ndarray, rule: str) -> np.ndarray:
    """Label of a kept sample: the query's class under agreement rules (equal to the teacher's
    top-1 there), the teacher's top-1 under ``confidence``, the query's class under ``none``."""
    if rule == "confidence":
        return np.asarray(pred)
    return np.asarray(query_class)


def precision_recall(kept: np.ndarray, labels: np.ndarray, truth: np.ndarray, classes: list[str] | None = None) -> dict:
    """Filter quality where the ground truth is known (benchmarks inject noise).

    A kept sample is right when its pseudo-label equals its true class; ``truth`` is -1 for
    samples of no target class. Precision: right / kept; recall: right / samples of a target class.
    With ``classes``, also ``per_class``: per class c, precision over the samples kept as c and
    recall over the samples whose true class is c (where a source hurts, which class it is).
    """
    kept, labels, truth = np.asarray(kept, bool), np.asarray(labels), np.asarray(truth)
    right = kept & (labels == truth) & (truth >= 0)
    relevant = truth >= 0
    out = {"kept": int(kept.sum()), "total": int(len(kept)), "relevant": int(relevant.sum()),
           "precision": _ratio(right.sum(), kept.sum()), "recall": _ratio(right.sum(), relevant.sum())}
    if classes is not None:
        out["per_class"] = {c: {"kept": int((kept & (labels == i)).sum()), "relevant": int((truth == i).sum()),
                                "precision": _ratio((right & (labels == i)).sum(), (kept & (labels == i)).sum()),
                                "recall": _ratio((right & (truth == i)).sum(), (truth == i).sum())}
                            for i, c in enumerate(classes)}
    return out


def _ratio(num, den) -> float:
    return float(num / den) if den else float("nan")
