"""OmniSource on real data: UCF101-6 + web images + the unused UCF videos as web videos.

    python benchmarks/ucf_web.py --data ../shared/data --out bench-out/ucf_web \\
        [--features /work/bench-cache/features] [--k 1,3,10,all] [--seeds 3] [--test-root DIR]
    # folds in separate processes, then one table:
    python benchmarks/ucf_web.py ... --only-folds 0,1 --out A;  ... --only-folds 2,3 --out B
    python benchmarks/ucf_web.py --data ../shared/data --out AB --merge A B
    # more seeds later: ... --first-seed 3 --seeds 2 --out C, then --merge A B C

Protocol (shared/data/README.md, omnisource.evaluate.protocol): cross-validation over 4 group
folds of 08–25; per fold, k labeled videos per class and the web videos come from the other
groups, validation is the fold's groups; ≥ 3 seeds per fold (the seed draws the labeled subset,
the injected noise and the training). With ``--test-root DIR``: train from all of 08–25,
evaluate on DIR. Every setting is paired with the baseline (target-only) of the same fold, seed
and subset: results.json gives, per (setting, k), top-1 mean ± std over the runs, mean class
accuracy, the kept web samples (n_aux) and the mean paired difference in top-1 with a 95 %
bootstrap interval (resampled within folds).

Everything runs through the product's functions and **defaults** (``load_config()`` with no
overrides but the device and seeds; ``--set`` changes them for every arm): the target-only
teacher and the students are the feature-mode heads of ``omnisource train`` / ``student``,
scoring is ``teacher.score``, filtering ``select.select_rows``, transforms ``transform.stage``,
joint training ``train.joint``. Web sources:

* ``images``: the web-sports folders of the four target queries, with images of the other
  queries injected at ``--noise`` (ground truth kept, so filter precision / recall are known);
* ``images_raw``: every ``web-raw`` query folder as crawled (21 of 22 queries name no class);
* ``trimmed``: half of the unused training-group videos, weak labels flipped at ``--label-noise``;
* ``untrimmed``: the other half, three clips of different classes in a row (virtual: their 1 fps
  features are the concatenation of the parts'), weak label = the class of one part.

The reference arms ``naive_baseline`` / ``naive`` are issue 11's naive method, outside the
product (``naive_arm``): a linear classifier of single frames, softmax averaged over a clip's
frames; ``naive`` adds every web image and every 1 fps frame of the web videos as a sample with
its query's label where the frame classifier of ``naive_baseline`` agrees with p ≥ 0.5.

A setting is a name of ``SETTINGS`` or ``NAME+key=value+...`` (config overrides for the student
of that arm only, ``web.<field>=`` for every web source, ``web.<kind>.<field>=`` for the sources
of one kind, ``teacher.<section>.<field>=`` for a teacher of that arm's own, which scores its web
data, ``teacher=<members>`` for the teacher ensemble that scores that arm's web data, see
``teacher_members``), so variants are measured as rows of the same paired table.
``omni.calibrate`` (per-class thresholds) cross-fits the teacher's config on the labeled
clips (``teacher.calibrate.crossfit``), as `omnisource score` does. Features are computed once into ``--features`` (the product's cache
layout) and reused.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np
import torch

from omnisource.config import Config, ConfigError, WebSourceConfig, load_config
from omnisource.config_io import _coerce, parse_override
from omnisource.data.manifest import new_row
from omnisource.data.sampling import tsn_indices
from omnisource.evaluate import protocol
from omnisource.evaluate.metrics import classification_metrics
from omnisource.evaluate.folds import summarise_setting
from omnisource.features.cache import extract_features, load_features
from omnisource.models import create_backbone
from omnisource.train.build import feature_model_and_loaders
from omnisource.select.stage import calibrated_thresholds, evidence_of, select_rows
from omnisource.teacher.calibrate import crossfit
from omnisource.teacher.score import score_clips, score_untrimmed
from omnisource.train.joint import aux_arrays, epoch_steps, feature_source, soft_labels, with_features
from omnisource.train.loop import fit, predict
from omnisource.transform.stage import image_rows, untrimmed_rows
from omnisource.workspace import cache_dir_for

ALL = ("images", "trimmed", "untrimmed")
RAW_ALL = ("images_raw", "trimmed", "untrimmed")
SETTINGS = {  # name -> (web sources, student overrides)
    "baseline": ((), []),
    "images": (("images",), []),
    "trimmed": (("trimmed",), []),
    "untrimmed": (("untrimmed",), []),
    "all": (ALL, []),
    "all_nofilter": (ALL, ["omni.filter=none"]),
    "images_raw": (("images_raw",), []),
    "all_raw": (RAW_ALL, []),
    "all_round2": (ALL, []),
    "trimmed_snippets": (("trimmed_snippets",), []),  # the trimmed web videos as untrimmed ones (1 fps snippets)
    "all_snippets": (("images", "trimmed_snippets", "untrimmed"), []),
    "naive_baseline": ((), []),  # the naive reference, see naive_arm
    "naive": (ALL, []),
    "untrimmed_round2": (("untrimmed",), []),
}
DEFAULT_SETTINGS = ["baseline", "images", "trimmed", "untrimmed", "all", "all_nofilter", "images_raw", "all_raw"]
NAIVE = ("naive_baseline", "naive")  # reference arms: a linear classifier of single frames (naive_arm)
ROUNDS = {"all_round2": 2, "untrimmed_round2": 2}  # settings whose student, as teacher, selects the web data again
KIND = {"images": "image", "images_raw": "image", "trimmed": "trimmed", "untrimmed": "untrimmed",
        "trimmed_snippets": "untrimmed"}
SNIPPETS = ("untrimmed", "trimmed_snippets")  # sources scored per 1 fps frame, trained on snippets
# The omni fields that act on training itself; the others only decide which web samples exist.
TRAINING_OMNI = ("prior_correction", "align", "resample", "resample_clip", "resample_power", "cross_mixup",
                 "soft_targets", "soft_temperature")


def per_second_rows(videos: list[dict], test_root: Path | None) -> list[dict]:
    """The target videos to embed at 1 fps: every one that some fold uses as a web video. Under
    cross-validation that is all of them (one fold's validation videos are the other folds' web
    videos); with ``--test-root`` the test set (the split's ``val`` rows) is never a web video."""
    return [r for r in videos if test_root is None or r["split"] != "val"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Features:
    """The benchmark's caches: T segment frames per video (1 per image), and 1 fps per video."""

    def __init__(self, root: Path, size: int, frames: int, workers: int):
        # The product's cache layout, so `omnisource ... features.cache_root=<root>` reuses it.
        self.seg = cache_dir_for(root, "efficientnet_lite0", size, frames)
        self.fps = cache_dir_for(root, "efficientnet_lite0", size, frames, per_second=True)
        self.size, self.frames, self.workers = size, frames, workers
        self._backbone = None

    def extract(self, rows: list[dict], per_second: bool = False) -> None:
        if self._backbone is None:
            self._backbone = create_backbone("efficientnet_lite0", pretrained="imagenet")
        t0 = time.time()
        failures = extract_features(rows, self._backbone, self.fps if per_second else self.seg, size=self.size,
                                    frames=self.frames, workers=self.workers, progress=sys.stdout.isatty(),
                                    per_second=per_second)
        log(f"features: {len(rows)} rows ({'1 fps' if per_second else f'{self.frames} frames'}) "
            f"in {time.time() - t0:.0f} s, {sum(r['id'] in failures for r in rows)} failed")

    def clips(self, ids: list[str]) -> np.ndarray:
        if not ids:  # e.g. no unused training videos left to act as web videos at k = all
            return np.zeros((0, self.frames, 1280), np.float32)
        feats = load_features(self.seg, ids)
        return np.stack([_to_t(feats[i], self.frames) for i in ids]).astype(np.float32)


def _to_t(a: np.ndarray, t: int) -> np.ndarray:
    return a if len(a) == t else a[tsn_indices(len(a), t, train=False)]


def require_data(ap: argparse.ArgumentParser, data: Path, subs=("ucf101-6/videos", "web-sports")) -> None:
    for sub in subs:
        if not (data / sub).is_dir():
            ap.error(f"{data / sub} not found: --data must hold {' and '.join(s.split('/')[0] + '/' for s in subs)}")


def base_config(seed: int, overrides: list[str] = ()) -> Config:
    """The product's defaults, CPU, the run's seed everywhere; ``overrides`` on top."""
    return load_config(None, ["train.device=cpu", f"train.seed={seed}", f"omni.seed={seed}",
                              "train.eval_every=1000000", *overrides])


def labeled_arrays(feats: Features, split):
    tr, va = split.rows("train"), split.rows("val")
    return (feats.clips([r["id"] for r in tr]), np.array([r["label"] for r in tr]),
            feats.clips([r["id"] for r in va]), np.array([r["label"] for r in va]))


def student_key(cfg: Config, aux=()) -> str:
    """What a head's training depends on besides the labeled data: the training config and the
    web samples with their weight and batch ratio. Arms with equal keys in one run train the
    same head from the same seed (e.g. at k = all, where no training video is left to act as a
    web video, ``all`` trains on the images alone, as ``images`` does), so it is trained once."""
    h = hashlib.sha1(json.dumps([dataclasses.asdict(cfg.train), dataclasses.asdict(cfg.features),
                                 {f: getattr(cfg.omni, f) for f in TRAINING_OMNI}], default=str).encode())
    for src, x, y, soft in aux:
        if len(y):
            h.update(repr((src.loss_weight(), src.batch_ratio, x.shape, x.dtype.str)).encode())
            h.update(np.ascontiguousarray(x).tobytes())
            h.update(np.ascontiguousarray(y).tobytes())
            if soft is not None:
                h.update(np.ascontiguousarray(soft).tobytes())
    return h.hexdigest()


def train_head(cfg: Config, data, classes: list[str], aux=()):
    """Feature-mode training as `omnisource train` / `student` do it, on arrays: the target
    head, plus one batch per web source and iteration for ``aux`` = [(WebSourceConfig, x, y,
    soft targets or None)].
    Returns (model, validation metrics, validation scores)."""
    from rich.console import Console

    x, y, xv, yv = data
    model, train, val = feature_model_and_loaders(cfg, x, y, xv, yv, len(classes))
    steps = epoch_steps(cfg, train)
    sources = [feature_source(cfg, src, ax, ay, x, y, len(classes), steps, soft) for src, ax, ay, soft in aux
               if len(ay)]
    tmp = Path(tempfile.mkdtemp(prefix="ucfweb-"))
    try:
        fit(model, train, val, cfg.train, tmp, classes, aux=sources, console=Console(quiet=True),
            cross_mixup=cfg.omni.cross_mixup)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    scores, labels = predict(model, val, torch.device("cpu"))
    return model.eval(), classification_metrics(scores, labels, classes), scores


# --------------------------------------------------------------------------- web sources


@dataclasses.dataclass
class WebSet:
    rows: list[dict]
    clip_feats: dict  # row id -> (T, D) (images: 1 frame)
    second_feats: dict  # row id -> (F, D) 1 fps (untrimmed only)
    segments: dict  # untrimmed id -> (end second of each part, index of the true part)


def web_sets(args, feats: Features, split, seed: int, names: set[str]) -> dict[str, WebSet]:
    classes, out = split.classes, {}
    if "images" in names:
        rows = protocol.web_images(args.data, classes, args.noise, seed)
        out["images"] = WebSet(rows, load_features(feats.seg, [r["id"] for r in rows]), {}, {})
    if "images_raw" in names and args.raw:
        rows = protocol.web_raw_images(args.data)
        out["images_raw"] = WebSet(rows, load_features(feats.seg, [r["id"] for r in rows]), {}, {})
    if names & {"trimmed", "untrimmed", "trimmed_snippets"}:
        trimmed, specs = protocol.web_videos(split, args.label_noise, seed)
        seg = load_features(feats.seg, [r["parent_id"] for r in trimmed])
        out["trimmed"] = WebSet(trimmed, {r["id"]: seg[r["parent_id"]] for r in trimmed}, {}, {})
        if "trimmed_snippets" in names:  # the same videos declared untrimmed: one part, true where the label is
            fps = load_features(feats.fps, [r["parent_id"] for r in trimmed])
            rows = [r for r in trimmed if r["parent_id"] in fps]
            out["trimmed_snippets"] = WebSet(
                rows, {}, {r["id"]: fps[r["parent_id"]].astype(np.float32) for r in rows},
                {r["id"]: (np.array([len(fps[r["parent_id"]])]), 0 if r["weak_labels"][0] == r["true_label"] else -1)
                 for r in rows})
        fps = load_features(feats.fps, [p["id"] for s in specs for p in s["parts"]])
        second, clips, segments = {}, {}, {}
        for s in specs:
            parts = [fps[p["id"]].astype(np.float32) for p in s["parts"]]
            second[s["id"]] = np.concatenate(parts)
            segments[s["id"]] = (np.cumsum([len(p) for p in parts]), s["true_segment"])
        out["untrimmed"] = WebSet(protocol.untrimmed_rows(specs), clips, second, segments)
    return out


def score_set(teachers, ws: WebSet, name: str, cfg: Config) -> dict:
    """The teacher(s)' score records of a web source, as `omnisource score` writes them."""
    if name not in SNIPPETS:
        ids = [r["id"] for r in ws.rows if r["id"] in ws.clip_feats]
        recs = score_clips(teachers, [ws.clip_feats[i].astype(np.float32) for i in ids])
        return dict(zip(ids, recs))
    return {r["id"]: score_untrimmed(teachers, ws.second_feats[r["id"]], cfg.omni.clip_seconds) for r in ws.rows}


def source_config(name: str, overrides: list[str]) -> WebSourceConfig:
    """The web source's config with the product's defaults and the setting's overrides:
    ``web.<field>=value`` for every source, ``web.<kind>.<field>=value`` for the sources of one
    kind (image, trimmed, untrimmed), which wins over ``web.<field>`` whatever the order, e.g.
    ``all+web.image.weight=0.25+web.untrimmed.weight=0.25`` (a per-kind loss weight)."""
    src = WebSourceConfig(name=name, kind=KIND[name], query_map=dict(protocol.QUERY_MAP))
    hints = typing.get_type_hints(WebSourceConfig)
    kinds = typing.get_args(hints["kind"])
    every, mine = [], []
    for text in overrides:
        key, value = parse_override(text)
        _, *scope, field = key.split(".")
        if len(scope) > 1 or (scope and scope[0] not in kinds):
            raise SystemExit(f"{text}: web overrides look like web.<field>= or web.<kind>.<field>= "
                             f"with a kind of {', '.join(kinds)}")
        if field not in hints or field in ("name", "kind"):
            raise SystemExit(f"{text}: a web source has no field {field!r} to change")
        if not scope:
            every.append((field, value, key))
        elif scope[0] == src.kind:
            mine.append((field, value, key))
    for field, value, key in every + mine:
        try:
            setattr(src, field, _coerce(value, hints[field], key))
        except ConfigError as e:
            raise SystemExit(str(e)) from None
    return src


def build_aux(cfg: Config, src: WebSourceConfig, ws: WebSet, scores: dict, classes: list[str], thresholds=None):
    """select -> transform -> features of one web source; (x, y, soft targets or None, selection
    stats, training rows, selected rows). ``thresholds``: per-class filter thresholds
    (``omni.calibrate``, from ``select.stage.calibrated_thresholds``)."""
    rows, stats = select_rows(ws.rows, scores, classes, cfg.omni.filter, cfg.omni.threshold, src.query_map,
                              min_keep=cfg.omni.min_keep, evidence=evidence_of(cfg), thresholds=thresholds)
    kept = [r for r in rows if r["status"] == "ok" and r.get("label") is not None]
    if src.kind == "image":
        train_rows = image_rows(kept, "still", classes, Path("unused-motion.npz"), 1.0, cfg.omni.seed)
    elif src.kind == "trimmed":
        train_rows = kept
    else:
        train_rows = untrimmed_rows(kept, scores, cfg)
        for r in train_rows:  # 10 s clip windows of the virtual videos (omni.untrimmed=clips)
            if r.get("start_s") is not None:
                sec = ws.second_feats[r["parent_id"]]
                ws.clip_feats[r["id"]] = sec[int(r["start_s"]):max(int(r["start_s"]) + 1, math.ceil(r["end_s"]))]
    train_rows = with_features(train_rows, ws.clip_feats, ws.second_feats)
    x, y = aux_arrays(train_rows, ws.clip_feats, ws.second_feats, cfg.features.frames)
    return x, y, soft_labels(cfg, train_rows, scores, y), stats, train_rows, rows


def untrimmed_precision(train_rows: list[dict], ws: WebSet) -> float:
    """Share of the 1 fps frames of untrimmed training samples that lie in the part of the video
    whose class they are labelled with (the ground truth of the virtual videos)."""
    right = total = 0
    for r in train_rows:
        ends, true_part = ws.segments[r["parent_id"]]
        if r.get("frame_indices"):
            idx = np.asarray(r["frame_indices"])
        else:
            idx = np.arange(int(r["start_s"]), max(int(r["start_s"]) + 1, math.ceil(r["end_s"])))
        part = np.searchsorted(ends, idx, side="right")
        right += int((part == true_part).sum())
        total += len(idx)
    return right / total if total else float("nan")


def contact_sheet(rows: list[dict], scores: dict, classes: list[str], query: str, path: Path, n: int = 12) -> dict:
    """A PNG of the ``query`` images the filter kept and dropped (highest / lowest teacher
    probability of the query's class in each), captioned with the teacher's top-1 and that
    probability, for looking at what the teacher does with raw crawl noise; written next to the
    results, never into the repository (the photos belong to their owners)."""
    from PIL import Image, ImageDraw

    qi = classes.index(protocol.QUERY_MAP[query])
    pq = {r["id"]: scores[r["id"]]["probs"][qi] for r in rows if r["id"] in scores}
    mine = [r for r in rows if r.get("weak_labels") == [query] and r["id"] in pq]
    kept = sorted((r for r in mine if r["status"] == "ok"), key=lambda r: -pq[r["id"]])
    dropped = sorted((r for r in mine if r["status"] == "rejected"), key=lambda r: -pq[r["id"]])
    groups = [("kept, most confident", kept[:n]), ("kept, least confident", kept[-n:][::-1]),
              ("dropped, most confident", dropped[:n]), ("dropped, least confident", dropped[-n:][::-1])]
    cell, pad = 120, 18
    sheet = Image.new("RGB", (n * cell, len(groups) * (cell + 2 * pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for g, (title, items) in enumerate(groups):
        y0 = g * (cell + 2 * pad)
        draw.text((4, y0 + 2), f"{query}: {title}", fill="black")
        for i, r in enumerate(items):
            with Image.open(r["path"]) as im:
                im = im.convert("RGB")
                im.thumbnail((cell - 4, cell - 4))
                sheet.paste(im, (i * cell + 2, y0 + pad))
            draw.text((i * cell + 2, y0 + pad + cell - 2),
                      f"{classes[r['teacher_pred']][:9]} {r['teacher_prob']:.2f} q {pq[r['id']]:.2f}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return {"kept": len(kept), "dropped": len(dropped)}


# --------------------------------------------------------------------------- the naive reference


def frame_samples(x: np.ndarray) -> np.ndarray:
    """(N, T, D) clips -> (N·T, 1, D): every frame its own sample (a clip's frames in a row)."""
    return x.reshape(-1, 1, x.shape[-1])


def frame_average(probs: np.ndarray, frames: int) -> np.ndarray:
    """(N·T, C) frame probabilities of ``frame_samples`` order -> (N, C) each clip's mean."""
    return probs.reshape(-1, frames, probs.shape[-1]).mean(1)


def frame_keep(probs: np.ndarray, query: int, threshold: float = 0.5) -> np.ndarray:
    """(F,) mask of the frames (F, C) whose top-1 is the query's class with p ≥ threshold."""
    return (probs.argmax(1) == query) & (probs[:, query] >= threshold)


def naive_fit(cfg: Config, x: np.ndarray, y: np.ndarray, classes: list[str], frames: int):
    """The naive method's linear classifier of single frames, (F, 1, D) -> logits: the product's
    TSN head at T = 1 (fc + dropout) trained by ``fit`` with the run's defaults, on batches of
    ``frames`` x train.batch_size frames (the frames a clip head sees per step)."""
    from rich.console import Console

    fcfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, frames=1, head="tsn"),
                               train=dataclasses.replace(cfg.train, batch_size=cfg.train.batch_size * frames))
    empty = np.zeros((0, 1, x.shape[-1]), np.float32)
    model, train, _ = feature_model_and_loaders(fcfg, x, y, empty, np.zeros(0, np.int64), len(classes))
    tmp = Path(tempfile.mkdtemp(prefix="ucfweb-naive-"))
    try:
        fit(model, train, None, fcfg.train, tmp, classes, console=Console(quiet=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model.eval()


@torch.no_grad()
def frame_probs(model, x: np.ndarray) -> np.ndarray:
    """(F, C) softmax of every frame of (F, 1, D)."""
    return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).softmax(-1).numpy()


def naive_web_frames(ws_all: dict, feats: Features, classes: list[str]) -> dict:
    """Per web source, its frames as samples: (F, D) features, the query's class of each frame,
    and whether the frame truly shows that class (None where unknown): images one frame each,
    trimmed web videos their 1 fps frames, untrimmed ones theirs (truth from the part they lie in)."""
    out = {}
    query = {r["id"]: classes.index(protocol.QUERY_MAP.get(r["weak_labels"][0], r["weak_labels"][0]))
             for ws in ws_all.values() for r in ws.rows}
    for name, ws in ws_all.items():
        x, q, truth = [], [], []
        if name == "trimmed":
            fps = load_features(feats.fps, [r["parent_id"] for r in ws.rows])
        for r in ws.rows:
            if name == "untrimmed":
                a = ws.second_feats[r["id"]]
                ends, part = ws.segments[r["id"]]
                right = np.searchsorted(ends, np.arange(len(a)), side="right") == part
            else:
                a = ws.clip_feats.get(r["id"]) if name != "trimmed" else fps.get(r["parent_id"])
                if a is None:
                    continue
                right = np.full(len(a), r.get("true_label") == classes[query[r["id"]]])
            x.append(np.asarray(a, np.float32))
            q += [query[r["id"]]] * len(a)
            truth.append(right)
        if x:
            out[name] = (np.concatenate(x), np.asarray(q, np.int64), np.concatenate(truth))
    return out


def naive_arm(cfg: Config, data, classes: list[str], web: dict, frames: int, cache: dict, threshold: float = 0.5):
    """The naive method of issue 11, a reference: a linear classifier of single-frame features,
    the softmax averaged over a clip's frames at test time. ``web`` (``naive_web_frames`` of the
    arm's sources): each web frame a sample with its query's label, kept where the frame teacher
    (the target-only frame classifier, ``naive_baseline``) has the query as top-1 with
    p ≥ ``threshold``. Returns (metrics, validation scores, kept web frames, filter records)."""
    x, y, xv, yv = data
    tx, ty = frame_samples(x), np.repeat(y, x.shape[1])
    if "teacher" not in cache:
        cache["teacher"] = naive_fit(cfg, tx, ty, classes, frames)
    model, records = cache["teacher"], {}
    if web:
        wx, wy = [tx], [ty]
        for name, (fx, fq, truth) in web.items():
            fq_probs = frame_probs(cache["teacher"], fx[:, None])
            keep = np.zeros(len(fq), bool)
            for c in np.unique(fq):
                keep[fq == c] = frame_keep(fq_probs[fq == c], int(c), threshold)
            wx.append(fx[keep][:, None])
            wy.append(fq[keep])
            records[name] = {"scored": len(fq), "kept": int(keep.sum()), "samples": int(keep.sum()),
                             "precision": float(truth[keep].mean()) if keep.any() else float("nan"),
                             "recall": float(keep[truth].mean()) if truth.any() else float("nan"),
                             "kept_per_class": {classes[c]: int((fq[keep] == c).sum()) for c in np.unique(fq[keep])}}
        model = naive_fit(cfg, np.concatenate(wx), np.concatenate(wy), classes, frames)
    scores = frame_average(frame_probs(model, frame_samples(xv)), xv.shape[1])
    n_aux = sum(r["kept"] for r in records.values())
    return classification_metrics(scores, yv, classes), scores, n_aux, records


# --------------------------------------------------------------------------- one run


def parse_setting(text: str) -> tuple[str, tuple, list[str]]:
    name, *overrides = text.split("+")
    if name not in SETTINGS:
        raise SystemExit(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    sources, base = SETTINGS[name]
    web = [o for o in overrides if o.startswith("web.")]
    for source in sources or ("images",):  # a bad web override stops the run before it starts
        source_config(source, web)
    try:
        base_config(0, teacher_overrides(overrides))
    except ConfigError as e:
        raise SystemExit(f"{text}: {e}") from None
    ensembles = [o for o in overrides if o.startswith("teacher=")]
    for o in ensembles:
        teacher_members(o)
    if ensembles and teacher_overrides(overrides):
        raise SystemExit(f"{text}: teacher= (an ensemble) and teacher.<section>.<field>= (an own teacher) "
                         "cannot be combined in one setting")
    return text, sources, base + overrides


def teacher_overrides(overrides: list[str]) -> list[str]:
    """The ``teacher.<section>.<field>=`` overrides of a setting, without the prefix: that arm's
    web data is scored by a teacher trained with them (e.g. ``teacher.features.head=frames``)."""
    return [o.removeprefix("teacher.") for o in overrides if o.startswith("teacher.")]


def run_record(metrics: dict, n_aux: int, scores: np.ndarray, labels: np.ndarray, base_wrong=None) -> dict:
    """One run's row of runs.json: the metrics, the kept web samples, the validation clips it
    gets wrong (indices into the fold's validation rows, the same for every k and seed) and,
    against the baseline's wrong clips, how many it fixes and breaks."""
    wrong = sorted(map(int, np.flatnonzero(scores.argmax(1) != labels)))
    rec = dict(metrics, n_aux=n_aux, wrong=wrong)
    if base_wrong is not None:
        rec.update(fixed=len(set(base_wrong) - set(wrong)), broken=len(set(wrong) - set(base_wrong)))
    return rec


def clip_changes(results: dict, a: str, b: str, k: int) -> dict:
    """Which validation clips setting ``a`` fixes and breaks against ``b`` (runs paired by fold
    and seed, both with their wrong clips recorded): {"fold:index": [runs fixed, runs broken]},
    clips changed in no run left out."""
    out = {}
    ra, rb = results.get((a, k), {}), results.get((b, k), {})
    for unit in sorted(set(ra) & set(rb), key=str):
        if "wrong" not in ra[unit] or "wrong" not in rb[unit]:
            continue
        wa, wb = set(ra[unit]["wrong"]), set(rb[unit]["wrong"])
        for i, col in [(i, 0) for i in wb - wa] + [(i, 1) for i in wa - wb]:
            out.setdefault(f"{unit[0]}:{i}", [0, 0])[col] += 1
    return dict(sorted(out.items(), key=lambda kv: (kv[1][0] - kv[1][1], kv[0])))


TEACHER_HEADS = ("tsn", "linear", "temporal")


def teacher_members(override: str) -> list[str]:
    """The members of a ``teacher=`` override (the ensemble that scores this arm's web data; the
    product's ``omni.teacher_runs`` with several runs, which average their probabilities):
    ``base`` (the target-only head), ``seedN`` (the same config at train.seed + N), a head kind
    (``features.head``), ``crossfit`` (the heads of ``teacher.calibrate.crossfit``, each trained
    on all folds of the labeled clips but one; the base head alone where k = 1 leaves no folds).
    E.g. ``all+teacher=base,seed1,seed2``."""
    members = override.partition("=")[2].split(",")
    for m in members:
        if not (m in ("base", "crossfit", *TEACHER_HEADS) or (m.startswith("seed") and m[4:].isdigit())):
            raise SystemExit(f"{override}: unknown teacher member {m!r}; members are base, seedN, crossfit, "
                             f"or a head kind ({', '.join(TEACHER_HEADS)}), comma separated")
    return members


def run_unit(args, feats: Features, k: int, fold: int, val_groups, seed: int, results: dict, diag: dict) -> None:
    split = protocol.target_split(args.data, k, seed, args.test_root, val_groups)
    classes = split.classes
    data = labeled_arrays(feats, split)
    cfg = base_config(seed, args.set)
    t0 = time.time()
    teacher, base, base_scores = train_head(cfg, data, classes)
    trained = {student_key(cfg): (base, base_scores)}  # key -> (metrics, scores) of this run's heads
    unit = (fold, seed)
    results.setdefault(("baseline", k), {})[unit] = base_rec = run_record(base, 0, base_scores, data[3])
    settings = [parse_setting(s) for s in args.settings if s != "baseline"]
    names = {n for _, sources, _ in settings for n in sources}
    webs = web_sets(args, feats, split, seed, names)
    crossfits, members = {}, {"base": (teacher, cfg.features.frames)}  # this unit's extra heads

    def crossfit_of(folds: int) -> dict:  # the teacher's config cross-fitted on the labeled clips
        if folds not in crossfits:
            crossfits[folds] = crossfit(cfg, data[0], data[1], classes, folds)
        return crossfits[folds]

    def ensemble(spec: str) -> list:  # (head, frames) of the members of a teacher= override
        out = []
        for m in teacher_members(spec):
            if m == "crossfit":
                out += [(h, cfg.features.frames) for h in crossfit_of(cfg.omni.calibrate_folds).get("heads", [teacher])]
                continue
            if m not in members:
                mcfg = base_config(seed, [*args.set, f"train.seed={seed + int(m[4:])}" if m.startswith("seed")
                                          else f"features.head={m}"])
                members[m] = (train_head(mcfg, data, classes)[0], mcfg.features.frames)
            out.append(members[m])
        return out

    score_cache = {}  # teacher= spec -> scores of every web source
    base_wrong = base_rec["wrong"]
    naive_web, naive_heads = None, {}  # the naive arms' web frames and frame teachers (by training config)
    teachers = {}  # training config -> web scores of the arms' own teachers (teacher.* overrides)
    for setting, sources, overrides in settings:
        sources = [s for s in sources if s in webs]
        if not sources and setting.split("+")[0] not in ("baseline", "naive_baseline"):
            continue  # e.g. images_raw without web-raw/
        scfg = base_config(seed, [*args.set, *[o for o in overrides if not o.startswith(("web.", "teacher"))]])
        if setting.split("+")[0] in NAIVE:
            if naive_web is None and sources:
                naive_web = naive_web_frames({n: webs[n] for n in ALL if n in webs}, feats, classes)
            m, s, n_aux, records = naive_arm(scfg, data, classes, {n: naive_web[n] for n in sources if n in naive_web}
                                             if sources else {}, cfg.features.frames,
                                             naive_heads.setdefault(student_key(scfg), {}))
            for name, rec in records.items():
                diag.setdefault((setting, k, name), []).append(rec)
            record_arm(results, setting, k, unit, m, s, n_aux, base_wrong, data)
            continue
        spec = ([o for o in overrides if o.startswith("teacher=")] or ["teacher=base"])[-1]
        if not teacher_overrides(overrides):
            if spec not in score_cache:
                heads = ensemble(spec)
                score_cache[spec] = {n: score_set(heads, webs[n], n, cfg) for n in webs}
            arm_scores = score_cache[spec]
        else:  # this arm's own teacher (teacher.* overrides; trained once per run and config)
            tcfg = base_config(seed, [*args.set, *teacher_overrides(overrides)])
            tkey = student_key(tcfg)
            if tkey not in teachers:
                own, m, s = train_head(tcfg, data, classes)
                trained.setdefault(tkey, (m, s))
                teachers[tkey] = {n: score_set([(own, tcfg.features.frames)], webs[n], n, tcfg) for n in webs}
            arm_scores = teachers[tkey]
        thresholds, calibration = calibrated_thresholds(
            scfg, crossfit_of(scfg.omni.calibrate_folds) if scfg.omni.calibrate != "none" else None, classes)
        student = None  # each round's head, the next round's teacher
        rounds = ROUNDS.get(setting.split("+")[0], 1)
        for round_ in range(rounds):
            if round_:  # the last round's student is the next round's teacher
                arm_scores = {n: score_set([(student, cfg.features.frames)], webs[n], n, cfg) for n in sources}
            aux, n_aux, last = [], 0, round_ == rounds - 1
            for name in sources:
                src = source_config(name, [o for o in overrides if o.startswith("web.")])
                x, y, soft, stats, train_rows, rows = build_aux(scfg, src, webs[name], arm_scores[name], classes,
                                                                thresholds)
                aux.append((src, x, y, soft))
                n_aux += len(y)
                if not last:
                    continue  # diagnostics of the data the final student trains on
                if name == "images_raw" and setting == "images_raw" and unit == (0, 0):
                    contact_sheet(rows, arm_scores[name], classes, "basketball", args.out / f"raw_basketball_k{k or 'all'}.png")
                if name == "images_raw":
                    per_query = diag.setdefault(("per_query", k, setting), {})
                    for r in rows:
                        q = per_query.setdefault(r["weak_labels"][0], [0, 0])
                        q[0 if r["status"] == "ok" else 1] += 1
                d = diag.setdefault((setting, k, name), [])
                d.append({"kept": stats["kept"], "scored": stats["scored"], "samples": len(y),
                          "kept_per_class": stats["kept_per_class"], **stats.get("filter", {}),
                          **({"thresholds": calibration["thresholds"]} if calibration else {}),
                          **({"frame_precision": untrimmed_precision(train_rows, webs[name])}
                             if name in SNIPPETS else {}),
                          **({"frames_scored": stats["frames"]["scored"], "frames_kept": stats["frames"]["kept"]}
                             if "frames" in stats else {})})
            key = student_key(scfg, aux)
            if last and key in trained:  # the same head as an arm already trained in this run
                m, s = trained[key]
            else:
                student, m, s = train_head(scfg, data, classes, aux)
                trained[key] = (m, s)
        record_arm(results, setting, k, unit, m, s, n_aux, base_wrong, data)
    row = results
    log(f"k={k} fold={fold} seed={seed}: baseline {base['top1']:.3f}, " + ", ".join(
        f"{s} {row[(s, k)][unit]['top1'] - base['top1']:+.3f}" for s, *_ in settings if unit in row.get((s, k), {}))
        + f" ({time.time() - t0:.0f} s)")


def record_arm(results: dict, setting: str, k: int, unit: tuple, m: dict, s: np.ndarray, n_aux: int,
               base_wrong: list, data) -> None:
    """An arm's metrics of one run, with the validation clips it fixed / broke against the baseline."""
    results.setdefault((setting, k), {})[unit] = run_record(m, n_aux, s, data[3], base_wrong)


# --------------------------------------------------------------------------- tables


def summary_rows(results: dict, settings: list[str], ks: list[int]) -> list[dict]:
    rows = []
    for setting in settings:
        for k in ks:
            runs, base = results.get((setting, k)), results.get(("baseline", k))
            if not runs:
                continue
            s = summarise_setting(runs, base)
            rows.append({"setting": setting, "k": "all" if k == 0 else k, "top1_mean": s["top1_mean"],
                         "top1_std": s["top1_std"],
                         "mca_mean": float(np.mean([m["mean_class_accuracy"] for m in runs.values()])),
                         "n_aux": float(np.mean([m["n_aux"] for m in runs.values()])),
                         "delta_mean": s["delta_mean"], "delta_lo": s["delta_lo"], "delta_hi": s["delta_hi"],
                         "folds": s["folds"], "runs": s["runs"],
                         "val_clips": int(np.mean([m["num_samples"] for m in runs.values()])),
                         "fixed": float(np.mean([m.get("fixed", 0) for m in runs.values()])),
                         "broken": float(np.mean([m.get("broken", 0) for m in runs.values()])),
                         "per_class": {c: float(np.mean([m["per_class_accuracy"][c] for m in runs.values()]))
                                       for c in next(iter(runs.values()))["classes"]}})
    return rows


def diag_rows(diag: dict) -> list[dict]:
    out = []
    for (setting, k, name), items in diag.items():
        if setting == "per_query":
            continue
        row = {"setting": setting, "k": "all" if k == 0 else k, "source": name}
        for key in ("scored", "kept", "samples", "precision", "recall", "frame_precision", "frames_scored",
                    "frames_kept"):
            vals = [i[key] for i in items if key in i and i[key] == i[key]]
            if vals:
                row[key] = float(np.mean(vals))
        classes = sorted({c for i in items for c in i["kept_per_class"]})
        row["kept_per_class"] = {c: float(np.mean([i["kept_per_class"].get(c, 0) for i in items])) for c in classes}
        per_class = {}  # precision / recall per class, mean over the runs where they are defined
        for c in sorted({c for i in items for c in i.get("per_class", {})}):
            per_class[c] = {}
            for key in ("precision", "recall"):
                vals = [i["per_class"][c][key] for i in items if c in i.get("per_class", {})
                        and i["per_class"][c][key] == i["per_class"][c][key]]
                if vals:
                    per_class[c][key] = float(np.mean(vals))
        if per_class:
            row["per_class"] = per_class
        if any("thresholds" in i for i in items):  # calibrated per-class thresholds, mean over the runs
            row["thresholds"] = {c: float(np.mean([i["thresholds"][c] for i in items if "thresholds" in i]))
                                 for c in next(i for i in items if "thresholds" in i)["thresholds"]}
        out.append(row)
    return out


def print_table(rows: list[dict]) -> None:
    print(f"\n{'setting':<28}{'k':>4}{'top1':>15}{'Δ top1 [95% CI]':>26}{'mca':>8}{'n_aux':>7}{'runs':>6}")
    for r in rows:
        delta = "" if r["setting"] == "baseline" else \
            f"{r['delta_mean'] * 100:+6.2f} [{r['delta_lo'] * 100:+.2f}, {r['delta_hi'] * 100:+.2f}]"
        print(f"{r['setting']:<28}{str(r['k']):>4}{r['top1_mean'] * 100:>9.2f} ±{r['top1_std'] * 100:4.1f}"
              f"{delta:>26}{r['mca_mean'] * 100:>8.2f}{r['n_aux']:>7.0f}{r['runs']:>6}")


def add_protocol_args(ap: argparse.ArgumentParser, data_help: str) -> None:
    """The protocol options every real-data benchmark shares."""
    ap.add_argument("--data", type=Path, required=True, help=data_help)
    ap.add_argument("--test-root", type=Path, default=None,
                    help="class folders to evaluate on; training then uses all of groups 08-25")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--features", type=Path, default=None, help="feature cache root (default <out>/features)")
    ap.add_argument("--folds", type=int, default=protocol.N_FOLDS, help="group folds over 08-25")
    ap.add_argument("--only-folds", default="", help="run these fold indices only (comma separated)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per fold")


def protocol_units(args) -> list[tuple]:
    """(fold, validation groups) of each cross-validation fold, or [("test", None)] with --test-root."""
    if args.test_root:
        return [("test", None)]
    units = list(enumerate(protocol.folds(args.folds)))
    return [units[int(i)] for i in args.only_folds.split(",")] if args.only_folds else units


def write_outputs(args, results: dict, diag: dict, units: list, ks: list[int]) -> list[dict]:
    """results.json, filters.json, raw_per_query.json and settings.json of the runs so far."""
    rows = summary_rows(results, args.settings, ks)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    (args.out / "runs.json").write_text(json.dumps(  # every run's metrics, for --merge
        [{"setting": s, "k": k, "fold": f, "seed": sd, **m} for (s, k), runs in results.items()
         for (f, sd), m in runs.items()], default=float))
    write_diag(args.out, results, diag)
    (args.out / "settings.json").write_text(json.dumps({
        "config": dataclasses.asdict(base_config(0, args.set)), "set": args.set, "settings": args.settings,
        "units": [[f, v] for f, v in units], "seeds": args.seeds, "first_seed": args.first_seed, "noise": args.noise,
        "label_noise": args.label_noise, "elapsed_s": round(time.time() - args.t0)}, indent=2, default=str))
    return rows


def write_diag(out: Path, results: dict, diag: dict) -> None:
    """filters.json and raw_per_query.json (means over the runs), and diag.json, the per-run
    records they come from, which --merge combines."""
    (out / "filters.json").write_text(json.dumps(diag_rows(diag), indent=2))
    per_query = {f"{setting} k={'all' if k == 0 else k}": {  # mean over the runs
        q: {"kept": v[0] / len(results[("baseline", k)]), "dropped": v[1] / len(results[("baseline", k)])}
        for q, v in qs.items()} for (tag, k, setting), qs in diag.items() if tag == "per_query"}
    (out / "raw_per_query.json").write_text(json.dumps(per_query, indent=2))
    (out / "diag.json").write_text(json.dumps([[list(key), value] for key, value in diag.items()], default=float))


def merge_diag(diag: dict, more: list) -> None:
    """Adds the diag.json records of another run: filter records are concatenated, raw
    per-query counts summed."""
    for key, value in more:
        key = tuple(key)
        if key[0] == "per_query":
            mine = diag.setdefault(key, {})
            for q, (kept, dropped) in value.items():
                mine[q] = [mine.get(q, [0, 0])[0] + kept, mine.get(q, [0, 0])[1] + dropped]
        else:
            diag.setdefault(key, []).extend(value)


def between(results: dict, a: str, b: str, k: int) -> dict | None:
    """Setting ``a`` against setting ``b`` (e.g. a candidate default against the old value),
    paired by fold and seed as every setting is against the baseline."""
    if not results.get((a, k)) or not results.get((b, k)):
        return None
    s = summarise_setting(results[(a, k)], results[(b, k)])
    return {"a": a, "b": b, "k": "all" if k == 0 else k, **{key: s[key] for key in ("delta_mean", "delta_lo", "delta_hi")},
            "runs": len(set(results[(a, k)]) & set(results[(b, k)]))}


def merge(out: Path, dirs: list[Path], pairs: list[str] = ()) -> int:
    """One results.json from the runs.json of several runs of the same protocol (e.g. folds run
    in separate processes, or more settings later, each with its own baseline); a (setting, k,
    fold, seed) present twice is an error unless both give the same metrics (the baseline that
    every run trains again). ``pairs`` ("A:B"): paired differences of A against B, written to
    pairs.json with the validation clips A fixes and breaks against B (``clip_changes``)."""
    results, settings, ks, diag = {}, [], [], {}
    for d in dirs:
        if not (d / "runs.json").is_file():
            raise SystemExit(f"{d}: no runs.json (not the output folder of a ucf_web.py run)")
        if (d / "diag.json").exists():
            merge_diag(diag, json.loads((d / "diag.json").read_text()))
        for r in json.loads((d / "runs.json").read_text()):
            runs = results.setdefault((r["setting"], r["k"]), {})
            if (r["fold"], r["seed"]) in runs and runs[(r["fold"], r["seed"])]["top1"] != r["top1"]:
                raise SystemExit(f"{d}: {r['setting']} k={r['k']} fold {r['fold']} seed {r['seed']} is in two runs")
            runs[(r["fold"], r["seed"])] = r
            settings += [r["setting"]] * (r["setting"] not in settings)
            ks += [r["k"]] * (r["k"] not in ks)
    rows = summary_rows(results, settings, sorted(ks, key=lambda k: k or 10**9))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    if diag:
        write_diag(out, results, diag)
    print_table(rows)
    found = []
    for pair in pairs:
        a, _, b = pair.partition(":")
        for k in sorted(ks, key=lambda k: k or 10**9):
            if (d := between(results, a, b, k)) is not None:
                found.append(dict(d, clips=clip_changes(results, a, b, k)))
                print(f"{a} vs {b} k={d['k']}: {d['delta_mean'] * 100:+.2f} [{d['delta_lo'] * 100:+.2f}, "
                      f"{d['delta_hi'] * 100:+.2f}] ({d['runs']} runs)")
    if pairs:
        (out / "pairs.json").write_text(json.dumps(found, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_args(ap, "folder holding ucf101-6/ and web-sports/ (and web-raw/)")
    ap.add_argument("--k", default="1,3,10,all", help="labeled videos per class, comma separated")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds run are first-seed .. first-seed + seeds - 1 (more seeds later, then --merge)")
    ap.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS,
                    help="settings to run: names of SETTINGS, or NAME+key=value+... variants")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every arm (teacher included)")
    ap.add_argument("--noise", type=float, default=0.5, help="share of injected pool images per target query")
    ap.add_argument("--label-noise", type=float, default=0.3, help="share of trimmed web videos with a wrong weak label")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="only merge the runs.json (and diag.json) of these output folders into --out/results.json "
                         "(and filters.json, raw_per_query.json)")
    ap.add_argument("--pairs", nargs="*", default=[],
                    help="with --merge: A:B paired differences of setting A against setting B "
                         "(and the validation clips A fixes / breaks, in pairs.json)")
    args = ap.parse_args(argv)
    if args.pairs and not args.merge:
        ap.error("--pairs compares merged runs: give --merge DIR ... too")
    if args.merge:
        return merge(args.out, args.merge, args.pairs)
    args.data = args.data.resolve()  # feature ids hash the path: the same cache from any folder
    require_data(ap, args.data)
    args.raw = (args.data / "web-raw").is_dir()
    if not args.raw:
        log(f"{args.data / 'web-raw'} not found: the images_raw and all_raw settings are skipped")
    if "baseline" not in args.settings:
        args.settings.insert(0, "baseline")
    for s in args.settings:
        parse_setting(s)
    # Tiny heads: one thread (two threads on two busy cores spent most of the time waiting).
    torch.set_num_threads(1)
    t0 = args.t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    feats = Features(args.features or args.out / "features", 128, 8, args.workers)
    full = protocol.target_split(args.data, 0, 0, args.test_root)
    videos = [r for r in full.manifest.rows if r["status"] == "ok"]
    feats.extract(videos)
    feats.extract(per_second_rows(videos, args.test_root), per_second=True)
    feats.extract([new_row("images", "image", str(f)) for f in sorted((args.data / "web-sports").glob("*/*.jpg"))])
    if args.raw:
        feats.extract(protocol.web_raw_images(args.data))
    ks = [0 if k == "all" else int(k) for k in args.k.split(",")]
    units = protocol_units(args)
    results, diag = {}, {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):  # seeds outermost: a stopped run has every k and fold
        for fold, val in units:
            for k in ks:
                run_unit(args, feats, k, fold, val, seed, results, diag)
                rows = write_outputs(args, results, diag, units, ks)  # a stopped run keeps what it measured
    print_table(rows)
    print("\nteacher filter per source (mean over runs): kept/scored, precision, recall")
    for d in diag_rows(diag):
        extra = f", frame precision {d['frame_precision']:.2f}" if "frame_precision" in d else ""
        pr = f", precision {d['precision']:.2f}, recall {d['recall']:.2f}" if "precision" in d else ""
        print(f"  {d['setting']} k={d['k']} {d['source']}: kept {d['kept']:.0f}/{d['scored']:.0f} "
              f"-> {d['samples']:.0f} samples{pr}{extra}")
    log(f"done in {time.time() - t0:.0f} s -> {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
