"""OmniSource in pixel mode on real data: whole networks on UCF101-6 + web-sports + untrimmed web videos.

    nice -n 15 python benchmarks/pixel_ucf.py --data ../shared/data --out bench-out/pixel_ucf [--k 3] [--epochs 12]

Reduced to fit 2 CPU cores: one seed, 112 px, ``tsn_efficientnet_lite0`` (ImageNet) with 4
segments for teacher and student. The protocol of shared/data/README.md (omnisource.evaluate.protocol):
k labeled videos per class from the groups outside the first group fold, validation on that fold
(groups 08, 12, 16, 20, 24); web images = the four matching web-sports queries with 50 %
injected pool images; untrimmed web videos = three unused training-group clips of different
classes played in a row (written once as real files under --out, 128 px), weak label = the
class of one of them. The whole chain is ``omnisource run``
(``runner.run_pipeline``): the target-only run is both the baseline and the teacher; it scores
the images and the untrimmed videos' ``--clip-seconds`` clips (``omni.untrimmed=clips``), and
the student trains on target + kept images + kept clips (batch ratio 2:1:1), with the same
recipe (epochs, lr, batch) as the target-only run. Writes results.json (top-1 / mean class
accuracy of both runs, kept counts, the share of kept clips that overlap their video's planted
segment, each stage's wall seconds, the load average) and prints a table and the stage times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).parent))
from ucf_web import log, require_data  # noqa: E402

from omnisource.config import dump_config, load_config  # noqa: E402
from omnisource.data import media  # noqa: E402
from omnisource.data.manifest import Manifest, atomic_write_text, read_manifest, write_manifest  # noqa: E402
from omnisource.data.prepare import output_size  # noqa: E402
from omnisource.evaluate import protocol  # noqa: E402
from omnisource.workspace import Workspace  # noqa: E402


def concat_videos(parts: list[str], dst: Path, short_side: int = 128) -> list[float]:
    """Play ``parts`` in a row into one H.264 file (1 s GOPs); returns each part's start (s) and the end."""
    if dst.exists() and dst.with_suffix(".json").exists():
        return json.loads(dst.with_suffix(".json").read_text())
    tmp = dst.with_name(f".{dst.name}.tmp")
    dst.parent.mkdir(parents=True, exist_ok=True)
    bounds, n, rate = [0.0], 0, Fraction(25)
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = None
        for part in parts:
            for _, frame in media.iter_video(part, 0, None):
                if stream is None:
                    size = output_size(frame.width, frame.height, short_side)
                    stream = out.add_stream("libx264", rate=rate, options={"crf": "23", "preset": "veryfast"})
                    stream.width, stream.height = size
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.gop_size = 25
                small = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="AREA")
                small.pts, small.time_base = n, 1 / rate
                out.mux(stream.encode(small))
                n += 1
            bounds.append(n / float(rate))
        out.mux(stream.encode(None))
    tmp.replace(dst)
    atomic_write_text(dst.with_suffix(".json"), json.dumps(bounds))
    return bounds


def build_inputs(args, out: Path) -> tuple[Path, Path, Path, dict]:
    """Target manifest (train/val), web image manifest, untrimmed web video manifest, truth."""
    split = protocol.target_split(args.data, args.k, args.seed)
    target = Manifest([r for r in split.manifest.rows if r["split"] in ("train", "val")], split.classes)
    images = protocol.web_images(args.data, split.classes, args.noise, args.seed)
    _, specs = protocol.web_videos(split, 0.0, args.seed)
    specs = specs[:args.untrimmed] if args.untrimmed else specs
    rows, truth = [], {}
    t0 = time.time()
    for s in specs:
        path = out / "untrimmed" / f"{s['id']}.mp4"
        bounds = concat_videos([p["path"] for p in s["parts"]], path)
        k = s["true_segment"]
        truth[str(path)] = (bounds[k], bounds[k + 1])
        rows.append({**protocol.untrimmed_rows([s])[0], "path": str(path), "source": "untrimmed"})
    log(f"untrimmed web videos: {len(rows)} written/found in {time.time() - t0:.0f} s")
    paths = (write_manifest(target, out / "inputs" / "target.parquet"),
             write_manifest(Manifest(images, []), out / "inputs" / "web_images.parquet"),
             write_manifest(Manifest(rows, []), out / "inputs" / "web_untrimmed.parquet"))
    return (*paths, truth)


