"""OmniSource on real data: UCF101-6 + web-sports images + the unused UCF videos as web videos.

    python benchmarks/ucf_web.py --data ../shared/data --out bench-out/ucf_web [--seeds 3]

Feature mode (frozen EfficientNet-Lite0 ImageNet features, TSN heads for teacher and student),
the protocol of shared/data/README.md (see omnisource.evaluate.protocol). Features are cached
under --out and reused. Untrimmed web videos are virtual: clips of different classes played
in a row, their 1 fps features the concatenation of their parts' 1 fps features.
Writes results.json (rows: setting, k, top1/mca mean and std, n_aux, seeds) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from omnisource.config import TrainConfig, load_config
from omnisource.data.datasets import FeatureDataset, make_loader
from omnisource.data.manifest import new_row
from omnisource.data.sampling import tsn_indices
from omnisource.evaluate import protocol
from omnisource.evaluate.metrics import classification_metrics
from omnisource.features.cache import extract_features, load_features
from omnisource.models import create_backbone, create_head
from omnisource.select.stage import select_rows
from omnisource.teacher.score import head_probs, summarise, untrimmed_scores
from omnisource.train.loop import Source, fit, predict
from omnisource.transform.image_to_clip import save_motion
from omnisource.transform.stage import fit_motion, image_rows, untrimmed_rows
from omnisource.train.joint import aux_loader
from omnisource.workspace import cache_dir_for

SETTINGS = ["baseline", "images", "trimmed", "untrimmed", "all", "all_nofilter", "all_still", "all_warp",
            "all_power0.2"]
ALL = ("images", "trimmed", "untrimmed")
SPEC = {  # setting -> (sources, filter rule ("filter" = --filter), image transform, resampling)
    "images": (("images",), "filter", "still", "none"),
    "trimmed": (("trimmed",), "filter", "still", "none"),
    "untrimmed": (("untrimmed",), "filter", "still", "none"),
    "all": (ALL, "filter", "still", "none"),
    "all_nofilter": (ALL, "none", "still", "none"),
    "all_still": (ALL, "filter", "still", "none"),
    "all_warp": (ALL, "filter", "perspective", "none"),
    "all_power0.2": (ALL, "filter", "still", "power"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Features:
    """The benchmark's caches: T segment frames per video/image clip, and 1 fps per video."""

    def __init__(self, root: Path, size: int, frames: int, workers: int):
        # The product's cache layout, so `omnisource ... features.cache_root=<out>/features` reuses it.
        self.seg = cache_dir_for(root, "efficientnet_lite0", size, frames)
        self.fps = cache_dir_for(root, "efficientnet_lite0", size, frames, per_second=True)
        self.size, self.frames, self.workers = size, frames, workers
        self.backbone = create_backbone("efficientnet_lite0", pretrained="imagenet")

    def extract(self, rows: list[dict], per_second: bool = False) -> None:
        t0 = time.time()
        failures = extract_features(rows, self.backbone, self.fps if per_second else self.seg, size=self.size,
                                    frames=self.frames, workers=self.workers, progress=sys.stdout.isatty(),
                                    per_second=per_second)
        log(f"features: {len(rows)} rows ({'1 fps' if per_second else f'{self.frames} frames'}) "
            f"in {time.time() - t0:.0f} s, {sum(r['id'] in failures for r in rows)} failed")

    def clips(self, ids: list[str]) -> np.ndarray:
        if not ids:  # e.g. no unused training videos left to act as web videos at k = all
            return np.zeros((0, self.frames, self.backbone.num_features), np.float32)
        feats = load_features(self.seg, ids)
        return np.stack([_to_t(feats[i], self.frames) for i in ids]).astype(np.float32)


def _to_t(a: np.ndarray, t: int) -> np.ndarray:
    return a if len(a) == t else a[tsn_indices(len(a), t, train=False)]


