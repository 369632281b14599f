"""Sub-Pseudo Labels vs weak-label / teacher / agreement pre-training on real data (UCF101-6).

    python benchmarks/spl.py --data ../shared/data --out bench-out/spl [--test-root DIR] [--seeds 3] [--k 10]

Protocol of shared/data/README.md (benchmarks/ucf_web.py's): cross-validation over 4 group folds
of 08–25, ≥ 3 seeds per fold, every method paired with ``none`` (no web pre-training, the same
evaluation) on the same fold, seed and subset: mean difference with a 95 % bootstrap interval.
Feature mode. The training-group videos not drawn as labeled
act as weakly-labelled web videos: half trimmed (weak label flipped at --label-noise), half
concatenated three by three into untrimmed videos (weak label = the class of one part) and cut
into --clip-seconds clips. A teacher (TSN head on the k labeled videos) predicts every clip; each
method turns (weak label, teacher prediction) into pre-training labels (omnisource.select.spl).

"Pre-training" in feature mode: a temporal head (Conv1d over the 8 cached EfficientNet-Lite0
frame features + ReLU, the *body*, then ``fc``) is trained on the labelled web clips with
square-root class resampling; then on the k labeled target videos per class it is
fine-tuned (new ``fc``, body at --body-lr-scale × lr) or linear-probed (body frozen, new ``fc``).
Row ``none``: the same head without web pre-training (trained from scratch / random frozen body).
Features come from the ucf_web benchmark's cache layout (--features, default <out>/features).
Writes results.json and prints the table with the noise ratio of the built web set.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ucf_web import (Features, _to_t, add_protocol_args, base_config, labeled_arrays, log,  # noqa: E402
                     protocol_units, require_data, train_head)  # the shared pieces

from omnisource.config import TrainConfig  # noqa: E402
from omnisource.data.datasets import FeatureDataset, make_loader  # noqa: E402
from omnisource.data.resample import ResampledSampler  # noqa: E402
from omnisource.evaluate import protocol  # noqa: E402
from omnisource.evaluate.folds import summarise_setting  # noqa: E402
from omnisource.features.cache import load_features  # noqa: E402
from omnisource.models import create_head  # noqa: E402
from omnisource.select import spl  # noqa: E402
from omnisource.teacher.score import head_probs  # noqa: E402
from omnisource.train.loop import fit  # noqa: E402
from omnisource.train.probe import transfer  # noqa: E402
from omnisource.transform.untrimmed import clip_windows  # noqa: E402
from omnisource.weak.labels import tag_sample_weights  # noqa: E402

METHODS = ["none", "weak", "teacher", "agreement", "spl_m", "spl_d", "spl_b"]
QUIET = Console(quiet=True)


def web_set(split, feats: Features, args, seed: int):
    """(X (S, T, D), weak class (S,), true class (S,)) of the web clips built from unused videos."""
    classes = split.classes
    trimmed, specs = protocol.web_videos(split, args.label_noise, seed)
    xs, weak, true = [], [], []
    for r, x in zip(trimmed, feats.clips([r["parent_id"] for r in trimmed])):
        xs.append(x)
        weak.append(classes.index(r["weak_labels"][0]))
        true.append(classes.index(r["true_label"]))
    fps = load_features(feats.fps, [p["id"] for s in specs for p in s["parts"]])
    for s in specs:
        parts = [fps[p["id"]].astype(np.float32) for p in s["parts"]]
        ends = np.cumsum([len(p) for p in parts])
        video = np.concatenate(parts)
        for a, b in clip_windows(float(len(video)), args.clip_seconds):
            clip = video[int(a):max(int(a) + 1, math.ceil(b))]
            seconds = np.arange(int(a), int(a) + len(clip))
            part = np.bincount(np.searchsorted(ends, seconds, side="right"), minlength=len(parts)).argmax()
            xs.append(_to_t(clip, feats.frames))
            weak.append(classes.index(s["weak_labels"][0]))
            true.append(s["parts"][part]["label"])
    return np.stack(xs).astype(np.float32), np.array(weak), np.array(true)


def pretrain(x, y, num_classes: int, args, seed: int):
    """The temporal head trained on web clips with labels ``y`` (−1 = dropped), square-root resampled."""
    torch.manual_seed(seed)
    head = create_head("temporal", x.shape[-1], num_classes, x.shape[1], dropout=0.5, hidden_dim=args.hidden)
    keep = y >= 0
    if keep.sum() == 0:
        return head
    ds = FeatureDataset(x[keep], y[keep], x.shape[1], True, seed)
    weights = tag_sample_weights([[int(v)] for v in y[keep]], num_classes, power=0.5)
    steps = max(1, int(keep.sum()) // args.batch)
    loader = DataLoader(ds, batch_size=args.batch, sampler=ResampledSampler(weights, steps * args.batch, seed),
                        drop_last=True)
    cfg = TrainConfig(epochs=args.pretrain_epochs, batch_size=args.batch, optimizer="adamw", lr=1e-3,
                      weight_decay=1e-4, device="cpu", seed=seed, eval_every=10**6)
    tmp = Path(tempfile.mkdtemp(prefix="spl-pre-"))
    try:
        fit(head, loader, None, cfg, tmp, [str(i) for i in range(num_classes)], console=QUIET)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return head


def evaluate(head, how: str, data, classes, args, seed: int, body_lr_scale: float) -> dict:
    x, y, xv, yv = data
    torch.manual_seed(seed)
    train = make_loader(FeatureDataset(x, y, x.shape[1], True, seed), 8, True)
    val = make_loader(FeatureDataset(xv, yv, xv.shape[1]), 256, False)
    cfg = TrainConfig(epochs=max(args.epochs, math.ceil(args.steps / len(train))), batch_size=8, optimizer="adamw",
                      lr=1e-3, weight_decay=1e-4, device="cpu", seed=seed, eval_every=10**6)
    tmp = Path(tempfile.mkdtemp(prefix="spl-ft-"))
    try:
        return transfer(copy.deepcopy(head), how, train, val, cfg, tmp, classes, body_lr_scale, console=QUIET)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_unit(args, feats: Features, fold, val_groups, seed: int, results: dict, stats: dict) -> None:
    split = protocol.target_split(args.data, args.k, seed, args.test_root, val_groups)
    classes, n = split.classes, len(split.classes)
    data = labeled_arrays(feats, split)
    x, y, xv, yv = data
    teacher, base, _ = train_head(base_config(seed), data, classes)
    unit = (fold, seed)
    results.setdefault(("teacher_tsn", "target"), {})[unit] = base
    wx, weak, true = web_set(split, feats, args, seed)
    pred = head_probs(teacher, list(wx), feats.frames).argmax(1)
    c = spl.confusion(weak, pred, n)
    s = {"clips": len(weak), "noise_ratio": spl.noise_ratio(c), "true_noise": float((weak != true).mean()),
         "teacher_clip_acc": float((pred == true).mean())}
    log(f"fold {fold} seed {seed}: {s['clips']} web clips, noise ratio (teacher) {s['noise_ratio']:.3f}, "
        f"true label noise {s['true_noise']:.3f}, teacher clip accuracy {s['teacher_clip_acc']:.3f}")
    for method in METHODS:
        if method == "none":
            torch.manual_seed(seed)
            head = create_head("temporal", x.shape[-1], n, feats.frames, dropout=0.5, hidden_dim=args.hidden)
            scale, kept = 1.0, 0
        else:
            lab = spl.make_labels(method, weak, pred, n, args.K)
            head = pretrain(wx, lab.labels, lab.num_classes, args, seed)
            scale, kept = args.body_lr_scale, int((lab.labels >= 0).sum())
            s.setdefault("cover", {})[method] = lab.cover
            s.setdefault("classes", {})[method] = lab.num_classes
        for how in ("finetune", "probe"):
            m = evaluate(head, how, (x, y, xv, yv), classes, args, seed, scale)
            results.setdefault((method, how), {})[unit] = m
            log(f"fold {fold} seed {seed} {method:>9} {how:>8}: top1 {m['top1']:.3f} mca {m['mean_class_accuracy']:.3f} "
                f"(web clips used {kept})")
    stats[unit] = s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_args(ap, "folder holding ucf101-6/")
    ap.add_argument("--k", type=int, default=10, help="labeled videos per class")
    ap.add_argument("--K", type=int, default=2, help="SPL-M / SPL-D keep K·N classes")
    ap.add_argument("--label-noise", type=float, default=0.3, help="share of trimmed web videos with a wrong weak label")
    ap.add_argument("--clip-seconds", type=float, default=4.0, help="clip length the untrimmed videos are cut into")
    ap.add_argument("--hidden", type=int, default=64, help="width of the temporal head's body")
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--steps", type=int, default=200, help="minimum fine-tuning / probe iterations")
    ap.add_argument("--epochs", type=int, default=15, help="minimum passes over the target set")
    ap.add_argument("--batch", type=int, default=32, help="pre-training batch size")
    ap.add_argument("--body-lr-scale", type=float, default=0.1, help="fine-tuning lr of the body / lr of fc")
    args = ap.parse_args(argv)
    args.data = args.data.resolve()  # feature ids hash the path
    require_data(ap, args.data, ("ucf101-6/videos",))
    torch.set_num_threads(1)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    feats = Features(args.features or args.out / "features", 128, 8, 1)
    full = protocol.target_split(args.data, 0, 0, args.test_root)
    videos = [r for r in full.manifest.rows if r["status"] == "ok"]
    feats.extract(videos)  # no-op when cached
    feats.extract([r for r in videos if r["split"] != "val"], per_second=True)
    results, stats = {}, {}
    for fold, val in protocol_units(args):
        for seed in range(args.seeds):
            run_unit(args, feats, fold, val, seed, results, stats)
    rows = []
    for (method, how), runs in results.items():
        base = results[("none", how)] if how != "target" else runs
        r = summarise_setting(runs, base)
        rows.append({"method": method, "eval": how, "k": args.k, "top1_mean": r["top1_mean"], "top1_std": r["top1_std"],
                     "mca_mean": float(np.mean([m["mean_class_accuracy"] for m in runs.values()])),
                     "delta_mean": r["delta_mean"], "delta_lo": r["delta_lo"], "delta_hi": r["delta_hi"],
                     "folds": r["folds"], "runs": r["runs"]})
    web = {key: float(np.mean([s[key] for s in stats.values()])) for key in
           ("clips", "noise_ratio", "true_noise", "teacher_clip_acc")}
    web["cover"] = {m: float(np.mean([s["cover"][m] for s in stats.values()])) for m in METHODS[1:]}
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "web": web, "args": {
        k: str(v) for k, v in vars(args).items()}}, indent=2))
    print(f"\nweb set: {web['clips']:.0f} clips, noise ratio (weak vs teacher, off-diagonal / total) "
          f"{web['noise_ratio']:.3f}, true label noise {web['true_noise']:.3f}, "
          f"teacher clip accuracy {web['teacher_clip_acc']:.3f} (mean of {len(stats)} runs)")
    print(f"\n{'method':<12}{'SCR':>6}{'finetune top1':>16}{'Δ vs none [95% CI]':>26}{'probe top1':>16}"
          f"{'Δ vs none [95% CI]':>26}")
    by = {(r["method"], r["eval"]): r for r in rows}
    for method in ["teacher_tsn"] + METHODS:
        cells = []
        for how in (("target",) if method == "teacher_tsn" else ("finetune", "probe")):
            r = by[(method, how)]
            delta = "" if method in ("none", "teacher_tsn") else \
                f"{r['delta_mean'] * 100:+.2f} [{r['delta_lo'] * 100:+.2f}, {r['delta_hi'] * 100:+.2f}]"
            cells += [f"{r['top1_mean'] * 100:.2f} ±{r['top1_std'] * 100:4.1f}", delta]
        scr = f"{web['cover'][method]:.2f}" if method in web["cover"] else "-"
        print(f"{method:<12}{scr:>6}" + "".join(f"{c:>{16 if i % 2 == 0 else 26}}" for i, c in enumerate(cells)))
    log(f"done in {time.time() - t0:.0f} s -> {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
