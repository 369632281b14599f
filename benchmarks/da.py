"""Image-to-video domain adaptation (Kae & Song 2020) on UCF101-6 + web-sports, beside OmniSource.

    python benchmarks/da.py --data ../shared/data --out bench-out/da [--features DIR] [--seeds 3]

Feature mode (frozen EfficientNet-Lite0 ImageNet features, 128 px, 8 frames; the cache layout of
benchmarks/ucf_web.py, reused from --features when it holds them). The protocol of ucf_web.py:
4 group folds of 08–25 × ≥ 3 seeds; per run, k labeled videos per class (default 3) from the
other groups:

* web images: the four target queries of web-sports with 50 % injected pool images (weak label =
  query); web videos: the "trimmed" half of the unused training-group videos, 30 % of weak labels
  flipped; unlabeled target: the k labeled videos plus the other half of the unused videos, with
  their labels dropped. The DA rows never read a target label (as in the paper).
* rows: I+F (web images + web video frames, plain CE), I+F_A (+ attention), I+F_DA (+ the three
  discriminators through the GRL), I+F_A+DA (both), V_A+DA (stage 2: the (2+1)D model over the
  per-frame features, built from the I+F_A+DA model, trained on web video clips), and for
  comparison the target-only teacher (k labeled videos) and OmniSource `all` (teacher filter +
  joint training on images, trimmed and untrimmed web videos with the product's defaults).

Validation: the fold's groups (or --test-root). Writes results.json and prints a table: mean ±
std over runs and each row's paired difference with target-only (same fold, seed and subset),
95 % bootstrap interval (paper, UCF101: I+F 70.1, I+F_A 71.4, I+F_DA 72.2, I+F_A+DA 72.6,
V_A+DA 74.9).

Under torchrun (``torchrun --standalone --nproc_per_node=N benchmarks/da.py ...``) every training
runs data-parallel (``train.batch_size`` = --batch stays the global batch) and rank 0 alone writes
and prints; with ``--dropout 0`` such a run follows the one-process run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ucf_web import (ALL, Features, add_protocol_args, base_config, build_aux, labeled_arrays, log,  # noqa: E402
                     protocol_units, require_data, score_set, source_config, train_head, web_sets)  # shared pieces

from omnisource.config import DAConfig, TrainConfig  # noqa: E402
from omnisource.distributed import ddp  # noqa: E402
from omnisource.evaluate import protocol  # noqa: E402
from omnisource.evaluate.folds import summarise_setting  # noqa: E402
from omnisource.features.cache import load_features  # noqa: E402
from omnisource.train.da_stage import train_feature_da  # noqa: E402

ROWS = ["target_only", "I+F", "I+F_A", "I+F_DA", "I+F_A+DA", "V_A+DA", "omnisource_all"]
PAPER = {"I+F": 70.1, "I+F_A": 71.4, "I+F_DA": 72.2, "I+F_A+DA": 72.6, "V_A+DA": 74.9}
VARIANTS = {"I+F": (False, False), "I+F_A": (True, False), "I+F_DA": (False, True), "I+F_A+DA": (True, True)}


def da_data(args, feats: Features, split, seed: int) -> tuple[dict, list, list]:
    classes = split.classes
    images = protocol.web_images(args.data, classes, args.noise, seed)
    img = load_features(feats.seg, [r["id"] for r in images])
    images = [r for r in images if r["id"] in img]
    trimmed, specs = protocol.web_videos(split, args.label_noise, seed)
    ix = np.stack([img[r["id"]][:1].astype(np.float32) for r in images])
    iy = np.array([classes.index(protocol.QUERY_MAP[r["weak_labels"][0]]) for r in images])
    vx = feats.clips([r["parent_id"] for r in trimmed])
    vy = np.array([classes.index(r["weak_labels"][0]) for r in trimmed])
    target_rows = split.rows("train") + [p for s in specs for p in s["parts"]]
    va = split.rows("val")
    data = {"image": (ix, iy, [r["id"] for r in images]), "video": (vx, vy, [r["id"] for r in trimmed]),
            "target": feats.clips([r["id"] for r in target_rows]),
            "val": (feats.clips([r["id"] for r in va]), np.array([r["label"] for r in va]))}
    return data, images, (trimmed, specs)


def omnisource_all(args, feats: Features, split, seed: int) -> tuple[dict, dict]:
    """Target-only teacher and OmniSource `all` with the product's defaults (ucf_web.py's rows)."""
    classes = split.classes
    cfg = base_config(seed)
    data = labeled_arrays(feats, split)
    teacher, base, _ = train_head(cfg, data, classes)
    webs = web_sets(args, feats, split, seed, set(ALL))
    aux = []
    for name in ALL:
        src = source_config(name, [])
        scores = score_set([(teacher, cfg.features.frames)], webs[name], name, cfg)
        x, y, soft, *_ = build_aux(cfg, src, webs[name], scores, classes)
        aux.append((src, x, y, soft))
    _, m, _ = train_head(cfg, data, classes, aux)
    return base, m


def run_unit(args, feats: Features, fold, val_groups, seed: int, results: dict) -> None:
    from rich.console import Console

    split = protocol.target_split(args.data, args.k, seed, args.test_root, val_groups)
    unit = (fold, seed)
    data, images, (trimmed, specs) = da_data(args, feats, split, seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, optimizer=args.optimizer, lr=args.lr, weight_decay=1e-4,
                      device="cpu", seed=seed)
    quiet = Console(quiet=True)
    for row, (attention, adversarial) in VARIANTS.items():
        if row not in args.rows and not (row == "I+F_A+DA" and "V_A+DA" in args.rows):
            continue
        da = DAConfig(attention=attention, adversarial=adversarial, tau=args.tau, beta=args.beta, dropout=args.dropout,
                      top_ratio=args.top_ratio, video_epochs=args.video_epochs, video_lr_scale=args.video_lr_scale)
        stages = ("image", "video") if row == "I+F_A+DA" else ("image",)
        out = args.out / "runs" / f"fold{fold}-seed{seed}" / row.replace("+", "_")
        t0 = time.time()
        res = train_feature_da(data, split.classes, cfg, da, out, stages, console=quiet)
        results.setdefault(row, {})[unit] = res["image"]["metrics"]
        if "video" in res:
            results.setdefault("V_A+DA", {})[unit] = res["video"]["metrics"]
        att = [json.loads(x) for x in (out / da.image_run / "attention.jsonl").read_text().splitlines()]
        noisy = {r["id"] for r in images if r.get("true_label") is None} | \
                {r["id"] for r in trimmed if r["weak_labels"][0] != r["true_label"]}
        if attention:  # do the lowest-weighted web samples hold the wrong labels? (ground truth of the protocol)
            lo, hi = att[:len(att) // 4], att[-(len(att) // 4):]
            results.setdefault(f"{row}:noisy_share", {})[unit] = (
                np.mean([a["id"] in noisy for a in lo]), np.mean([a["id"] in noisy for a in hi]))
        log(f"fold {fold} seed {seed} {row:>9}: top1 {res['image']['metrics']['top1']:.3f}"
            + (f", V_A+DA {res['video']['metrics']['top1']:.3f}" if "video" in res else "") + f" ({time.time() - t0:.0f} s)")
    if "omnisource_all" not in args.rows:
        return
    base, m = omnisource_all(args, feats, split, seed)
    results.setdefault("target_only", {})[unit] = base
    results.setdefault("omnisource_all", {})[unit] = m
    log(f"fold {fold} seed {seed}: target-only (k={args.k}) {base['top1']:.3f}, OmniSource all {m['top1']:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_args(ap, "folder holding ucf101-6/ and web-sports/")
    ap.add_argument("--k", type=int, default=3, help="labeled videos per class (OmniSource teacher; DA ignores the labels)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--video-epochs", type=int, default=20)
    ap.add_argument("--video-lr-scale", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--top-ratio", type=float, default=0.9, help="T = top ratio x target batch (attention)")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of the rows to run")
    ap.add_argument("--noise", type=float, default=0.5, help="share of injected pool images per target query")
    ap.add_argument("--label-noise", type=float, default=0.3, help="share of web videos with a wrong weak label")
    ap.add_argument("--dropout", type=float, default=0.5, help="dropout of the DA encoder and discriminators")
    args = ap.parse_args(argv)
    if not ddp.setup("cpu").is_main:  # under torchrun: the other ranks train and stay silent
        sys.stdout = open(os.devnull, "w")
    args.rows = args.rows.split(",")
    if "target_only" in args.rows:
        args.rows.append("omnisource_all")  # one teacher serves both
    args.data = args.data.resolve()  # feature ids hash the path
    require_data(ap, args.data)
    args.raw = False  # the raw crawl is ucf_web.py's
    torch.set_num_threads(1)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    feats = Features(args.features or args.out / "features", 128, 8, 1)
    full = protocol.target_split(args.data, 0, 0, args.test_root)
    videos = [r for r in full.manifest.rows if r["status"] == "ok"]
    feats.extract(videos)
    feats.extract([r for r in videos if r["split"] != "val"], per_second=True)
    from omnisource.data.manifest import new_row

    feats.extract([new_row("images", "image", str(f)) for f in sorted((args.data / "web-sports").glob("*/*.jpg"))])
    results: dict = {}
    for fold, val in protocol_units(args):
        for seed in range(args.seeds):
            run_unit(args, feats, fold, val, seed, results)
    rows = []
    for name in ROWS:
        runs = results.get(name, {})
        if not runs:
            continue
        s = summarise_setting(runs, results.get("target_only", {}))
        row = {"setting": name, "top1_mean": s["top1_mean"], "top1_std": s["top1_std"],
               "mca_mean": float(np.mean([m["mean_class_accuracy"] for m in runs.values()])),
               "delta_mean": s["delta_mean"], "delta_lo": s["delta_lo"], "delta_hi": s["delta_hi"],
               "folds": s["folds"], "runs": s["runs"], "paper_ucf101": PAPER.get(name)}
        if f"{name}:noisy_share" in results:
            lo, hi = zip(*results[f"{name}:noisy_share"].values())
            row.update(noisy_in_lowest_quarter=float(np.mean(lo)), noisy_in_highest_quarter=float(np.mean(hi)))
        rows.append(row)
    settings = {k: getattr(args, k) for k in ("k", "epochs", "video_epochs", "video_lr_scale", "batch", "lr", "optimizer", "tau",
                                              "beta", "top_ratio", "noise", "label_noise")}
    settings["world_size"] = ddp.context().world_size
    if ddp.context().is_main:
        (args.out / "results.json").write_text(json.dumps({**settings, "rows": rows}, indent=2))
    print(f"\n{'setting':<16}{'top1':>16}{'Δ vs target-only [95% CI]':>28}{'mca':>8}{'paper':>8}"
          f"   noisy share lowest/highest quarter of α")
    for r in rows:
        share = f"   {r['noisy_in_lowest_quarter']:.2f} / {r['noisy_in_highest_quarter']:.2f}" \
            if "noisy_in_lowest_quarter" in r else ""
        paper = f"{r['paper_ucf101']:8.1f}" if r["paper_ucf101"] else " " * 8
        delta = "" if r["setting"] == "target_only" or r["delta_mean"] != r["delta_mean"] else \
            f"{r['delta_mean'] * 100:+.2f} [{r['delta_lo'] * 100:+.2f}, {r['delta_hi'] * 100:+.2f}]"
        print(f"{r['setting']:<16}{r['top1_mean'] * 100:>10.2f} ±{r['top1_std'] * 100:4.1f}{delta:>28}"
              f"{r['mca_mean'] * 100:>8.2f}{paper}{share}")
    log(f"done in {time.time() - t0:.0f} s -> {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
