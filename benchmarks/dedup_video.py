"""Evaluation-set de-duplication on real video: planted copies against look-alikes, per rule.

    python benchmarks/dedup.py --videos --data ../shared/data --workspace /tmp/dedup-video \
        [--eval-index ws/features/dedup-eval-<key>.npz] [--untrimmed-manifest .../web_untrimmed.parquet]

Evaluation set: the validation clips of the first group fold (groups 08, 12, 16, 20, 24: 154 clips,
as benchmarks/ucf_web.py and pixel_ucf.py), indexed as clean.dedup did before (5 fps, three views
per frame, 128 px), or read from ``--eval-index`` (the ``dedup-eval-*.npz`` a pixel_ucf run left
for exactly these clips). The sparser indexes compared (centre view only, 2.5 or 1 fps) are
subsets of that index (every 2nd / 5th indexed frame, the centre view), so every variant sees the
same frames; the timing part embeds them for real.

Web side, every video embedded at 1 fps (the per-second feature cache that scoring of untrimmed
videos uses), images as one centre square:
(a) planted copies, ``--copies`` validation clips, one kind each, cycling: ``reencode`` (the whole
    clip at 480x360, CRF 35), ``crop`` (60-85 % of the area), ``flip`` and ``trim`` (2 s as is) of
    a 3-5 s window, ``splice`` (a 3-5 s window played between two 4-8 s clips of other classes
    from outside the fold) and ``splice-crop-flip`` (the same, window cropped and flipped);
(b) look-alikes: the untrimmed web videos (three clips of the training groups in a row, from
    ``--untrimmed-manifest`` or written here as pixel_ucf does) and ``--trimmed`` clips per class
    of the groups outside the fold; none of them shows a frame of the validation set;
(c) images (the existing part 1 on this index): ``--image-copies`` transformed copies of random
    validation frames (benchmarks/dedup.py) and the web-sports pool.
Rules: ``frame`` (the best frame reaches the threshold: the rule before), ``any>=m`` (m frames
match one evaluation clip, any order) and ``order>=m`` (m frames match one clip at one time
offset, within +-1 s), each at the crop threshold and above it (+0.5 / +1 std of the crop
similarity); m is capped at the video's frame count. Printed: recall on (a) (and the share
flagged against the source clip's group), false-positive rate on (b), image recall / FPR, and the
time to embed ``--timing-clips`` evaluation clips at each index setting, side by side.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

KINDS = ("reencode", "crop", "flip", "trim", "splice", "splice-crop-flip")


def _write_mp4(frames: list[np.ndarray], path: Path, crf: int = 23, fps: int = 25) -> Path:
    import av

    h, w = frames[0].shape[:2]
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h - h % 2, :w - w % 2]), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.replace(path)
    return path


def _all_frames(path: str) -> tuple[np.ndarray, float]:
    from omnisource.data import media

    info = media.probe(path)
    return media.read_frames(path, np.arange(int(info.num_frames))), float(info.fps or 25.0)


def _crop(frames: np.ndarray, rng) -> np.ndarray:
    import cv2

    h, w = frames.shape[1:3]
    area = rng.uniform(0.6, 0.85)
    ch, cw = int(round(h * np.sqrt(area))), int(round(w * np.sqrt(area)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.stack([cv2.resize(f[y:y + ch, x:x + cw], (w, h)) for f in frames])


def make_copies(eval_rows: list[dict], others: list[dict], n: int, out: Path, rng) -> tuple[list[dict], dict]:
    """Planted copies of validation clips (see the module note); truth {id: (eval id, kind, start s of the copy)}."""
    import cv2

    from omnisource.data.manifest import new_row

    out.mkdir(parents=True, exist_ok=True)
    rows, truth = [], {}
    picks = rng.choice(len(eval_rows), n, replace=n > len(eval_rows))
    for i, p in enumerate(picks):
        src, kind = eval_rows[int(p)], KINDS[i % len(KINDS)]
        path = out / f"vcopy{i:03d}.mp4"
        rid = f"vcopy{i:03d}"
        frames, fps = _all_frames(src.get("orig_path") or src["path"])
        secs = 2.0 if kind == "trim" else rng.uniform(3.0, 5.0)
        length = min(len(frames), int(round(secs * fps)))
        start = int(rng.integers(0, len(frames) - length + 1))
        window = frames if kind == "reencode" else frames[start:start + length]
        at = 0.0
        if kind == "reencode":
            video, crf = np.stack([cv2.resize(f, (480, 360)) for f in window]), 35
        elif kind == "crop":
            video, crf = _crop(window, rng), 23
        elif kind == "flip":
            video, crf = window[:, :, ::-1], 23
        elif kind == "trim":
            video, crf = window, 23
        else:
            if kind == "splice-crop-flip":
                window = _crop(window, rng)[:, :, ::-1]
            h, w = window.shape[1:3]
            fill = [o for o in others if o["label"] != src["label"]]
            parts = []
            for j in rng.choice(len(fill), 2, replace=False):
                f2, fps2 = _all_frames(fill[int(j)]["path"])
                k = min(len(f2), int(round(rng.uniform(4, 8) * fps2)))
                parts.append(np.stack([cv2.resize(f, (w, h)) for f in f2[:k]]))
            at = len(parts[0]) / fps
            video, crf = np.concatenate([parts[0], window, parts[1]]), 23
        if not path.exists():
            _write_mp4(list(video), path, crf)
        rows.append(new_row("vcopies", "video", str(path), id=rid, weak_labels=["injected"]))
        truth[rid] = (src["id"], kind, at)
    return rows, truth


def second_features(rows: list[dict], backbone, cache: Path) -> tuple[dict, dict]:
    """{id: (n, D) features at 1 fps} and {id: (n,) times} through the product's per-second cache."""
    from omnisource.clean.near import second_times
    from omnisource.features.cache import extract_features, load_features

    extract_features(rows, backbone, cache, size=128, batch_size=64, workers=0, per_second=True, progress=False)
    feats = load_features(cache, [r["id"] for r in rows])
    return ({k: np.asarray(v, np.float32) for k, v in feats.items()},
            {r["id"]: second_times(r) for r in rows if r["id"] in feats})


