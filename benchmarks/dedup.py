"""Evaluation-set de-duplication: recall / false positives on real data, and search at scale.

    python benchmarks/dedup.py --data ../shared/data [--copies 250] [--size 128] [--eval-fps 5]
    python benchmarks/dedup.py --scale-only [--n-web 1000000] [--n-eval 10000]
    python benchmarks/dedup.py --videos --workspace DIR [...]   (part 3: real video, benchmarks/dedup_video.py)

Part 1 (real data). Evaluation set: the ucf101-6 validation videos (groups 08-11). Web pool: every
web-sports image, plus ``--copies`` transformed copies of random frames (any frame, not only indexed
ones) of random validation videos, one transform each, cycling through crop (50-90 % of the area,
aspect 3:4-4:3), resize (to 224x224, 160x120 or 640x480), JPEG re-encode (quality 15-40), horizontal
flip and colour jitter (brightness/contrast/saturation), every copy then saved as JPEG q90. The copies
are written to a temporary folder (never into the repository). clean.dedup runs with its defaults
(EfficientNet-Lite0 ImageNet features at 128 px, evaluation frames at 5 fps as three views each,
whitening fitted on the evaluation features, threshold = mean cosine similarity between five crops of
the same evaluation frame, exact faiss search).
Printed: recall (copies flagged), same-video recall (flagged against the video they came from; clips
of one UCF group are near-duplicates, so a match in another clip of the group is also a true leak),
per-transform recall, false-positive rate on the pool, the threshold and the timings. Goal: recall
>= 95 %, FPR <= 1 %.

Part 2 (scale, in a child process so that its peak memory is its own): 1,000,000 web x 10,000
evaluation random 1,280-d vectors, with 100 planted near-copies; whitening fitted on the evaluation
vectors, web vectors generated, whitened and searched 8,192 at a time; exact (IndexFlatIP) and IVF
(nlist = 4 sqrt(n), nprobe 16, trained on a sample). Printed: seconds (search including whitening,
generation of the random vectors reported apart), planted copies found, peak RSS. Goal: under 10
minutes on 2 cores, peak memory under 4 GB.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KINDS = ("crop", "resize", "jpeg", "flip", "jitter")


# ----------------------------------------------------------------------------- part 1
def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def transform(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    if kind == "crop":
        area, aspect = rng.uniform(0.5, 0.9), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, round(np.sqrt(area * h * w / aspect))))
        cw = int(min(w, round(np.sqrt(area * h * w * aspect))))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out = img[y:y + ch, x:x + cw]
    elif kind == "resize":
        size = [(224, 224), (160, 120), (640, 480)][int(rng.integers(3))]
        out = cv2.resize(img, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR)
    elif kind == "jpeg":
        out = _jpeg(img, int(rng.integers(15, 41)))
    elif kind == "flip":
        out = img[:, ::-1]
    elif kind == "jitter":
        f = img.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
        mean = f.mean(axis=2, keepdims=True)
        out = np.clip(mean + (f - mean) * rng.uniform(0.6, 1.4), 0, 255).astype(np.uint8)
    else:
        raise ValueError(kind)
    return _jpeg(np.ascontiguousarray(out), 90)


def real_data(args) -> dict:
    import torch
    from PIL import Image

    from omnisource.clean.dedup import DedupOptions, dedup_rows
    from omnisource.data import media
    from omnisource.data.manifest import new_row
    from omnisource.models.registry import create_backbone

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    videos = sorted(p for p in glob.glob(str(data / "ucf101-6" / "videos" / "*" / "*.mp4"))
                    if re.search(r"_g(08|09|10|11)_", p))
    pool = sorted(glob.glob(str(data / "web-sports" / "*" / "*.jpg")))
    if not videos or not pool:
        raise SystemExit(f"{data}: expected ucf101-6/videos and web-sports (see ../shared/data/README.md)")
    eval_rows = [new_row("ucf101-6", "video", p, split="val", label=0) for p in videos]
    group = {r["id"]: re.search(r"_g(\d+)_", r["path"]).group(1) + Path(r["path"]).parent.name for r in eval_rows}
    rng = np.random.default_rng(args.seed)
    work = Path(args.workspace or tempfile.mkdtemp(prefix="dedup-bench-"))
    copies_dir = work / "copies"
    copies_dir.mkdir(parents=True, exist_ok=True)
    web, truth = [], {}
    t0 = time.time()
    for i in range(args.copies):
        row = eval_rows[int(rng.integers(len(eval_rows)))]
        info = media.probe(row["path"])
        frame_idx = int(rng.integers(info.num_frames))
        frame = media.read_frames(row["path"], [frame_idx])[0]
        kind = KINDS[i % len(KINDS)]
        path = copies_dir / f"copy{i:04d}.jpg"
        Image.fromarray(transform(frame, kind, rng)).save(path, quality=95)
        rid = f"copy{i:04d}"
        web.append(new_row("web", "image", str(path), id=rid, weak_labels=["injected"]))
        truth[rid] = (row["id"], kind)
    web += [new_row("web-sports", "image", p, weak_labels=[Path(p).parent.name]) for p in pool]
    t_copies = time.time() - t0
    backbone = create_backbone("efficientnet_lite0", pretrained="imagenet")
    opts = DedupOptions(size=args.size, eval_fps=args.eval_fps, shrinkage=args.shrinkage, seed=args.seed,
                        eval_views=args.eval_views)
    t0 = time.time()
    rows, report = dedup_rows(web, eval_rows, backbone, work / "features", opts, eval_cache=work / "eval-cache",
                              backbone_name="efficientnet_lite0:imagenet", workers=0, progress=False)
    t_dedup = time.time() - t0
    flagged = {r["id"]: r for r in rows if r["status"] == "duplicate"}
    copies = [r for r in rows if r["id"] in truth]
    pool_rows = [r for r in rows if r["id"] not in truth]
    hit = [r["id"] in flagged for r in copies]
    same_video = [flagged.get(r["id"], {}).get("dup_of") == truth[r["id"]][0] for r in copies]
    same_group = [r["id"] in flagged and group.get(flagged[r["id"]]["dup_of"]) == group[truth[r["id"]][0]]
                  for r in copies]
    per_kind = {k: float(np.mean([h for r, h in zip(copies, hit) if truth[r["id"]][1] == k])) for k in KINDS}
    fp = [r for r in pool_rows if r["id"] in flagged]
    copy_sims = np.array([r["similarity"] for r in copies])
    pool_sims = np.array([r["similarity"] for r in pool_rows])
    return {
        "eval_videos": len(eval_rows), "eval_frames": report["eval_frames"], "eval_vectors": report["eval_vectors"],
        "pool_images": len(pool_rows),
        "copies": len(copies), "threshold": round(report["threshold"], 4),
        "crop_similarity": f"{report['crop_similarity_mean']:.4f} +- {report['crop_similarity_std']:.4f}",
        "recall": round(float(np.mean(hit)), 4), "recall_same_video": round(float(np.mean(same_video)), 4),
        "recall_same_group": round(float(np.mean(same_group)), 4),
        "recall_per_transform": {k: round(v, 3) for k, v in per_kind.items()},
        "false_positive_rate": round(len(fp) / len(pool_rows), 5), "false_positives": [r["path"] for r in fp][:10],
        "copy_similarity_p5_median": [round(float(np.percentile(copy_sims, 5)), 4), round(float(np.median(copy_sims)), 4)],
        "pool_similarity_p99_max": [round(float(np.percentile(pool_sims, 99)), 4), round(float(pool_sims.max()), 4)],
        "oracle_recall_at_1pct_fpr": round(float(np.mean(copy_sims >= np.percentile(pool_sims, 99))), 4),
        "seconds": {"make_copies": round(t_copies, 1), "dedup_total": round(t_dedup, 1)},
        "workspace": str(work),
    }


# ----------------------------------------------------------------------------- part 2
def _peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the current address space, so unlike
    ru_maxrss (which Linux carries across exec from the parent that forked us) it is ours alone."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def scale(n_web: int, n_eval: int, dim: int, batch: int, method: str, planted: int, seed: int) -> dict:
    """Runs in its own process (see main): peak RSS is this search's alone."""
    from omnisource.clean.dedup import NearestNeighbours, fit_whitening

    rng = np.random.default_rng(seed)
    t0 = time.time()
    evals = rng.standard_normal((n_eval, dim), dtype=np.float32)
    whiten = fit_whitening(evals)
    t_fit = time.time() - t0
    t0 = time.time()
    nn = NearestNeighbours(whiten(evals), exact_max=n_eval if method == "exact" else 0, nprobe=16, seed=seed)
    t_index = time.time() - t0
    positions = set(rng.choice(n_web, planted, replace=False).tolist())
    plant_src = {p: int(rng.integers(n_eval)) for p in positions}
    found, t_gen, t_whiten, t_search, best_random = 0, 0.0, 0.0, 0.0, -1.0
    for start in range(0, n_web, batch):
        stop = min(start + batch, n_web)
        t = time.time()
        gen = np.random.default_rng([seed, 1, start])  # never the stream of the evaluation vectors
        x = gen.standard_normal((stop - start, dim), dtype=np.float32)
        mine = [p for p in range(start, stop) if p in positions]
        for p in mine:  # a near-copy: the evaluation vector plus noise (cosine ~0.9)
            x[p - start] = evals[plant_src[p]] + 0.5 * gen.standard_normal(dim, dtype=np.float32)
        t_gen += time.time() - t
        t = time.time()
        w = whiten(x)
        t_whiten += time.time() - t
        t = time.time()
        sims, idx = nn.search(w)
        t_search += time.time() - t
        found += sum(int(idx[p - start] == plant_src[p]) for p in mine)
        others = np.ones(len(x), bool)
        others[[p - start for p in mine]] = False
        best_random = max(best_random, float(sims[others].max()))
    peak = _peak_rss_mib()
    return {"method": method, "index": nn.kind, "n_web": n_web, "n_eval": n_eval, "dim": dim,
            "seconds_whiten_and_search": round(t_whiten + t_search, 1), "seconds_whiten": round(t_whiten, 1),
            "seconds_search": round(t_search, 1), "seconds_index": round(t_index, 1),
            "seconds_fit_whitening": round(t_fit, 1), "seconds_generate_random": round(t_gen, 1),
            "planted_found": f"{found}/{planted}", "max_random_similarity": round(best_random, 4),
            "peak_rss_mib": round(peak, 1), "threads": os.environ.get("OMP_NUM_THREADS", "all")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--copies", type=int, default=250)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--eval-fps", type=float, default=5.0)
    ap.add_argument("--shrinkage", type=float, default=0.97)
    ap.add_argument("--eval-views", default="three", choices=("three", "center"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workspace", default=None, help="Scratch folder (default: a new temporary one).")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--scale-only", action="store_true")
    ap.add_argument("--n-web", type=int, default=1_000_000)
    ap.add_argument("--n-eval", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--methods", default="exact,ivf")
    ap.add_argument("--planted", type=int, default=100)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--videos", action="store_true", help="Part 3 instead: video copies against look-alikes "
                    "(benchmarks/dedup_video.py).")
    ap.add_argument("--out", default=None, help="Part 3: write the results (JSON) here too.")
    import dedup_video

    dedup_video.add_args(ap)
    args = ap.parse_args()
    if args.videos:
        if not args.workspace:
            raise SystemExit("--videos needs --workspace (copies and feature caches are kept there)")
        res = dedup_video.run(args)
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        dedup_video.print_table(res)
        return
    if args.child:
        print(json.dumps(scale(args.n_web, args.n_eval, args.dim, args.batch, args.child, args.planted, args.seed)))
        return
    if not args.scale_only:
        res = real_data(args)
        print("== real data: ucf101-6 validation frames injected into web-sports ==")
        print(json.dumps(res, indent=2), flush=True)
        print(f"recall {res['recall']:.1%} (goal >= 95 %), false-positive rate {res['false_positive_rate']:.2%} "
              f"(goal <= 1 %)", flush=True)
    if args.skip_scale:
        return
    print(f"== scale: {args.n_web:,} web x {args.n_eval:,} evaluation vectors, {args.dim}-d ==", flush=True)
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--child", method, "--n-web", str(args.n_web), "--n-eval", str(args.n_eval),
               "--dim", str(args.dim), "--batch", str(args.batch), "--planted", str(args.planted),
               "--seed", str(args.seed)]
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            raise SystemExit(f"scale child ({method}) failed")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["seconds_wall_child"] = round(time.time() - t0, 1)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
