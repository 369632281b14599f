"""Teacher filtering of web data (OmniSource §3.2).

Rules: ``confidence`` keeps a sample whose teacher top-1 probability reaches the threshold
(its pseudo-label is the teacher's top-1); ``agreement`` keeps it when the teacher's top-1
equals the class of its query (mmaction2's released lists); ``both`` needs both.
``query_floor`` adds a per-class floor: each query also keeps its best-ranked share of samples,
by the teacher's probability of the query's class (agreement rules) or of its top-1 (confidence).
``class_thresholds`` / ``precision_thresholds`` calibrate one threshold per class on the target's labeled clips, from
out-of-fold teacher probabilities (``crossfit_folds`` splits the clips; the teacher has seen them,
so its own probabilities on them are inflated).
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
              threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Boolean mask of samples kept. ``pred``/``prob``: teacher top-1 class and probability;
    ``query_class``: class of the sample's query (-1 = none). ``threshold``: one for every
    class, or one per class (C,), taken at the sample's top-1 (under ``both`` a kept sample's
    top-1 is its query's class)."""
    pred, prob, query_class = np.asarray(pred), np.asarray(prob), np.asarray(query_class)
    if rule == "none":
        return np.ones(len(pred), dtype=bool)
    confident = prob >= sample_thresholds(threshold, pred)
    agree = (pred == query_class) & (query_class >= 0)
    if rule == "confidence":
        return confident
    if rule == "agreement":
        return agree
    if rule == "both":
        return confident & agree
    raise ValueError(f"unknown filter rule {rule!r}; expected one of {RULES}")


def sample_thresholds(threshold: float | np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Per sample, the threshold of its class ``cls`` (a scalar applies to every class)."""
    cls = np.asarray(cls, np.int64)
    if np.ndim(threshold) == 0:
        return np.full(len(cls), float(threshold))
    return np.asarray(threshold, np.float64)[np.clip(cls, 0, None)]


def crossfit_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray | None:
    """Fold index (0 .. n-1) of each labeled clip for cross-fitting, stratified by class: each
    class's clips are shuffled and dealt round-robin, so every fold holds out clips of every
    class and the heads trained on the other folds still see each class. n = ``folds``, capped
    by the fewest clips of a class; None when some class has fewer than 2 clips (one clip per
    class leaves nothing to hold out)."""
    labels = np.asarray(labels, np.int64)
    if not len(labels):
        return None
    n = min(int(folds), *(int((labels == c).sum()) for c in np.unique(labels)))
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out[idx] = np.arange(len(idx)) % n
    return out


def class_thresholds(probs: np.ndarray, labels: np.ndarray, keep: float, low: float, high: float,
                     default: float) -> np.ndarray:
    """Per class c, the probability of class c at which the out-of-fold teacher keeps the share
    ``keep`` of the labeled clips of class c (their (1 - keep) quantile), clipped to [low, high];
    ``default`` for a class without clips. ``probs`` (N, C): out-of-fold probabilities of the N
    labeled clips, ``labels`` their classes. A class the teacher recognises with little
    confidence gets a lower threshold (it keeps more of its web samples), one it is sure of a
    higher one (it keeps fewer look-alikes)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    out = np.full(probs.shape[1], float(default))
    for c in range(probs.shape[1]):
        mine = probs[labels == c, c]
        if len(mine):
            out[c] = np.clip(np.quantile(mine, 1.0 - keep), low, high)
    return out


def precision_thresholds(probs: np.ndarray, labels: np.ndarray, precision: float, low: float, high: float,
                         default: float) -> np.ndarray:
    """Per class c, the lowest threshold at which the labeled clips the out-of-fold teacher puts
    in c (top-1 c, probability at least the threshold) are right at rate ``precision``, clipped
    to [low, high]: ``high`` where no threshold reaches it, ``default`` for a class the teacher
    puts no clip in. A class the teacher confuses with others gets a higher threshold."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    pred, top = probs.argmax(1), probs.max(1)
    out = np.full(probs.shape[1], float(default))
    for c in range(probs.shape[1]):
        mine = np.flatnonzero(pred == c)
        if not len(mine):
            continue
        order = mine[np.argsort(-top[mine], kind="stable")]
        hits = np.cumsum(labels[order] == c) / np.arange(1, len(order) + 1)  # precision of the top i + 1
        ok = np.flatnonzero(hits >= precision - 1e-12)
        out[c] = np.clip(top[order[ok[-1]]] if len(ok) else high, low, high)
    return out


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


def frame_filter(frame_probs: list[np.ndarray], query_class: np.ndarray, rule: str, threshold: float | np.ndarray,
                 min_keep: float = 0.0, group: np.ndarray | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each 1 fps frame of each untrimmed video filtered by itself (``omni.untrimmed=frames``):
    OmniSource §3.4 scores an untrimmed video's frames and keeps its positive ones; here the
    filter rule (§3.2) decides per frame, as if every frame were a web image with its video's
    query, instead of first keeping or dropping the whole video by its best frame.
    ``frame_probs``: per video (F_i, C) teacher probabilities; ``query_class`` (N,): the class of
    each video's query (-1 = none); ``min_keep``: each query's (``group``, default its class)
    best-ranked share of *frames* is kept too (``query_floor``). Returns per video the keep mask
    (F_i,) and the pseudo-label of each frame (F_i,)."""
    query_class = np.asarray(query_class, np.int64)
    lengths = [len(p) for p in frame_probs]
    if not sum(lengths):
        return [np.zeros(n, bool) for n in lengths], [np.zeros(n, np.int64) for n in lengths]
    probs = np.concatenate([np.asarray(p, np.float64).reshape(n, -1) for p, n in zip(frame_probs, lengths) if n])
    q = np.repeat(query_class, lengths)
    pred, top = probs.argmax(1), probs.max(1)
    keep = keep_mask(pred, top, q, rule, threshold)
    if min_keep > 0 and rule != "none":
        qprob = top if rule == "confidence" else np.where(q >= 0, probs[np.arange(len(q)), np.clip(q, 0, None)], 0.0)
        g = np.repeat(query_class if group is None else np.asarray(group, np.int64), lengths)
        keep |= qprob >= query_floor(qprob, g, min_keep)
    labels = pseudo_labels(pred, q, rule)
    keep &= labels >= 0
    cuts = np.cumsum(lengths)[:-1]
    return np.split(keep, cuts), np.split(labels.astype(np.int64), cuts)


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