def config(args, target: Path, images: Path, untrimmed: Path, ws: Path):
    web = (f"web=[{{name: images, kind: image, format: manifest, root: '{images}', batch_ratio: 0.5, "
           f"query_map: {json.dumps(protocol.QUERY_MAP)}}}, "
           f"{{name: untrimmed, kind: untrimmed, format: manifest, root: '{untrimmed}', batch_ratio: 0.5}}]")
    return load_config(None, [
        f"workspace={ws}", "mode=pixels", "target.format=manifest", f"target.annotations={target}",
        "model.name=tsn_efficientnet_lite0", "model.pretrained=imagenet", "model.dropout=0.5",
        f"media.input_size={args.size}", f"media.resize_short={round(args.size * 8 / 7)}",
        f"media.num_segments={args.segments}", "media.test_views=1",
        f"train.epochs={args.epochs}", f"train.batch_size={args.batch}", "train.optimizer=adamw",
        f"train.lr={args.lr}", "train.weight_decay=0.01", f"train.num_workers={args.workers}",
        f"train.eval_every={args.epochs}", f"train.seed={args.seed}",
        f"omni.filter={args.filter}", f"omni.threshold={args.threshold}", "omni.untrimmed=clips",
        f"omni.frame_threshold={args.threshold}",
        f"omni.clip_seconds={args.clip_seconds}", f"omni.score_views={args.views}", web])


def clip_overlap(ws: Workspace, truth: dict) -> dict:
    clips = read_manifest(ws.web("untrimmed", "train")).rows
    hit = sum(min(r["end_s"], truth[r["path"]][1]) - max(r["start_s"], truth[r["path"]][0]) > 0 for r in clips)
    return {"kept_clips": len(clips), "videos_with_kept_clips": len({r["path"] for r in clips}),
            "clips_overlapping_planted_segment": hit}


def stage_seconds(ws: Workspace) -> dict[str, float]:
    """Wall seconds of each finished stage, from its stamp (in the order the stages finished)."""
    stamps = sorted(ws.stamps_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
    return {p.stem: s["seconds"] for p in stamps if "seconds" in (s := json.loads(p.read_text()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("bench-out/pixel_ucf"))
    ap.add_argument("--k", type=int, default=3, help="labeled videos per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.5, help="share of injected pool images per query")
    ap.add_argument("--untrimmed", type=int, default=0, help="use only the first N untrimmed videos (0 = all)")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--clip-seconds", type=float, default=4.0)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--filter", default="both", help="omni.filter (the product's default: both)")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="omni.threshold and omni.frame_threshold (the product's default: 0.5)")
    args = ap.parse_args(argv)
    require_data(ap, args.data)
    from omnisource import pipeline
    from omnisource.report import write_report
    from omnisource.runner import run_pipeline

    args.out.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.time(), os.getloadavg()
    target, images, untrimmed, truth = build_inputs(args, args.out)
    inputs_s = time.time() - t0
    ws = Workspace(args.out / "ws")
    cfg = config(args, target, images, untrimmed, ws.root)
    ws.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ws.config_file, dump_config(cfg))
    if not ws.target("prepared").exists():  # re-encode the target videos once to 128 px, 1 s GOPs
        pipeline.import_target(cfg, ws)
        pipeline.validate_target(cfg, ws)
        pipeline.prepare_target(cfg, ws)
    results = run_pipeline(cfg, ws)
    stages = {p.stem: json.loads(p.read_text()).get("kept") for p in sorted((ws.root / "selection").glob("*.json"))}
    out = {"settings": vars(args) | {"data": str(args.data), "out": str(args.out)},
           "runs": {name: {k: m[k] for k in ("top1", "mean_class_accuracy", "num_samples")}
                    for name, m in results.items()},
           "kept": stages, "untrimmed": clip_overlap(ws, truth), "seconds": round(time.time() - t0),
           "stage_seconds": {"inputs": round(inputs_s, 1), **stage_seconds(ws)},
           "load_average": {"start": load0, "end": os.getloadavg()}}
    atomic_write_text(args.out / "results.json", json.dumps(out, indent=2))
    write_report(cfg, ws)
    print("stage times (wall s; stages already up to date keep the time of the run that made them):")
    for name, sec in out["stage_seconds"].items():
        print(f"  {name:<28}{sec:>9.1f}")
    print(f"load average (1 min) at start {load0[0]:.1f}, at end {out['load_average']['end'][0]:.1f}")
    print(f"{'run':<14}{'top-1 %':>9}{'mca %':>9}")
    for name, m in out["runs"].items():
        print(f"{name:<14}{100 * m['top1']:>9.2f}{100 * m['mean_class_accuracy']:>9.2f}")
    print(f"kept: {stages}; untrimmed: {out['untrimmed']}; {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