def train_head(x, y, xv, yv, classes, cfg: TrainConfig, aux=(), frames=8, resample="none"):
    torch.manual_seed(cfg.seed)
    head = create_head("tsn", x.shape[-1], len(classes), frames, dropout=0.5)
    train = make_loader(FeatureDataset(x, y, frames, True, cfg.seed), cfg.batch_size, True)
    val = make_loader(FeatureDataset(xv, yv, frames), 256, False)
    steps = len(train)
    # At least 400 iterations (tiny k) and at least cfg.epochs passes over the target set.
    run_cfg = TrainConfig(**{**cfg.__dict__, "epochs": max(cfg.epochs, math.ceil(400 / steps))})
    loaders = []
    omni = load_config(None, [f"train.seed={cfg.seed}", f"omni.resample={resample}", "omni.resample_power=0.2"])
    for name, (ax, ay) in aux:
        if len(ay):
            batch = max(1, round(0.5 * cfg.batch_size))
            loaders.append(Source(name, aux_loader(FeatureDataset(ax, ay, frames, True, cfg.seed), ay, len(classes),
                                                   batch, steps, omni)))
    tmp = Path(tempfile.mkdtemp(prefix="ucfweb-"))
    try:
        from rich.console import Console

        fit(head, train, val, run_cfg, tmp, classes, aux=loaders, console=Console(quiet=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    scores, labels = predict(head, val, torch.device("cpu"))
    return head.eval(), classification_metrics(scores, labels, classes)


def require_data(ap: argparse.ArgumentParser, data: Path, subs=("ucf101-6/videos", "web-sports")) -> None:
    for sub in subs:
        if not (data / sub).is_dir():
            ap.error(f"{data / sub} not found: --data must hold {' and '.join(s.split('/')[0] + '/' for s in subs)}")


def labeled_features(feats: Features, split, epochs: int, seed: int):
    """Features and labels of the split's labeled training and validation clips, and the head
    recipe every benchmark trains its teacher / target-only head with."""
    tr, va = split.rows("train"), split.rows("val")
    x, y = feats.clips([r["id"] for r in tr]), np.array([r["label"] for r in tr])
    xv, yv = feats.clips([r["id"] for r in va]), np.array([r["label"] for r in va])
    cfg = TrainConfig(epochs=epochs, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=1e-4, device="cpu",
                      seed=seed)
    return x, y, xv, yv, cfg


def per_second_of(feats: Features, specs: list[dict]) -> dict[str, np.ndarray]:
    """1 fps features of each virtual untrimmed video: its parts' 1 fps features in a row."""
    fps = load_features(feats.fps, [p["id"] for s in specs for p in s["parts"]])
    return {s["id"]: np.concatenate([fps[p["id"]] for p in s["parts"]]).astype(np.float32) for s in specs}


def web_scores(teacher, feats: Features, images, trimmed, untrimmed, per_second, clip_seconds: float) -> dict:
    """The teacher's score records of every web sample (what `omnisource score` writes)."""
    img = load_features(feats.seg, [r["id"] for r in images])
    scores = {r["id"]: summarise(p) for r, p in
              zip(images, head_probs(teacher, [img[r["id"]].astype(np.float32) for r in images], feats.frames))}
    trim_x = feats.clips([r["parent_id"] for r in trimmed])
    scores.update({r["id"]: summarise(p) for r, p in zip(trimmed, head_probs(teacher, list(trim_x), feats.frames))})
    for r in untrimmed:
        fp, windows, cp = untrimmed_scores(teacher, per_second[r["id"]], feats.frames, clip_seconds)
        scores[r["id"]] = {**summarise(fp.max(axis=0)), "frame_probs": fp.tolist(),
                           "clip_windows": [list(w) for w in windows], "clip_probs": cp.tolist()}
    return scores


def aux_source(name: str, rows, scores, classes, rule: str, threshold: float, omni, feats: Features, per_second,
               derive_images=None):
    """Select one web source and turn it into (features, labels): images as they are (or the
    rows ``derive_images(kept)`` makes of them), trimmed videos by their clip, untrimmed videos
    as 1 fps snippets. Returns (aux features, labels, selection stats)."""
    kept, stats = select_rows(rows, scores, classes, rule, threshold, protocol.QUERY_MAP)
    kept = [r for r in kept if r["status"] == "ok"]
    if name == "images":
        ax = feats.clips([r["id"] for r in (derive_images(kept) if derive_images else kept)])
    elif name == "trimmed":
        ax = feats.clips([r["parent_id"] for r in kept])
    else:
        kept = untrimmed_rows(kept, scores, omni)
        ax = np.stack([_to_t(per_second[s["parent_id"]][s["frame_indices"]], feats.frames) for s in kept]) \
            if kept else feats.clips([])
    return ax, np.array([r["label"] for r in kept], dtype=np.int64), stats


def run_seed(args, feats: Features, k: int, seed: int, motion_path: Path, results: dict) -> None:
    split = protocol.target_split(args.data, k, seed, args.test_root)
    classes = split.classes
    x, y, xv, yv, cfg = labeled_features(feats, split, args.epochs, seed)
    teacher, base = train_head(x, y, xv, yv, classes, cfg, frames=feats.frames)
    results.setdefault(("baseline", k), []).append((base, 0))

    images = protocol.web_images(args.data, classes, args.noise, seed)
    trimmed, specs = protocol.web_videos(split, args.label_noise, seed)
    untrimmed = protocol.untrimmed_rows(specs)
    per_second = per_second_of(feats, specs)
    scores = web_scores(teacher, feats, images, trimmed, untrimmed, per_second, args.clip_seconds)

    pos, neg = (int(n) for n in args.snippet.split("+"))
    omni = load_config(None, [f"omni.seed={seed}", f"omni.snippet_pos={pos}", f"omni.snippet_neg={neg}"])
    for setting, (sources, rule, spec, resample) in SPEC.items():
        rule = args.filter if rule == "filter" else rule
        aux = []
        for name in sources:
            rows = {"images": images, "trimmed": trimmed, "untrimmed": untrimmed}[name]
            ax, ay, stats = aux_source(name, rows, scores, classes, rule, args.threshold, omni, feats, per_second,
                                       lambda kept: image_rows(kept, spec, classes, motion_path, 1.0, 0))
            aux.append((name, (ax, ay)))
            if setting == "all" and "filter" in stats:
                results.setdefault((f"filter_{name}", k), []).append(stats["filter"])
        _, m = train_head(x, y, xv, yv, classes, cfg, aux, feats.frames, resample)
        results.setdefault((setting, k), []).append((m, int(sum(len(a[1][1]) for a in aux))))
        log(f"k={k} seed={seed} {setting:>13}: top1 {m['top1']:.3f} mca {m['mean_class_accuracy']:.3f} "
            f"(baseline {base['top1']:.3f}), aux {sum(len(a[1][1]) for a in aux)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder holding ucf101-6/ and web-sports/")
    ap.add_argument("--test-root", type=Path, default=None, help="class folders used for evaluation instead of groups 08-11")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--k", default="3,10,all", help="labeled videos per class, comma separated")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=15, help="minimum passes over the target set")
    ap.add_argument("--noise", type=float, default=0.5, help="share of injected pool images per target query")
    ap.add_argument("--label-noise", type=float, default=0.3, help="share of trimmed web videos with a wrong weak label")
    ap.add_argument("--threshold", type=float, default=0.5, help="teacher confidence threshold")
    ap.add_argument("--filter", default="both", choices=["confidence", "agreement", "both"],
                    help="teacher filter rule of the filtered settings")
    ap.add_argument("--snippet", default="3+0", help="positive+negative 1 fps frames per untrimmed snippet "
                    "(3+0: the negatives of these concatenated videos are other actions, not context)")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    require_data(ap, args.data)
    torch.set_num_threads(2)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    feats = Features(args.out / "features", args.size, args.frames, args.workers)

    full = protocol.target_split(args.data, 0, 0, args.test_root)
    videos = [r for r in full.manifest.rows if r["status"] == "ok" and r["split"] in ("train", "val", "unused")]
    feats.extract(videos)
    feats.extract(full.rows("train"), per_second=True)
    all_images = [new_row("images", "image", str(f)) for f in sorted((args.data / "web-sports").glob("*/*.jpg"))]
    feats.extract(all_images)
    motion_path = args.out / "motion.npz"
    if not motion_path.exists():
        fits, counts = fit_motion(full.rows("train"), full.classes, 4096 * 4096)
        save_motion(motion_path, fits, counts)
        log(f"motion fit on {counts['agnostic']} homographies of the training-group videos")
    for r in all_images:
        r["label"] = 0
    feats.extract(image_rows(all_images, "perspective", full.classes, motion_path, 1.0, 0))

    ks = [0 if k == "all" else int(k) for k in args.k.split(",")]
    results: dict = {}
    for seed in range(args.seeds):
        for k in ks:
            run_seed(args, feats, k, seed, motion_path, results)
    rows = []
    for setting in SETTINGS:
        for k in ks:
            runs = results.get((setting, k), [])
            if not runs:
                continue
            top1 = [m["top1"] for m, _ in runs]
            mca = [m["mean_class_accuracy"] for m, _ in runs]
            rows.append({"setting": setting, "k": "all" if k == 0 else k, "top1_mean": float(np.mean(top1)),
                         "top1_std": float(np.std(top1)), "mca_mean": float(np.mean(mca)),
                         "mca_std": float(np.std(mca)), "n_aux": float(np.mean([n for _, n in runs])),
                         "seeds": len(runs)})
    filters = {f"{name}@k={'all' if k == 0 else k}": {key: float(np.mean([s[key] for s in v])) for key in
                                                       ("kept", "total", "precision", "recall")}
               for (name, k), v in results.items() if name.startswith("filter_")}
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    (args.out / "filters.json").write_text(json.dumps(filters, indent=2))
    print(f"\n{'setting':<14}{'k':>5}{'top1':>16}{'mca':>16}{'n_aux':>8}")
    for r in rows:
        print(f"{r['setting']:<14}{str(r['k']):>5}{r['top1_mean'] * 100:>10.2f} ±{r['top1_std'] * 100:4.1f}"
              f"{r['mca_mean'] * 100:>10.2f} ±{r['mca_std'] * 100:4.1f}{r['n_aux']:>8.0f}")
    print("\nteacher filter on the 'all' setting (mean over seeds):")
    for name, s in filters.items():
        print(f"  {name}: kept {s['kept']:.0f}/{s['total']:.0f}, precision {s['precision']:.2f}, recall {s['recall']:.2f}")
    log(f"done in {time.time() - t0:.0f} s -> {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
