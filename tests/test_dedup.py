"""De-duplication: exact copies, and transformed copies of evaluation frames found by content."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from media_factory import write_video
from omnisource.clean.dedup import (DedupOptions, NearestNeighbours, crop_threshold, dedup_rows,
                                    exact_duplicates, fit_whitening, five_crops, search_batches)
from omnisource.data.manifest import Manifest, new_row, read_manifest, write_manifest

W, H = 96, 72
N_EVAL = 8


def texture(seed: int, w: int = 2 * W, h: int = 2 * H) -> np.ndarray:
    """A procedural scene: a background (gradient, stripes, checkerboard or colour blobs, by seed)
    under a dozen random shapes; different seeds look different to an ImageNet network."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c = rng.integers(0, 256, (3, 3)).astype(np.float32)
    style = seed % 4
    if style == 0:
        t = (xx / w)[..., None]
        img = c[0] + t * (c[1] - c[0]) + (yy / h)[..., None] * (c[2] - c[0])
    elif style == 1:
        a, f = rng.uniform(0, np.pi), rng.uniform(0.1, 0.4)
        t = (0.5 + 0.5 * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy)))[..., None]
        img = c[0] + t * (c[1] - c[0])
    elif style == 2:
        cell = int(rng.integers(6, 16))
        t = (((xx // cell) + (yy // cell)) % 2)[..., None]
        img = c[0] + t * (c[1] - c[0])
    else:
        img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 8) * 3 - 255
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 2)
    img = np.ascontiguousarray(np.clip(img + noise, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(8, 15))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            cv2.circle(img, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(6, h // 4)), colour, -1)
        elif kind == 1:
            x, y = int(rng.integers(w)), int(rng.integers(h))
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, w // 3)), y + int(rng.integers(8, h // 3))), colour, -1)
        else:
            pts = rng.integers(0, (w, h), size=(3, 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
    return img


def frame_of(seed: int, t: int) -> np.ndarray:
    """Frame t of the 'video' of a texture: a window panning slowly across it."""
    big = texture(seed)
    return np.ascontiguousarray(big[10 + t: 10 + t + H, 20 + 2 * t: 20 + 2 * t + W])


def write_clip(path: Path, seed: int, n: int = 10, fps: int = 10) -> Path:
    return write_video(path, n, size=(W, H), fps=fps, frame_fn=lambda i: frame_of(seed, i))


def save(path: Path, img: np.ndarray, quality: int = 95) -> Path:
    Image.fromarray(img).save(path, quality=quality)
    return path


def make_sets(d: Path):
    """Evaluation videos (split val), one training video, and a web pool with planted copies."""
    d.mkdir(parents=True, exist_ok=True)
    target = [new_row("target", "video", str(write_clip(d / f"eval{s}.mp4", s)), split="val", label=0)
              for s in range(1, 1 + N_EVAL)]
    target.append(new_row("target", "video", str(write_clip(d / "train9.mp4", 9)), split="train", label=0))
    e1, e2, e3 = (r["id"] for r in target[:3])
    f = {k: frame_of(*k) for k in ((1, 3), (2, 6), (3, 1), (1, 8))}
    crop = f[(1, 3)][6:66, 2:86]  # 83 % x 88 % of the frame, off-centre
    planted = {
        "crop": (save(d / "crop.jpg", cv2.resize(crop, (110, 80))), e1),
        "resize": (save(d / "resize.png", cv2.resize(f[(2, 6)], (200, 150))), e2),
        "jpeg": (save(d / "jpeg.jpg", f[(3, 1)], quality=30), e3),
        "flip": (save(d / "flip.jpg", f[(1, 8)][:, ::-1].copy()), e1),
    }
    pool = {f"pool{s}": save(d / f"pool{s}.jpg", frame_of(s, 2)) for s in range(20, 28)}
    pool["train"] = save(d / "train_frame.jpg", frame_of(9, 4))  # a training video is not evaluation
    web = [new_row("web", "image", str(p), id=k, weak_labels=["q"]) for k, (p, _) in planted.items()]
    web += [new_row("web", "image", str(p), id=k, weak_labels=["q"]) for k, p in pool.items()]
    (d / "pool20_again.jpg").write_bytes((d / "pool20.jpg").read_bytes())
    web.append(new_row("web", "image", str(d / "pool20_again.jpg"), id="pool20_again", weak_labels=["q"]))
    (d / "eval_copy.mp4").write_bytes(Path(target[1]["path"]).read_bytes())
    web.append(new_row("web", "video", str(d / "eval_copy.mp4"), id="eval_copy", weak_labels=["q"]))
    web.append(new_row("web", "image", str(d / "gone.jpg"), id="failed", status="rejected", reason="http 404"))
    return target, web, {k: e for k, (_, e) in planted.items()}


@pytest.fixture(scope="module")
def backbone():
    from omnisource.models.registry import create_backbone

    return create_backbone("efficientnet_lite0", pretrained="imagenet").eval()


def test_units():
    frame = np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)
    crops = five_crops(frame, 0.8)
    assert [c.shape[:2] for c in crops] == [(32, 40)] * 5
    assert (crops[0] == frame[:32, :40]).all() and (crops[3] == frame[8:, 10:]).all()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)) * np.linspace(0.1, 10, 16)
    full = fit_whitening(x.astype(np.float32), shrinkage=0.0)
    y = (x - full.mean) @ full.matrix
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(16), atol=1e-3)
    centred = fit_whitening(x.astype(np.float32), shrinkage=1.0)
    np.testing.assert_allclose(np.abs(centred.matrix @ centred.matrix.T) * (x.var(0).mean()), np.eye(16), atol=0.05)
    assert np.allclose(np.linalg.norm(full(x), axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="shrinkage"):
        fit_whitening(x, 1.5)
    # Fewer frames than dimensions (Gram-matrix path): same similarities as the D x D eigen-decomposition.
    few, q = x[:10].astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    for s in (0.5, 0.97):
        w = fit_whitening(few, s)
        mu = few.mean(0).astype(np.float64)
        ev, vecs = np.linalg.eigh(np.cov(few - mu, rowvar=False))
        ev = np.maximum(ev, 0)
        ref = vecs / np.sqrt((1 - s) * ev + s * ev.mean())

        def unit(z):
            return z / np.linalg.norm(z, axis=1, keepdims=True)

        np.testing.assert_allclose(w(q) @ w(few).T, unit((q - mu) @ ref) @ unit((few - mu) @ ref).T, atol=1e-5)
    # Crop similarity: identical crops -> 1.
    same = np.repeat(rng.normal(size=(3, 1, 16)), 5, axis=1).astype(np.float32)
    assert crop_threshold(same, centred)[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("exact_max", [10_000, 100])
def test_nearest_neighbours_flat_and_ivf(exact_max):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(2000, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    nn = NearestNeighbours(base, exact_max=exact_max, nlist=8, nprobe=4)
    assert nn.kind == ("flat" if exact_max > 2000 else "ivf8")
    picks = rng.choice(2000, 50, replace=False)
    queries = base[picks] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    ident = fit_whitening(base, 1.0)
    ident.mean[:] = 0
    ident.matrix[:] = np.eye(32, dtype=np.float32)
    got = [idx for _, idx in search_batches(nn, ident, (queries[i:i + 16] for i in range(0, 50, 16)))]
    assert (np.concatenate(got) == picks).mean() >= 0.95


def test_exact_duplicates(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"A" * 10)
    (tmp_path / "b.jpg").write_bytes(b"A" * 10)
    (tmp_path / "c.jpg").write_bytes(b"C" * 10)
    (tmp_path / "e.mp4").write_bytes(b"C" * 10)
    rows = [new_row("w", "image", str(tmp_path / n), id=n) for n in ("a.jpg", "b.jpg", "c.jpg")]
    ev = [new_row("t", "video", str(tmp_path / "e.mp4"), id="E")]
    out = exact_duplicates(rows, ev)
    assert [r["status"] for r in out] == ["ok", "duplicate", "duplicate"]
    assert (out[1]["dup_of"], out[1]["dup_kind"]) == ("a.jpg", "exact")
    assert (out[2]["dup_of"], out[2]["dup_kind"]) == ("E", "exact-eval")


def test_planted_copies_found_by_content(tmp_path, backbone):
    target, web, truth = make_sets(tmp_path / "data")
    ev = [r for r in target if r["split"] == "val"]
    opts = DedupOptions(size=64, eval_fps=5, web_frames=2, threshold_frames=100, batch_size=32)
    rows, report = dedup_rows(web, ev, backbone, tmp_path / "cache", opts, eval_cache=tmp_path / "ecache")
    by = {r["id"]: r for r in rows}
    for name, eid in truth.items():
        assert by[name]["status"] == "duplicate", (name, by[name]["similarity"], report["threshold"])
        assert by[name]["dup_of"] == eid and by[name]["dup_kind"] == "near-eval"
        assert by[name]["similarity"] >= report["threshold"]
    for name in [k for k in by if k.startswith("pool")] + ["train"]:
        if name == "pool20_again":
            assert (by[name]["status"], by[name]["dup_of"], by[name]["dup_kind"]) == ("duplicate", "pool20", "exact")
        else:
            assert by[name]["status"] == "ok" and by[name]["similarity"] < report["threshold"], (name, by[name])
    assert (by["eval_copy"]["dup_kind"], by["eval_copy"]["dup_of"]) == ("exact-eval", ev[1]["id"])
    assert by["failed"]["status"] == "rejected" and by["failed"]["similarity"] is None
    assert report["eval_frames"] == 5 * N_EVAL and report["eval_vectors"] == 3 * 5 * N_EVAL
    assert report["index"] == "flat" and report["near"] == 4
    assert report["exact"] == 2 and 0 < report["threshold"] < 1
    assert report["threshold"] == pytest.approx(report["crop_similarity_mean"])
    # The threshold is measured on these evaluation frames: other frames give another value.
    other = [r for r in target if r["split"] == "train"]
    _, rep2 = dedup_rows(web, other, backbone, tmp_path / "cache", opts, eval_cache=tmp_path / "ecache")
    assert rep2["threshold"] != pytest.approx(report["threshold"], abs=1e-4)
    # Re-running on flagged rows gives the same rows (flags are cleared first).
    again, _ = dedup_rows(rows, ev, backbone, tmp_path / "cache", opts, eval_cache=tmp_path / "ecache")
    assert again == rows


def test_stage_and_cli(tmp_path):
    from typer.testing import CliRunner

    from omnisource.cli import app

    target, web, truth = make_sets(tmp_path / "data")
    ws = tmp_path / "ws"
    write_manifest(Manifest(target, ["x"]), ws / "manifests" / "target.parquet")
    path = write_manifest(Manifest(web, []), ws / "manifests" / "web_s.parquet")
    args = ["clean", "dedup", "-w", str(ws), "--size", "64", "--web-frames", "2", "features.workers=0",
            "features.batch_size=32"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in read_manifest(path).rows}
    assert all(rows[k]["dup_of"] == e for k, e in truth.items())
    report = json.loads(path.with_suffix(".dedup.json").read_text())
    assert report["near"] == 4 and report["exact"] == 2 and report["threshold_source"] == "crops"
    assert list((ws / "features").glob("dedup-eval-*.npz"))
    res = CliRunner().invoke(app, ["clean", "dedup", "-w", str(ws), "--exact-only"])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in read_manifest(path).rows}
    assert rows["crop"]["status"] == "ok" and rows["pool20_again"]["status"] == "duplicate"
    res = CliRunner().invoke(app, ["clean", "dedup", "-w", str(ws), "--eval-split", "nothing"])
    assert res.exit_code == 2 and "no evaluation rows" in res.output


def _neighbours(owners_times, web_times, hits_per_frame, sim=0.9):
    """(sims, hits) arrays for temporal_match from per-frame lists of index positions."""
    k = max(len(h) for h in hits_per_frame)
    hits = np.full((len(web_times), k), -1, np.int64)
    sims = np.zeros((len(web_times), k), np.float32)
    for i, h in enumerate(hits_per_frame):
        hits[i, :len(h)] = h
        sims[i, :len(h)] = sim
    return sims, hits


def test_temporal_match_counts_frames_in_order():
    from omnisource.clean.similarity import temporal_match

    # Evaluation index: row 0 sampled every 0.5 s over 10 s, row 1 likewise.
    times = np.concatenate([np.arange(20) * 0.5, np.arange(20) * 0.5])
    owners = np.repeat([0, 1], 20)
    web = np.arange(6) + 0.5  # a 6 s web video at 1 fps
    # Frames 2..5 copy row 0 from its 3.0 s on (offset +0.5 s); frames 0, 1 hit row 1 anywhere.
    hits = [[20 + 15], [20 + 2], [6], [8], [10], [12]]
    sims, h = _neighbours((owners, times), web, hits)
    m = temporal_match(web, sims, h, owners, times, threshold=0.5)
    assert (m.owner, m.frames) == (0, 4)
    assert m.offset_s == pytest.approx(0.5) and m.web_time_s == pytest.approx(2.5)
    assert m.similarity == pytest.approx(0.9)
    # Under the threshold nothing matches.
    assert temporal_match(web, sims, h, owners, times, threshold=0.95).owner == -1
    # Look-alike: four frames hit row 0, but at scattered times (offsets 4, -1, 7, -3.5 s).
    scattered = [[9], [1], [19], [0], [], []]
    sims, h = _neighbours((owners, times), web, scattered)
    in_order = temporal_match(web, sims, h, owners, times, threshold=0.5)
    assert in_order.frames == 1
    assert temporal_match(web, sims, h, owners, times, threshold=0.5, tolerance_s=None).frames == 4
    # Several neighbours of one frame in the same window count once.
    dup = [[6, 7], [8, 9]]
    sims, h = _neighbours((owners, times), web[2:4], dup)
    assert temporal_match(web[2:4], sims, h, owners, times, threshold=0.5).frames == 2


def test_video_copy_needs_several_frames(tmp_path):
    """A video matching one evaluation frame is kept; one whose frames follow an evaluation
    video in order is flagged with its evidence (the clip, frames matched, where)."""
    from omnisource.clean.near import EvalIndex, _flag_video, DedupOptions

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 8)).astype(np.float32)
    index = EvalIndex(feats, np.repeat([0, 1], 20), np.tile(np.arange(20) * 0.5, 2), ["e0", "e1"],
                      np.zeros((0, 5, 8), np.float32), {})
    web = np.arange(5) + 0.5
    opts = DedupOptions(min_frames=3)
    sims, h = _neighbours(None, web, [[4], [], [], [], []])
    row = {"id": "w"}
    assert not _flag_video(row, web, sims, h, index, 0.5, opts) and row["similarity"] == pytest.approx(0.9)
    sims, h = _neighbours(None, web, [[21], [23], [25], [27], []])
    row = {"id": "w"}
    assert _flag_video(row, web, sims, h, index, 0.5, opts)
    assert (row["dup_of"], row["dup_frames"], row["status"]) == ("e1", 4, "duplicate")
    assert row["dup_web_time_s"] == pytest.approx(0.5) and row["dup_time_s"] == pytest.approx(0.5)
    assert "4 of 5 frames" in row["reason"]
    # A 2 s video (two frames) needs both, not three.
    sims, h = _neighbours(None, web[:2], [[21], [23]])
    assert _flag_video({"id": "s"}, web[:2], sims, h, index, 0.5, opts)


def test_video_copy_spliced_into_other_material(tmp_path, backbone):
    """A web video that plays 3 s of an evaluation video (re-encoded at another size) after 2 s
    of other material is flagged against it, with where and how many frames; a clip of another
    scene is not; demanding more frames than the copy has keeps it."""
    d = tmp_path / "v"
    d.mkdir()
    ev = [new_row("target", "video", str(write_clip(d / f"long{s}.mp4", s, n=36)), split="val", label=0)
          for s in (30, 31, 32)]
    other = [frame_of(41, t) for t in range(20)]
    copy = [cv2.resize(frame_of(31, t), (120, 90)) for t in range(5, 35)]
    spliced = write_video(d / "spliced.mp4", 50, size=(120, 90), fps=10,
                          frame_fn=lambda i: cv2.resize(other[i], (120, 90)) if i < 20 else copy[i - 20])
    look = write_clip(d / "look.mp4", 45, n=36)  # another scene (stripes; the evaluation clips are not)
    web = [new_row("web", "video", str(spliced), id="spliced"), new_row("web", "video", str(look), id="look")]
    opts = DedupOptions(size=64, eval_fps=5, threshold_frames=30, batch_size=32)
    rows, report = dedup_rows(web, ev, backbone, tmp_path / "cache", opts, eval_cache=tmp_path / "ecache",
                              seconds_dir=tmp_path / "seconds")
    by = {r["id"]: r for r in rows}
    s = by["spliced"]
    assert (s["status"], s["dup_of"], s["dup_kind"]) == ("duplicate", ev[1]["id"], "near-eval"), (s, report)
    assert s["dup_frames"] >= 3 and s["dup_web_time_s"] >= 2.0
    assert abs(s["dup_time_s"] - (s["dup_web_time_s"] - 2.0 + 0.5)) <= 1.0  # copy starts at its 0.5 s
    assert by["look"]["status"] == "ok" and by["look"]["dup_of"] is None, (by["look"], report["threshold"])
    assert report["near"] == 1 and report["checked"] == 2 and report["min_frames"] == 2
    assert list((tmp_path / "seconds").glob("shard-*.safetensors"))  # the per-second cache, reusable
    strict = DedupOptions(size=64, eval_fps=5, threshold_frames=30, batch_size=32, min_frames=10)
    rows, _ = dedup_rows(web, ev, backbone, tmp_path / "cache", strict, eval_cache=tmp_path / "ecache",
                         seconds_dir=tmp_path / "seconds")
    assert {r["id"]: r["status"] for r in rows} == {"spliced": "ok", "look": "ok"}
