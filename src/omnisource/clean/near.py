"""Near-duplicates of the evaluation set (OmniSource, "Cleaning"; docs/methods.md): per-frame
features of a frozen ImageNet CNN (EfficientNet-Lite0 by default, offline), whitening fitted on the
evaluation features, cosine similarity, nearest neighbours by faiss (:mod:`omnisource.clean.similarity`).
The threshold is measured on the data: the mean cosine similarity between different crops (four
corners + centre, ``crop_side`` of each side) of the same evaluation frame.

Images: a web image whose frame reaches the threshold against any indexed view is a copy.
Videos: a web video is embedded at 1 fps (the per-second feature cache that scoring of untrimmed
videos shares) and is a copy only when ``min_frames`` of its frames (at most all of them) match one
evaluation row (:func:`~omnisource.clean.similarity.temporal_match`, ``top_k`` neighbours per
frame; in any order by default, at one time offset with ``time_tolerance_s``), against the centre
views. Measured on
UCF101-6 fold 0 (benchmarks/dedup_video.py, docs/benchmarks.md): a single matching frame, the rule
before, flagged 31 of 59 untrimmed web videos and 21 of 90 clips made only of other groups'
scenes (look-alikes of the same sports, not copies); two frames of one evaluation video, against
the centre views, flag 12 and 4 of them and find 95 % of planted copies (re-encoded, cropped,
flipped, trimmed, spliced into other material). Flagged rows become ``status=duplicate`` with ``dup_of`` (the
evaluation row id), ``dup_time_s`` (where in that video), ``dup_web_time_s`` (where in the web
video), ``dup_frames`` (frames matched) and a reason with the mean similarity; every checked row
keeps its best frame ``similarity`` for inspection.

Evaluation videos are indexed densely (``eval_fps`` frames per second, default 5: a web copy may come
from any frame), each frame as three squares along its long side (``eval_views="three"``, which
together cover the whole frame, so that a crop near an edge still has a view to match) when web
images are checked, else as its centre square alone (``"auto"``: 3x fewer vectors to embed).
Frames are resized (short side ``size``) and centre-cropped like the feature cache, whose shards the
web side reuses, so a killed run resumes where it stopped and later stages find the web features
already computed. The evaluation features are cached too (``dedup-eval-<key>.npz``, keyed by files
and settings). Memory is bounded by batches: web vectors are whitened and searched ``search_batch``
at a time.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data import media, transforms
from ..data.manifest import atomic_write_npz
from .similarity import NearestNeighbours, crop_threshold, fit_whitening, temporal_match


@dataclass
class DedupOptions:
    size: int = 128  # short side the frames are resized to, then centre-cropped (as the feature cache)
    eval_fps: float = 5.0  # evaluation video frames indexed per second
    eval_max_frames: int = 600  # per evaluation video
    web_frames: int = 8  # T of the feature cache the web images' (one-frame) features go to
    min_frames: int = 2  # a web video is a copy when this many of its frames (1 fps) match one evaluation row
    time_tolerance_s: float | None = None  # ... at one time offset within +- this (None: in any order;
    # on fold 0, +-1 s found one copy fewer of 60 and spared no look-alike more: docs/benchmarks.md)
    top_k: int = 10  # evaluation neighbours searched per web video frame
    eval_views: str = "auto"  # per evaluation frame: "three" squares along the long side, "center", or
    # "auto": three when web images are checked (a crop of a frame needs its side views), else centre
    # (web videos are matched against the centre views: benchmarks/dedup_video.py)
    crop_side: float = 0.8  # side of the threshold crops, as a fraction of the frame's sides
    threshold_frames: int = 256  # evaluation frames whose crops measure the threshold
    threshold: float | None = None  # a fixed cosine threshold instead of the measured one
    shrinkage: float = 0.97  # whitening shrunk towards the identity (0: full whitening, 1: centring)
    exact_max: int = 50_000  # exact search up to this many evaluation vectors, IVF above
    nlist: int | None = None  # IVF cells (default ~4 sqrt(n))
    nprobe: int = 16
    batch_size: int = 64  # frames per backbone call
    search_batch: int = 8192  # web vectors whitened and searched at once
    max_pixels: int = media.MAX_PIXELS
    seed: int = 0


# ----------------------------------------------------------------------------- features
def view(frame: np.ndarray, size: int) -> np.ndarray:
    """The backbone's view of a frame: short side to ``size``, centre crop (as the feature cache)."""
    return transforms.center_crop(transforms.resize_short(frame[None], size), size)[0]


