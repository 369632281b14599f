"""Procedural demo data: short action clips and noisy web data of the same classes.

Each class is a shape with its own motion over a textured background. Appearance (colour,
size, position, background, tempo) varies per clip and clips are grouped like UCF101
(``_gGG_cCC``), so a group split behaves as on real data. Web images are photos of the action
at a random moment, taken with another exposure and sharpness; untrimmed web videos film one
scene in which the action happens in one of three segments (the object rests in the others).
As with real search results, most wrong results for a query show a look-alike class (round,
boxy or line-drawn shapes) and some show nothing at all; the ground truth is recorded so
filter precision and recall can be measured.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np

CLASSES = ["bouncing_ball", "sliding_box", "spinning_bar", "growing_ring", "zigzag_triangle", "blinking_cross"]
QUERIES = {c: c.replace("_", " ") for c in CLASSES}
# A search for one class mostly goes wrong towards a look-alike (round, boxy or line-drawn
# shapes), as "archery" returns axe throwing: structured noise that misleads an unfiltered student.
LOOKALIKE = {"bouncing_ball": "growing_ring", "growing_ring": "bouncing_ball", "sliding_box": "zigzag_triangle",
             "zigzag_triangle": "sliding_box", "spinning_bar": "blinking_cross", "blinking_cross": "spinning_bar"}


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
        y = cy + (abs(np.sin(np.pi * 2 * phase)) - 0.5) * s * 0.2
        cv2.circle(img, (int(cx), int(y)), r, colour, -1, cv2.LINE_AA)
    elif cls == "sliding_box":
        x = cx + (phase - 0.5) * s * 0.25
        cv2.rectangle(img, (int(x - r), int(cy - r)), (int(x + r), int(cy + r)), colour, -1)
    elif cls == "spinning_bar":
        ang = phase * 2 * np.pi
        d = np.array([np.cos(ang), np.sin(ang)]) * r * 2
        cv2.line(img, tuple((centre - d).astype(int)), tuple((centre + d).astype(int)), colour, max(2, r // 2))
    elif cls == "growing_ring":
        cv2.circle(img, (int(cx), int(cy)), int(r * (0.7 + 0.8 * phase)), colour, max(2, r // 3), cv2.LINE_AA)
    elif cls == "zigzag_triangle":
        x = cx + (phase - 0.5) * s * 0.25
        y = cy + (0.06 * s if int(phase * 6) % 2 else -0.06 * s) * (phase * 6 % 1)
        pts = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    elif cls == "blinking_cross":
        if int(phase * 8) % 2 == 0:
            cv2.line(img, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), colour, max(2, r // 2))
            cv2.line(img, (int(cx - r), int(cy + r)), (int(cx + r), int(cy - r)), colour, max(2, r // 2))
    else:
        raise ValueError(f"unknown demo class {cls}")


def scene(rng: np.random.Generator, size: int = 96) -> dict:
    """Where and how an action is filmed: background, object colour, size, position and tempo."""
    return {"bg": _background(rng, size, "texture"), "colour": tuple(int(c) for c in rng.integers(40, 256, 3)),
            "scale": rng.uniform(0.7, 1.3), "centre": np.array([size / 2, size / 2]) + rng.uniform(-0.12, 0.12, 2) * size,
            "offset": rng.uniform(0, 1), "speed": rng.uniform(0.7, 1.3)}


def render_clip(cls: str, rng: np.random.Generator, size: int = 96, frames: int = 24,
                where: dict | None = None, idle: bool = False) -> np.ndarray:
    """``frames`` frames of ``cls`` performed in a scene (a new one unless ``where`` is given).
    ``idle``: the scene before or after the action, its object at rest (the context that the
    non-action parts of a real untrimmed video show)."""
    where = where or scene(rng, size)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        img = where["bg"].copy()
        phase = where["offset"] if idle else (where["offset"] + where["speed"] * t / frames) % 1.0
        _draw(img, cls, phase, where["colour"], where["scale"], where["centre"])
        if idle:  # sensor noise, so idle frames are not identical stills
            img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
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
    # A photo of the action: the scene of a video frame, shot with another camera (exposure,
    # framing and sharpness differ), at a random moment of the motion.
    # Nobody posts a photo of an action in which its subject is not visible (the blinking cross
    # between blinks): the photographer waits for a moment that shows it.
    bg = _background(rng, size, "texture")
    colour = tuple(int(c) for c in rng.integers(40, 256, 3))
    centre = np.array([size / 2, size / 2]) + rng.uniform(-0.12, 0.12, 2) * size
    scale = rng.uniform(0.7, 1.4)
    for _ in range(20):
        img = bg.copy()
        _draw(img, cls, rng.uniform(0, 1), colour, scale, centre)
        if (img != bg).any():
            break
    gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    img = np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (3, 3), 0) if rng.random() < 0.5 else img


def generate(root: str | Path, groups: int = 16, clips_per_group: int = 3, web_per_class: int = 400,
             web_noise: float = 0.7, seed: int = 0, size: int = 96, frames: int = 24,
             untrimmed_per_class: int = 15) -> dict:
    """Write ``root/videos/<class>/v_<class>_gGG_cCC.mp4``, ``root/web/<query>/*.jpg`` and
    ``root/web_videos/<query>/*.mp4`` (untrimmed: three actions in a row, one of them the query's).

    ``root/web_truth.json`` maps each web file to its true class (None for clutter; for an
    untrimmed video, the class of its query and the segment where it happens).
    Returns counts. Skips generation when ``root/done.json`` exists with the same settings.
    """
    root = Path(root)
    settings = dict(groups=groups, clips_per_group=clips_per_group, web_per_class=web_per_class,
                    web_noise=web_noise, seed=seed, size=size, frames=frames,
                    untrimmed_per_class=untrimmed_per_class, version=7)
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
                true = None if rng.random() < 0.2 else LOOKALIKE[cls]
            else:
                true = cls
            img = render_web_image(true, rng) if true else _background(rng, 128, "texture")
            name = folder / f"{k:04d}.jpg"
            cv2.imwrite(str(name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            truth[str(name.relative_to(root))] = true
    n_images = len(truth)
    for qi, cls in enumerate(CLASSES):
        for k in range(untrimmed_per_class):
            # A long video of one scene: the action happens in one segment, the rest is idle.
            # Like search results, a share of the videos show another action than the query.
            wrong = rng.random() < web_noise / 2
            action = LOOKALIKE[cls] if wrong else cls
            segment = int(rng.integers(0, 3))
            where = scene(rng, size)
            video = np.concatenate([render_clip(action, rng, size, frames, where, idle=j != segment)
                                    for j in range(3)])
            name = root / "web_videos" / QUERIES[cls] / f"{k:04d}.mp4"
            write_mp4(name, video)
            truth[str(name.relative_to(root))] = {"class": action, "segment": segment,
                                                  "segments": [action if j == segment else "idle" for j in range(3)]}
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
