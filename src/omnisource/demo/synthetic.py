"""Procedural demo data: short action clips and noisy web-like stills of the same classes.

Each class is a shape with its own motion over a textured background. Appearance (colour,
size, position, background) varies per clip and clips are grouped like UCF101 (``_gGG_cCC``),
so a group split behaves as on real data. Web images show the same shapes in a different
style (flat gradients, larger objects, JPEG) and a seeded share of them carry a wrong query,
with the ground truth recorded so filter precision and recall can be measured.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np

CLASSES = ["bouncing_ball", "sliding_box", "spinning_bar", "growing_ring", "zigzag_triangle", "blinking_cross"]
QUERIES = {c: c.replace("_", " ") for c in CLASSES}


def _background(rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    if style == "texture":
        low = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
        bg = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0, 12, (size, size, 3))
        return np.clip(bg.astype(np.float64) * 0.6 + noise + 40, 0, 255).astype(np.uint8)
    # "web" style: a smooth two-colour gradient, like a studio photo.
    a, b = rng.integers(60, 256, 3), rng.integers(0, 200, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    grad = (a * (1 - t) + b * t) * np.ones((size, size, 3))
    return np.clip(grad, 0, 255).astype(np.uint8)


def _draw(img: np.ndarray, cls: str, phase: float, colour: tuple, scale: float, centre: np.ndarray) -> None:
    s = img.shape[0]
    r = int(s * 0.12 * scale)
    cx, cy = centre
    if cls == "bouncing_ball":
        y = cy + (abs(np.sin(np.pi * 2 * phase)) - 0.5) * s * 0.5
        cv2.circle(img, (int(cx), int(y)), r, colour, -1, cv2.LINE_AA)
    elif cls == "sliding_box":
        x = cx + (phase - 0.5) * s * 0.6
        cv2.rectangle(img, (int(x - r), int(cy - r)), (int(x + r), int(cy + r)), colour, -1)
    elif cls == "spinning_bar":
        ang = phase * 2 * np.pi
        d = np.array([np.cos(ang), np.sin(ang)]) * r * 2
        cv2.line(img, tuple((centre - d).astype(int)), tuple((centre + d).astype(int)), colour, max(2, r // 2))
    elif cls == "growing_ring":
        cv2.circle(img, (int(cx), int(cy)), int(r * (0.4 + 1.6 * phase)), colour, max(2, r // 3), cv2.LINE_AA)
    elif cls == "zigzag_triangle":
        x = cx + (phase - 0.5) * s * 0.6
        y = cy + (0.15 * s if int(phase * 6) % 2 else -0.15 * s) * (phase * 6 % 1)
        pts = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    elif cls == "blinking_cross":
        if int(phase * 8) % 2 == 0:
            cv2.line(img, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), colour, max(2, r // 2))
            cv2.line(img, (int(cx - r), int(cy + r)), (int(cx + r), int(cy - r)), colour, max(2, r // 2))
    else:
        raise ValueError(f"unknown demo class {cls}")


def render_clip(cls: str, rng: np.random.Generator, size: int = 96, frames: int = 24) -> np.ndarray:
    bg = _background(rng, size, "texture")
    colour = tuple(int(c) for c in rng.integers(40, 256, 3))
    scale = rng.uniform(0.7, 1.3)
    centre = np.array([size / 2, size / 2]) + rng.uniform(-0.12, 0.12, 2) * size
    offset, speed = rng.uniform(0, 1), rng.uniform(0.7, 1.3)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        img = bg.copy()
        _draw(img, cls, (offset + speed * t / frames) % 1.0, colour, scale, centre)
        out[t] = img
    return out


def write_mp4(path: Path, frames: np.ndarray, fps: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def render_web_image(cls: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    # A photo-like look: the video backgrounds washed with a smooth gradient, larger objects.
    img = (0.5 * _background(rng, size, "texture") + 0.5 * _background(rng, size, "web")).astype(np.uint8)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    centre = np.array([size / 2, size / 2]) + rng.uniform(-0.1, 0.1, 2) * size
    _draw(img, cls, rng.uniform(0, 1), colour, rng.uniform(1.0, 1.6), centre)
    return cv2.GaussianBlur(img, (3, 3), 0)


def generate(root: str | Path, groups: int = 10, clips_per_group: int = 3, web_per_class: int = 40,
             web_noise: float = 0.5, seed: int = 0, size: int = 96, frames: int = 24,
             untrimmed_per_class: int = 3) -> dict:
    """Write ``root/videos/<class>/v_<class>_gGG_cCC.mp4``, ``root/web/<query>/*.jpg`` and
    ``root/web_videos/<query>/*.mp4`` (untrimmed: three actions in a row, one of them the query's).

    ``root/web_truth.json`` maps each web file to its true class (None for clutter; for an
    untrimmed video, the class of its query and the segment where it happens).
    Returns counts. Skips generation when ``root/done.json`` exists with the same settings.
    """
    root = Path(root)
    settings = dict(groups=groups, clips_per_group=clips_per_group, web_per_class=web_per_class,
                    web_noise=web_noise, seed=seed, size=size, frames=frames,
                    untrimmed_per_class=untrimmed_per_class)
    done = root / "done.json"
    if done.exists() and json.loads(done.read_text()).get("settings") == settings:
        return json.loads(done.read_text())["counts"]
    rng = np.random.default_rng(seed)
    n_videos = 0
    for cls in CLASSES:
        for g in range(1, groups + 1):
            group_rng = np.random.default_rng([seed, CLASSES.index(cls), g])
            for c in range(1, clips_per_group + 1):
                clip = render_clip(cls, np.random.default_rng(group_rng.integers(2**31)), size, frames)
                write_mp4(root / "videos" / cls / f"v_{cls}_g{g:02d}_c{c:02d}.mp4", clip)
                n_videos += 1
    truth = {}
    for qi, cls in enumerate(CLASSES):
        folder = root / "web" / QUERIES[cls]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(web_per_class):
            if rng.random() < web_noise:
                # Wrong result for the query: another class, or clutter (no class at all).
                true = None if rng.random() < 0.2 else CLASSES[(qi + rng.integers(1, len(CLASSES))) % len(CLASSES)]
            else:
                true = cls
            img = render_web_image(true, rng) if true else _background(rng, 128, "texture")
            name = folder / f"{k:04d}.jpg"
            cv2.imwrite(str(name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            truth[str(name.relative_to(root))] = true
    n_images = len(truth)
    for qi, cls in enumerate(CLASSES):
        for k in range(untrimmed_per_class):
            others = [c for c in CLASSES if c != cls]
            parts = [cls, *rng.choice(others, size=2, replace=False)]
            order = rng.permutation(3)
            segments = [parts[j] for j in order]
            video = np.concatenate([render_clip(c, rng, size, frames) for c in segments])
            name = root / "web_videos" / QUERIES[cls] / f"{k:04d}.mp4"
            write_mp4(name, video)
            truth[str(name.relative_to(root))] = {"class": cls, "segment": int(np.argmax(order == 0)),
                                                  "segments": [str(c) for c in segments]}
    (root / "web_truth.json").write_text(json.dumps(truth, indent=1))
    counts = {"videos": n_videos, "web_images": n_images, "web_videos": len(truth) - n_images,
              "classes": len(CLASSES)}
    done.write_text(json.dumps({"settings": settings, "counts": counts}))
    return counts


def web_manifests(root: str | Path) -> dict[str, Path]:
    """Manifests of the demo's web sources with the ground truth in ``true_label`` (so the
    selection reports filter precision and recall)."""
    from ..data.manifest import Manifest, new_row, write_manifest

    root = Path(root)
    truth = json.loads((root / "web_truth.json").read_text())
    out = {}
    for name, folder, kind in (("images", "web", "image"), ("untrimmed", "web_videos", "video")):
        rows = []
        for rel, true in sorted(truth.items()):
            if not rel.startswith(folder + "/"):
                continue
            true_label = true["class"] if isinstance(true, dict) else true
            rows.append(new_row(name, kind, str(root / rel), weak_labels=[Path(rel).parent.name],
                                true_label=true_label))
        out[name] = write_manifest(Manifest(rows, []), root / f"web_{name}.parquet")
    return out