def index_variants(index) -> dict[str, np.ndarray]:
    """Masks over a 5 fps, three-view index: the vectors of the sparser settings."""
    pos = np.zeros(len(index.owners), np.int64)
    for o in np.unique(index.owners):
        m = np.nonzero(index.owners == o)[0]
        pos[m] = np.arange(len(m))
    view, frame = pos % 3, pos // 3
    centre = view == 1
    return {"5fps-three": np.ones(len(pos), bool), "5fps-centre": centre, "2.5fps-three": frame % 2 == 0,
            "2.5fps-centre": centre & (frame % 2 == 0), "1fps-three": frame % 5 == 2,
            "1fps-centre": centre & (frame % 5 == 2)}


def rule_flags(searched: dict, owners, times, threshold: float, rule: str, m: int) -> dict:
    from omnisource.clean.similarity import temporal_match

    out = {}
    for rid, (wt, sims, hits) in searched.items():
        if rule == "frame":
            best = int(np.argmax(sims[:, 0]))
            ok = sims[best, 0] >= threshold and hits[best, 0] >= 0
            out[rid] = (bool(ok), int(owners[hits[best, 0]]) if ok else -1)
            continue
        match = temporal_match(wt, sims, hits, owners, times, threshold, 1.0 if rule == "order" else None)
        out[rid] = (match.frames >= min(m, len(wt)), match.owner)
    return out