def eval_views(frame: np.ndarray, size: int, mode: str = "three") -> list[np.ndarray]:
    """Indexed views of an evaluation frame: the centre square (``"center"``, what the web side
    sees), or the start / centre / end squares along the long side (``"three"``), which together
    cover the whole frame, so that a web crop taken near an edge still has a view to match."""
    if mode == "center":
        return [view(frame, size)]
    if mode != "three":
        raise ValueError(f"eval_views must be 'three' or 'center', got {mode!r}")
    return list(transforms.three_crops(transforms.resize_short(frame[None], size), size)[:, 0])


def five_crops(frame: np.ndarray, side: float) -> list[np.ndarray]:
    """Four corner crops and the centre crop, each ``side`` of the frame's height and width."""
    h, w = frame.shape[:2]
    ch, cw = max(1, int(round(h * side))), max(1, int(round(w * side)))
    tops, lefts = (0, h - ch), (0, w - cw)
    boxes = [(t, l) for t in tops for l in lefts] + [((h - ch) // 2, (w - cw) // 2)]
    return [frame[t:t + ch, l:l + cw] for t, l in boxes]


class _Embedder:
    """Batches (size, size, 3) uint8 views through the backbone."""

    def __init__(self, backbone: torch.nn.Module, batch_size: int, device="cpu"):
        self.backbone, self.batch_size, self.device = backbone.eval().to(device), batch_size, device

    @torch.no_grad()
    def __call__(self, views: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(views), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(np.stack(views[i:i + self.batch_size])))
            x = x.permute(0, 3, 1, 2).float().div_(255.0).to(self.device)
            out.append(self.backbone(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def eval_frame_indices(row: dict, fps: float, max_frames: int) -> tuple[np.ndarray, float]:
    """(frame indices, frame rate) of an evaluation row sampled at ``fps`` (images: [0])."""
    if row.get("kind") == "image":
        return np.zeros(1, np.int64), 0.0
    info = media.probe(row["path"], row.get("kind"))
    first, num = media.frame_window(info, row.get("start_s"), row.get("end_s"))
    rate = info.fps if info.fps > 0 else media.FRAMES_FPS
    k = int(min(max(1, round(num / rate * fps)), max_frames, num))
    return first + ((np.arange(k) + 0.5) * num / k).astype(np.int64), rate


@dataclass
class EvalIndex:
    features: np.ndarray  # (F, D) float32, raw backbone features of every indexed view
    owners: np.ndarray  # (F,) index into ids
    times: np.ndarray  # (F,) seconds into the row's file of the view's frame
    ids: list[str]
    crop_features: np.ndarray  # (K, 5, D) features of the five crops of K sampled frames
    failures: dict
    n_frames: int = 0  # evaluation frames (each gives one or three views)
    centre: np.ndarray | None = None  # (F,) bool: the vector is its frame's centre view (None: all are)

    def centre_views(self) -> "EvalIndex":
        """The index of the centre views alone (what web videos are matched against)."""
        if self.centre is None or self.centre.all():
            return self
        m = self.centre
        return EvalIndex(self.features[m], self.owners[m], self.times[m], self.ids, self.crop_features,
                         self.failures, self.n_frames, None)


def embed_eval(eval_rows: Sequence[dict], embed: Callable, opts: DedupOptions,
               progress: Callable[[int], None] | None = None) -> EvalIndex:
    """Features of the evaluation frames, plus the five crops of ``threshold_frames`` of them."""
    plan, failures = [], {}
    for row in eval_rows:
        try:
            idx, rate = eval_frame_indices(row, opts.eval_fps, opts.eval_max_frames)
            plan.append((row, idx, rate))
        except media.MediaError as err:
            failures[row["id"]] = str(err)
    total = sum(len(idx) for _, idx, _ in plan)
    rng = np.random.default_rng(opts.seed)
    picked = set(rng.choice(total, min(total, opts.threshold_frames), replace=False).tolist()) if total else set()
    if opts.eval_views not in ("three", "center"):
        raise ValueError(f"eval_views must be 'three' or 'center' here ('auto' is resolved by dedup_rows), "
                         f"got {opts.eval_views!r}")
    feats, owners, times, crops, views, ids, centre = [], [], [], [], [], [], []
    pos = n_frames = 0
    for row, idx, rate in plan:
        try:
            if row.get("kind") == "image":
                frames = media.read_image(row["path"], opts.max_pixels)[None]
            else:
                frames = media.read_frames(row["path"], idx, kind=row.get("kind"), max_pixels=opts.max_pixels)
        except media.MediaError as err:
            failures[row["id"]] = str(err)
            pos += len(idx)
            continue
        owner = len(ids)
        ids.append(row["id"])
        for j, frame in enumerate(frames):
            for k, v in enumerate(eval_views(frame, opts.size, opts.eval_views)):
                centre.append(opts.eval_views == "center" or k == 1)
                views.append(v)
                owners.append(owner)
                times.append(float(idx[j] / rate) if rate else 0.0)
            n_frames += 1
            if pos + j in picked:
                crops.extend(view(c, opts.size) for c in five_crops(frame, opts.crop_side))
        pos += len(idx)
        if len(views) >= 4 * opts.batch_size:
            feats.append(embed(views))
            views = []
        if progress:
            progress(1)
    if views:
        feats.append(embed(views))
    dim = feats[0].shape[1] if feats else 0
    crop_feats = embed(crops).reshape(-1, 5, dim) if crops else np.zeros((0, 5, dim), np.float32)
    return EvalIndex(np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
                     np.asarray(owners, np.int64), np.asarray(times, np.float64), ids, crop_feats, failures,
                     n_frames, np.asarray(centre, bool))


# ----------------------------------------------------------------------------- evaluation index cache
def _eval_cache_key(eval_rows: Sequence[dict], opts: DedupOptions, backbone_name: str) -> str:
    keep = ("size", "eval_fps", "eval_max_frames", "eval_views", "crop_side", "threshold_frames", "seed",
            "max_pixels")
    settings = {k: v for k, v in asdict(opts).items() if k in keep}
    files = []
    for r in eval_rows:
        p = Path(r["path"])
        stat = p.stat() if p.exists() else None
        files.append([r["id"], str(p), r.get("start_s"), r.get("end_s"), stat.st_size if stat else None,
                      stat.st_mtime_ns if stat else None])
    blob = json.dumps([backbone_name, settings, files, 2], sort_keys=True, default=str)  # 2: with centre flags
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def load_or_embed_eval(eval_rows: Sequence[dict], backbone, opts: DedupOptions, cache_root: Path | None,
                       backbone_name: str = "", device="cpu", progress: bool = False) -> EvalIndex:
    """embed_eval, cached in ``cache_root/dedup-eval-<key>.npz`` (key: files + settings)."""
    path = None
    if cache_root is not None:
        path = Path(cache_root) / f"dedup-eval-{_eval_cache_key(eval_rows, opts, backbone_name)}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return EvalIndex(z["features"], z["owners"], z["times"], [str(i) for i in z["ids"]],
                                 z["crop_features"], json.loads(str(z["failures"])), int(z["n_frames"]), z["centre"])
    from ..progress import Progress

    embed = _Embedder(backbone, opts.batch_size, device)
    with Progress("dedup: evaluation videos", len(eval_rows), "videos", progress) as bar:
        index = embed_eval(eval_rows, embed, opts, bar.advance)
    if path is not None:
        arrays = dict(features=index.features, owners=index.owners, times=index.times,
                      ids=np.asarray(index.ids, dtype=str), crop_features=index.crop_features,
                      failures=np.asarray(json.dumps(index.failures)), n_frames=np.asarray(index.n_frames),
                      centre=index.centre)
        atomic_write_npz(path, **arrays)
    return index


# ----------------------------------------------------------------------------- near duplicates
def second_times(row: dict) -> np.ndarray:
    """Seconds into the file of the frames the per-second feature cache holds for a video row."""
    from ..data import sampling
    from ..data.datasets import frame_span

    first, num, fps = frame_span(row)
    rate = fps if fps > 0 else media.FRAMES_FPS
    return (sampling.one_fps_indices(num, rate) + first) / rate


def _web_features(rows: list[dict], backbone, cache_dir: Path, opts: DedupOptions, workers: int, device,
                  progress: bool, label: str = "dedup: web features", per_second: bool = False) -> dict[str, str]:
    from ..features.cache import extract_features

    return extract_features(rows, backbone, cache_dir, size=opts.size, frames=opts.web_frames,
                            batch_size=opts.batch_size, workers=workers, max_pixels=opts.max_pixels,
                            device=device, progress=progress, label=label, per_second=per_second)


class _FeatureReader:
    """Reads cached web features by id with one scan of the shard index and the last shard kept
    open: rows are read in manifest order, which is the order their shards were written in."""

    def __init__(self, cache_dir: Path):
        from ..features.cache import cached_ids

        self.index = cached_ids(cache_dir)
        self.shard, self.array = None, None

    def get(self, rid: str) -> np.ndarray | None:
        from safetensors import safe_open

        hit = self.index.get(rid)
        if hit is None:
            return None
        shard, start, n = hit
        if shard != self.shard:
            with safe_open(str(shard), framework="np") as f:
                self.shard, self.array = shard, f.get_tensor("features")
        return np.asarray(self.array[start:start + n], np.float32)


def _flag_image(row: dict, sims: np.ndarray, hits: np.ndarray, index: EvalIndex, threshold: float) -> bool:
    """Frame rule (images, one frame): the best frame reaches the threshold."""
    best = int(np.argmax(sims[:, 0]))
    sim, hit = float(sims[best, 0]), int(hits[best, 0])
    row["similarity"] = round(sim, 6)
    if hit < 0 or sim < threshold:
        return False
    eid = index.ids[index.owners[hit]]
    row.update(status="duplicate", dup_of=eid, dup_kind="near-eval", dup_time_s=round(float(index.times[hit]), 3),
               dup_frames=1, reason=f"near-duplicate of evaluation sample {eid} at {index.times[hit]:.2f}s "
                                    f"(cosine {sim:.3f} >= {threshold:.3f})")
    return True


def _flag_video(row: dict, times: np.ndarray, sims: np.ndarray, hits: np.ndarray, index: EvalIndex,
                threshold: float, opts: DedupOptions) -> bool:
    """Video rule: ``min_frames`` frames (at most all of them) match one evaluation row (at one
    time offset with ``time_tolerance_s``; :func:`~omnisource.clean.similarity.temporal_match`)."""
    row["similarity"] = round(float(sims[:, 0].max()), 6)
    match = temporal_match(times, sims, hits, index.owners, index.times, threshold, opts.time_tolerance_s)
    need = min(opts.min_frames, len(times))
    if match.owner < 0 or match.frames < need:
        return False
    eid = index.ids[match.owner]
    at = match.eval_time_s
    how = "in any order" if opts.time_tolerance_s is None else "in order"
    row.update(status="duplicate", dup_of=eid, dup_kind="near-eval", dup_time_s=round(at, 3),
               dup_web_time_s=round(match.web_time_s, 3), dup_frames=match.frames,
               reason=f"near-duplicate of evaluation sample {eid}: {match.frames} of {len(times)} frames match it "
                      f"{how}, the first at {match.web_time_s:.1f}s (its {at:.1f}s), mean cosine "
                      f"{match.similarity:.3f} >= {threshold:.3f}")
    return True


def _seconds(row: dict) -> int:
    """About how many per-second frames a video row has (bounds a search batch; 30 when unknown)."""
    num, fps = row.get("num_frames"), row.get("fps")
    return max(1, int(num / fps)) if num and fps else 30


def near_duplicates(rows: list[dict], index: EvalIndex, backbone, cache_dir: Path, opts: DedupOptions,
                    workers: int = 0, device="cpu", progress: bool = False,
                    seconds_dir: Path | None = None) -> tuple[list[dict], dict]:
    """Flag ok rows that copy the evaluation set: an image whose frame matches an evaluation frame
    at or above the threshold; a video ``min_frames`` of whose frames (one per second, from the
    per-second cache ``seconds_dir``) match one evaluation row in temporal order."""
    from ..progress import Progress

    whiten = fit_whitening(index.features, opts.shrinkage)
    crop_mean, crop_std = crop_threshold(index.crop_features, whiten) if len(index.crop_features) else (None, None)
    threshold = opts.threshold if opts.threshold is not None else crop_mean
    if threshold is None:
        raise ValueError("no threshold: give one, or evaluation frames to measure it on")
    todo = [i for i, r in enumerate(rows) if r.get("status") == "ok"]
    images = [i for i in todo if rows[i].get("kind") == "image"]
    videos = [i for i in todo if rows[i].get("kind") != "image"]
    source = next((rows[i].get("source") for i in todo if rows[i].get("source")), "web")
    failures = {}
    if images:
        failures.update(_web_features([rows[i] for i in images], backbone, cache_dir, opts, workers, device,
                                      progress, f"dedup: features of {source}"))
    # Never the T-frame cache itself: a video embedded there has T frames, not one per second.
    seconds_dir = Path(seconds_dir) if seconds_dir else Path(cache_dir).with_name(Path(cache_dir).name + "-1fps")
    if videos:
        failures.update(_web_features([rows[i] for i in videos], backbone, seconds_dir, opts, workers, device,
                                      progress, f"dedup: features of {source} (1 fps)", per_second=True))
    readers = {"image": _FeatureReader(cache_dir) if images else None,
               "video": _FeatureReader(seconds_dir) if videos else None}
    # Images against every view; videos against the centre views (what a web video shows is its
    # own centre square; the side views only add look-alike matches: benchmarks/dedup_video.py).
    indexes = {"image": index, "video": index.centre_views()}
    nns = {k: NearestNeighbours(whiten(ix.features), opts.exact_max, opts.nlist, opts.nprobe, opts.seed)
           for k, ix in indexes.items() if (images if k == "image" else videos)}
    out = [dict(r) for r in rows]
    checked = flagged = 0

    def flush(chunk: list[int]):
        nonlocal checked, flagged
        for kind in ("image", "video"):
            mine = [i for i in chunk if (out[i].get("kind") == "image") == (kind == "image")]
            feats = {i: readers[kind].get(out[i]["id"]) for i in mine}
            have = [i for i in mine if feats[i] is not None and len(feats[i])]
            if not have:
                continue
            arrays = [feats[i] for i in have]
            ix = indexes[kind]
            sims, hits = nns[kind].search(whiten(np.concatenate(arrays)), max(1, min(opts.top_k, len(ix.features))))
            start = 0
            for i, arr in zip(have, arrays):
                s, h = sims[start:start + len(arr)], hits[start:start + len(arr)]
                start += len(arr)
                checked += 1
                if kind == "image":
                    flagged += _flag_image(out[i], s, h, ix, threshold)
                else:
                    times = second_times(out[i])
                    if len(times) != len(arr):
                        raise ValueError(f"{seconds_dir}: {len(arr)} frames cached for {out[i]['id']}, "
                                         f"{len(times)} expected at 1 fps: not a per-second cache")
                    flagged += _flag_video(out[i], times, s, h, ix, threshold, opts)

    with Progress(f"dedup: search of {source}", len(todo), "files", progress) as bar:
        chunk, frames_in_chunk = [], 0
        for i in images + videos:
            chunk.append(i)
            frames_in_chunk += 1 if out[i].get("kind") == "image" else _seconds(out[i])
            if frames_in_chunk >= opts.search_batch:
                flush(chunk)
                bar.advance(len(chunk), note=f"{flagged} near-duplicates")
                chunk, frames_in_chunk = [], 0
        if chunk:
            flush(chunk)
            bar.advance(len(chunk), note=f"{flagged} near-duplicates")
    report = {"threshold": float(threshold), "threshold_source": "given" if opts.threshold is not None
              else "crops", "crop_similarity_mean": crop_mean, "crop_similarity_std": crop_std,
              "eval_rows": len(index.ids), "eval_frames": index.n_frames, "eval_vectors": int(len(index.features)),
              "index": next(iter(nns.values())).kind if nns else None, "min_frames": opts.min_frames,
              "eval_vectors_videos": int(len(indexes["video"].features)),
              "near": flagged, "checked": checked, "unreadable": sum(rows[i]["id"] in failures for i in todo)}
    return out, report