def run(args) -> dict:
    import torch

    from omnisource.clean.near import DedupOptions, EvalIndex, _Embedder, embed_eval, load_or_embed_eval
    from omnisource.clean.similarity import NearestNeighbours, crop_threshold, fit_whitening
    from omnisource.data.manifest import read_manifest
    from omnisource.evaluate import protocol
    from omnisource.features.cache import extract_features, load_features
    from omnisource.models.registry import create_backbone

    sys.path.insert(0, str(Path(__file__).parent))
    from dedup import KINDS as IMAGE_KINDS, transform  # noqa: E402

    torch.set_num_threads(args.threads)
    data, work = Path(args.data), Path(args.workspace)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    split = protocol.target_split(data, 3, 0)
    eval_rows = split.rows("val")
    orig = {r["id"]: r for r in eval_rows}
    if args.eval_manifest:
        eval_rows = [dict(r, orig_path=orig.get(r["id"], {}).get("path")) for r in read_manifest(args.eval_manifest).rows
                     if r.get("split") == "val" and r.get("status") == "ok"]
    group = {r["id"]: r.get("group") for r in eval_rows}
    backbone = create_backbone("efficientnet_lite0", pretrained="imagenet")
    t0 = time.time()
    if args.eval_index:
        with np.load(args.eval_index, allow_pickle=False) as z:
            index = EvalIndex(z["features"], z["owners"], z["times"], [str(i) for i in z["ids"]], z["crop_features"],
                              {}, int(z["n_frames"]))
        assert set(index.ids) == {r["id"] for r in eval_rows}, "--eval-index is not of these evaluation rows"
    else:
        index = load_or_embed_eval(eval_rows, backbone, DedupOptions(), work / "eval-cache",
                                   "efficientnet_lite0:imagenet")
    t_index = time.time() - t0
    others = [r for r in split.manifest.rows if r["split"] in ("train", "unused")]
    copies, truth = make_copies(eval_rows, others, args.copies, work / "vcopies", rng)
    if args.untrimmed_manifest:
        untrimmed = [dict(r, status="ok", source="untrimmed") for r in read_manifest(args.untrimmed_manifest).rows]
        untrimmed = untrimmed[:args.max_untrimmed or None]
    else:
        from pixel_ucf import concat_videos
        from omnisource.data.manifest import new_row
        _, specs = protocol.web_videos(split, 0.0, 0)
        untrimmed = [new_row("untrimmed", "video", str(concat_videos([p["path"] for p in s["parts"]],
                                                                   work / "untrimmed" / f"{s['id']}.mp4")), id=s["id"])
                     for s in specs]
    trimmed = []
    for c in range(len(split.classes)):
        mine = [r for r in others if r["label"] == c]
        trimmed += [mine[int(i)] for i in rng.choice(len(mine), min(args.trimmed, len(mine)), replace=False)]
    look = {"untrimmed": untrimmed, "trimmed": trimmed}
    t0 = time.time()
    vfeat, vtime = second_features(copies + untrimmed + trimmed, backbone, work / "feat-1fps")
    t_web = time.time() - t0
    # Images (part 1 on this index): transformed copies of random validation frames + the pool.
    from PIL import Image

    from omnisource.data import media
    from omnisource.data.manifest import new_row
    img_rows, img_truth = [], {}
    (work / "icopies").mkdir(exist_ok=True)
    for i in range(args.image_copies):
        row = eval_rows[int(rng.integers(len(eval_rows)))]
        info = media.probe(row["path"])
        frame = media.read_frames(row["path"], [int(rng.integers(info.num_frames))])[0]
        p = work / "icopies" / f"icopy{i:04d}.jpg"
        if not p.exists():
            Image.fromarray(transform(frame, IMAGE_KINDS[i % len(IMAGE_KINDS)], rng)).save(p, quality=95)
        img_rows.append(new_row("web", "image", str(p), id=f"icopy{i:04d}"))
        img_truth[f"icopy{i:04d}"] = row["id"]
    pool = sorted((data / "web-sports").glob("*/*.jpg"))
    pool = [pool[int(i)] for i in np.sort(rng.choice(len(pool), args.pool, replace=False))] if args.pool else pool
    img_rows += [new_row("web-sports", "image", str(p)) for p in pool]
    extract_features(img_rows, backbone, work / "feat-img", size=128, frames=1, batch_size=64, workers=0,
                     progress=False)
    ifeat = {k: np.asarray(v, np.float32)[:1] for k, v in load_features(work / "feat-img", [r["id"] for r in img_rows]).items()}

    results, crop_rows = {"rules": [], "images": []}, None
    variants = index_variants(index)
    rules = [(r.split(">=")[0], int(r.split(">=")[1]) if ">=" in r else 1) for r in args.rules.split(",")]
    for name, shrink in [(v, float(s)) for v in args.variants.split(",") for s in args.shrinkage_grid.split(",")]:
        # "three+centre" is the stage's default: whitening and threshold from all views, web videos
        # searched among the centre views, images among all.
        fit = variants["5fps-three"] if name == "three+centre" else variants[name]
        mask = variants["5fps-centre"] if name == "three+centre" else variants[name]
        feats, owners, times = index.features[mask], index.owners[mask], index.times[mask]
        whiten = fit_whitening(index.features[fit], shrink)
        mean, std = crop_threshold(index.crop_features, whiten)
        if name == "5fps-three" and crop_rows is None:
            sub = rng.choice(len(index.crop_features), 64, replace=False)
            crop_rows = {"threshold_256_frames": round(mean, 4),
                         "threshold_64_frames": round(crop_threshold(index.crop_features[sub], whiten)[0], 4)}
        nn = NearestNeighbours(whiten(feats), exact_max=10**9)
        searched = {}
        for rid, f in vfeat.items():
            s, h = nn.index.search(np.ascontiguousarray(whiten(f)), args.top_k)
            searched[rid] = (vtime[rid], s, h)
        inn = NearestNeighbours(whiten(index.features[fit]), exact_max=10**9) if name == "three+centre" else nn
        isims, ihits = inn.search(whiten(np.concatenate([ifeat[r["id"]] for r in img_rows if r["id"] in ifeat])))
        ids = [r["id"] for r in img_rows if r["id"] in ifeat]
        icopy = np.array([i in img_truth for i in ids])
        ihit = isims >= mean
        results["images"].append({"index": name, "shrinkage": shrink, "vectors": int(fit.sum()), "threshold": round(mean, 4),
                                  "recall": round(float(ihit[icopy].mean()), 4),
                                  "fpr": round(float(ihit[~icopy].mean()), 5)})
        for label, thr in [(f"t+{k}sd" if k else "t", mean + float(k) * std) for k in args.sds.split(",")]:
            for rule, m in rules:
                flags = rule_flags(searched, owners, times, thr, rule, m)
                hit = [flags[r["id"]][0] for r in copies]
                same = [flags[r["id"]][0] and group.get(index.ids[flags[r["id"]][1]]) == group[truth[r["id"]][0]]
                        for r in copies]
                per_kind = {k: round(float(np.mean([h for r, h in zip(copies, hit) if truth[r["id"]][1] == k])), 2)
                            for k in KINDS}
                row = {"index": name, "shrinkage": shrink, "rule": rule if rule == "frame" else f"{rule}>={m}", "threshold": label,
                       "value": round(thr, 4), "recall": round(float(np.mean(hit)), 4),
                       "recall_same_group": round(float(np.mean(same)), 4), "per_kind": per_kind}
                for src, rows_ in look.items():
                    row[f"fpr_{src}"] = f"{sum(flags[r['id']][0] for r in rows_ if r['id'] in flags)}/{len(rows_)}"
                results["rules"].append(row)
    # Timing: the index settings embedded for real, side by side on the same clips.
    timing = []
    clips = eval_rows[:args.timing_clips]
    embed = _Embedder(backbone, 64)
    for setting in (args.timing.split(",") if clips else []):  # fps:views:threshold frames
        fps, views, tf = setting.split(":")
        opts = DedupOptions(eval_fps=float(fps), eval_views=views, threshold_frames=int(tf))
        t0 = time.time()
        ix = embed_eval(clips, embed, opts)
        timing.append({"eval_fps": float(fps), "views": views, "threshold_frames": int(tf), "clips": len(clips),
                       "vectors": int(len(ix.features)) + 5 * len(ix.crop_features),
                       "seconds": round(time.time() - t0, 1), "load": os.getloadavg()[0]})
    results.update(timing=timing, crop_threshold=crop_rows, eval_clips=len(eval_rows), eval_vectors=int(len(index.features)),
                   copies=len(copies), untrimmed=len(untrimmed), trimmed=len(trimmed), image_rows=len(img_rows),
                   image_copies=args.image_copies, web_video_frames=int(sum(len(v) for v in vfeat.values())),
                   seconds={"index": round(t_index, 1), "web_1fps": round(t_web, 1)})
    return results


def add_args(ap) -> None:
    ap.add_argument("--eval-manifest", default=None, help="Evaluation rows (default: fold 0 of the protocol).")
    ap.add_argument("--eval-index", default=None, help="A dedup-eval-*.npz of exactly those rows (5 fps, three views).")
    ap.add_argument("--untrimmed-manifest", default=None)
    ap.add_argument("--trimmed", type=int, default=15, help="Look-alike clips per class from outside the fold.")
    ap.add_argument("--image-copies", type=int, default=250)
    ap.add_argument("--pool", type=int, default=0, help="Web-sports pool images (0: all 1,485).")
    ap.add_argument("--max-untrimmed", type=int, default=0, help="0: all")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--variants", default="5fps-three,5fps-centre,2.5fps-three,2.5fps-centre,1fps-three,1fps-centre")
    ap.add_argument("--shrinkage-grid", default="0.97", help="Whitening shrinkages compared (comma-separated).")
    ap.add_argument("--rules", default="frame,any>=2,any>=3,order>=2,order>=3,order>=4")
    ap.add_argument("--sds", default="0,0.5,1", help="Thresholds compared: crop mean + k crop std, per k.")
    ap.add_argument("--timing-clips", type=int, default=4, help="Evaluation clips embedded per timing setting (0: none).")
    ap.add_argument("--timing", default="5:three:256,1:center:64,5:three:256,1:center:64",
                    help="Index settings timed, in this order: fps:views:threshold frames, comma-separated.")


def print_table(res: dict) -> None:
    print("| index | shrinkage | rule | threshold | recall | same group | FPR untrimmed | FPR trimmed | per kind |")
    for r in res["rules"]:
        print(f"| {r['index']} | {r['shrinkage']} | {r['rule']} | {r['threshold']} ({r['value']}) | {r['recall']:.1%} | "
              f"{r['recall_same_group']:.1%} | {r['fpr_untrimmed']} | {r['fpr_trimmed']} | {r['per_kind']} |")
    for r in res["images"]:
        print(f"images | {r['index']} ({r['vectors']} vectors) | shrinkage {r['shrinkage']} | threshold {r['threshold']} | recall {r['recall']:.1%} "
              f"| FPR {r['fpr']:.2%}")
    for t in res["timing"]:
        print(f"timing | {t}")
