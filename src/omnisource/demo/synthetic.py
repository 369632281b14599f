"""Procedural demo data: short action clips and noisy web data of the same classes.

Each class is a shape with its own motion. Where and how it is filmed (a *scene*: background
style, object colour, size, position, viewing angle, lighting) varies, and clips are grouped
like UCF101 (``_gGG_cCC``): the clips of one group share their scene, as UCF101's groups share
actor and setting, so a group split behaves as on real data and a few labeled videos see only
a few scenes. Target clips, validation clips and web data draw their scenes from one and the
same distribution; the web simply has far more of them (every photo and web video is a scene of
its own), which is the information that web data adds to a handful of labels.

Web images are photos of the action at a random moment, taken with another exposure and
sharpness; untrimmed web videos film one scene in which the action happens in one of three
segments (the object rests in the others). As with real search results, most results of a
query are wrong, and the wrong results concentrate on the class people confuse with the query:
mostly its look-alike target class (round, boxy or line-drawn shapes), a few off-topic shapes
that are no target class at all or nothing but background. A look-alike labeled with the
query teaches the wrong boundary between the two classes, which only a filter that knows the
classes can undo; the ground truth is recorded so that filter precision and recall can be
measured.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np

CLASSES = ["bouncing_ball", "sliding_box", "spinning_bar", "growing_ring", "zigzag_triangle", "blinking_cross"]
QUERIES = {c: c.replace("_", " ") for c in CLASSES}
# A search for one class that returns another target class mostly returns a look-alike (round,
# boxy or line-drawn shapes), as "archery" returns axe throwing.
LOOKALIKE = {"bouncing_ball": "growing_ring", "growing_ring": "bouncing_ball", "sliding_box": "zigzag_triangle",
             "zigzag_triangle": "sliding_box", "spinning_bar": "blinking_cross", "blinking_cross": "spinning_bar"}
# Shapes that no target class shows: the off-topic results of a search (the pool of other
# sports in web-sports).
OFF_TOPIC = ["star", "diamond", "crescent", "arrow", "ellipse", "hexagon_outline"]
OBJECT_SIZE = 0.22  # radius of a shape at scale 1, as a fraction of the frame
BACKGROUNDS = ("texture", "gradient", "stripes", "checker", "blobs", "noise")
# Shares of a query's wrong results (``web_noise`` of all its results): the look-alike target
# class, off-topic shapes, background only. Concentrated on the look-alike, as a search for a
# fine-grained action mostly returns its confusable sibling: with a 0.5 / 0.3 / 0.2 split, the
# wrong results were mostly harmless (no class at all) and the unfiltered student beat the
# filtered one (docs/benchmarks.md, "Web noise that teaches a wrong boundary").
WRONG = {"lookalike": 0.8, "off_topic": 0.1, "clutter": 0.1}


def _background(rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.integers(0, 256, 3).astype(np.float64), rng.integers(0, 256, 3).astype(np.float64)
    if style == "texture":  # blotches of colour
        low = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
        bg = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float64) * 0.6 + 40
    elif style == "gradient":  # a smooth two-colour gradient, like a studio photo
        t = (np.cos(rng.uniform(0, np.pi)) * xx + np.sin(rng.uniform(0, np.pi)) * yy)[..., None]
        bg = a * (1 - t) + b * t
    elif style == "stripes":
        ang, freq = rng.uniform(0, np.pi), rng.uniform(3, 8)
        t = (np.sin(2 * np.pi * freq * (np.cos(ang) * xx + np.sin(ang) * yy)) > 0)[..., None]
        bg = np.where(t, a, b)
    elif style == "checker":
        n = int(rng.integers(3, 8))
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2 == 0)[..., None]
        bg = np.where(t, a, b)
    elif style == "blobs":  # soft discs, like foliage or a crowd out of focus
        bg = np.ones((size, size, 3)) * a
        for _ in range(int(rng.integers(4, 9))):
            c, r = rng.uniform(0, size, 2), rng.uniform(0.08, 0.25) * size
            m = (((xx * size - c[0]) ** 2 + (yy * size - c[1]) ** 2) < r * r)[..., None]
            bg = np.where(m, rng.integers(0, 256, 3), bg)
        bg = cv2.GaussianBlur(bg.astype(np.float32), (0, 0), size / 40).astype(np.float64)
    elif style == "noise":  # a dark, grainy scene
        bg = a[None, None] * 0.35 + rng.normal(0, 25, (size, size, 3))
    else:
        raise ValueError(f"unknown background style {style}")
    return np.clip(bg + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)


def _rot(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return (points @ np.array([[c, s], [-s, c]]) + centre).astype(np.int32)


def _draw(img: np.ndarray, cls: str, phase: float, colour: tuple, scale: float, centre: np.ndarray,
          angle: float = 0.0) -> None:
    """Draw ``cls`` at ``phase`` of its motion; ``angle`` turns the shape and its path (the view)."""
    s = img.shape[0]
    r = s * OBJECT_SIZE * scale
    w = max(2, int(r / 2.5))
    def at(*pts):  # points in the shape's own frame -> pixels
        return _rot(np.array(pts, np.float64), angle, np.asarray(centre, np.float64))
    if cls == "bouncing_ball":
        (p,) = at([0, (abs(np.sin(np.pi * 2 * phase)) - 0.5) * s * 0.2])
        cv2.circle(img, tuple(int(v) for v in p), int(r), colour, -1, cv2.LINE_AA)
    elif cls == "sliding_box":
        x = (phase - 0.5) * s * 0.25
        cv2.fillPoly(img, [at([x - r, -r], [x + r, -r], [x + r, r], [x - r, r])], colour, cv2.LINE_AA)
    elif cls == "spinning_bar":
        ang = phase * 2 * np.pi
        d = np.array([np.cos(ang), np.sin(ang)]) * r * 1.8
        p, q = at(-d, d)
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, w, cv2.LINE_AA)
    elif cls == "growing_ring":
        cv2.circle(img, tuple(int(v) for v in centre), int(r * (0.7 + 0.6 * phase)), colour, w, cv2.LINE_AA)
    elif cls == "zigzag_triangle":
        x = (phase - 0.5) * s * 0.25
        y = (0.06 * s if int(phase * 6) % 2 else -0.06 * s) * (phase * 6 % 1)
        cv2.fillPoly(img, [at([x, y - r], [x - r, y + r], [x + r, y + r])], colour, cv2.LINE_AA)
    elif cls == "blinking_cross":
        if int(phase * 8) % 2 == 0:
            for p, q in (at([-r, -r], [r, r]), at([-r, r], [r, -r])):
                cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, w, cv2.LINE_AA)
    elif cls == "star":
        k = np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r * 1.2, r * 0.5)
        cv2.fillPoly(img, [at(*np.stack([np.cos(k) * rad, np.sin(k) * rad], 1))], colour, cv2.LINE_AA)
    elif cls == "diamond":
        cv2.fillPoly(img, [at([0, -1.3 * r], [0.8 * r, 0], [0, 1.3 * r], [-0.8 * r, 0])], colour, cv2.LINE_AA)
    elif cls == "crescent":  # a disc with a bite taken out of it
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.circle(mask, tuple(int(v) for v in centre), int(r * 1.1), 255, -1, cv2.LINE_AA)
        (p,) = at([0.55 * r, 0])
        cv2.circle(mask, tuple(int(v) for v in p), int(r * 0.9), 0, -1, cv2.LINE_AA)
        a = (mask.astype(np.float32) / 255)[..., None]
        img[:] = (img * (1 - a) + np.asarray(colour, np.float32) * a).astype(np.uint8)
    elif cls == "arrow":
        cv2.fillPoly(img, [at([-r, -0.3 * r], [0.2 * r, -0.3 * r], [0.2 * r, -0.8 * r], [1.2 * r, 0],
                              [0.2 * r, 0.8 * r], [0.2 * r, 0.3 * r], [-r, 0.3 * r])], colour, cv2.LINE_AA)
    elif cls == "ellipse":
        cv2.ellipse(img, tuple(int(v) for v in centre), (int(r * 1.4), int(r * 0.6)), np.degrees(angle), 0, 360,
                    colour, -1, cv2.LINE_AA)
    elif cls == "hexagon_outline":
        k = np.arange(6) * np.pi / 3
        cv2.polylines(img, [at(*np.stack([np.cos(k) * r * 1.1, np.sin(k) * r * 1.1], 1))], True, colour, w,
                      cv2.LINE_AA)
    else:
        raise ValueError(f"unknown demo class {cls}")


def scene(rng: np.random.Generator, size: int = 96) -> dict:
    """Where and how an action is filmed: background, object colour, size, position, viewing
    angle, lighting, and the tempo of the motion."""
    style = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return {"bg": _background(rng, size, style), "style": style,
            "colour": tuple(int(c) for c in rng.integers(30, 256, 3)), "scale": rng.uniform(0.7, 1.3),
            "centre": np.array([size / 2, size / 2]) + rng.uniform(-0.1, 0.1, 2) * size,
            "angle": rng.uniform(0, 2 * np.pi), "gain": rng.uniform(0.75, 1.25), "bias": rng.uniform(-25, 25),
            "offset": rng.uniform(0, 1), "speed": rng.uniform(0.7, 1.3)}


def retake(where: dict, rng: np.random.Generator) -> dict:
    """Another clip of the same group: same setting, the action started at another moment and
    tempo, the camera nudged a little (UCF101's clips of one group are near-duplicates)."""
    size = where["bg"].shape[0]
    return dict(where, centre=where["centre"] + rng.uniform(-0.03, 0.03, 2) * size,
                offset=rng.uniform(0, 1), speed=rng.uniform(0.7, 1.3))


def _expose(img: np.ndarray, where: dict) -> np.ndarray:
    return np.clip(img.astype(np.float32) * where["gain"] + where["bias"], 0, 255).astype(np.uint8)


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
        _draw(img, cls, phase, where["colour"], where["scale"], where["centre"], where["angle"])
        if idle:  # sensor noise, so idle frames are not identical stills
            img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        out[t] = _expose(img, where)
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


def render_web_image(cls: str | None, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A photo of ``cls`` (None: background only) in a scene of its own, at a random moment of
    the motion, shot with another camera (framing, exposure and sharpness differ). Nobody posts
    a photo in which its subject is not visible (the blinking cross between blinks): the
    photographer waits for a moment that shows it."""
    where = scene(rng, size)
    where["scale"] = rng.uniform(0.7, 1.4)
    img = where["bg"].copy()
    if cls is not None:
        for _ in range(20):
            img = where["bg"].copy()
            _draw(img, cls, rng.uniform(0, 1), where["colour"], where["scale"], where["centre"], where["angle"])
            if (img != where["bg"]).any():
                break
    img = _expose(img, where)
    return cv2.GaussianBlur(img, (3, 3), 0) if rng.random() < 0.5 else img


def _wrong_result(cls: str, rng: np.random.Generator) -> str | None:
    kind = rng.choice(list(WRONG), p=list(WRONG.values()))
    if kind == "off_topic":
        return OFF_TOPIC[int(rng.integers(len(OFF_TOPIC)))]
    return LOOKALIKE[cls] if kind == "lookalike" else None


def generate(root: str | Path, groups: int = 16, clips_per_group: int = 3, web_per_class: int = 400,
             web_noise: float = 0.7, seed: int = 0, size: int = 96, frames: int = 24,
             untrimmed_per_class: int = 15, val_groups=(), val_clips_per_group: int = 1) -> dict:
    """Write ``root/videos/<class>/v_<class>_gGG_cCC.mp4``, ``root/web/<query>/*.jpg`` and
    ``root/web_videos/<query>/*.mp4`` (untrimmed: one scene, the action in one of three segments).

    Groups 1..``groups`` have ``clips_per_group`` clips each, those numbered in ``val_groups``
    ``val_clips_per_group``: the clips of one group are near-duplicates, so a validation set of
    many groups with one clip each measures more than one of few groups with several.
    A group's scene depends on ``seed``, its class and its number only.

    ``root/web_truth.json`` maps each web file to its true class (a target class, an off-topic
    shape, or None for background only; for an untrimmed video, its class and the segment where
    it happens). Returns counts. Skips generation when ``root/done.json`` has the same settings.
    """
    root = Path(root)
    settings = dict(groups=groups, clips_per_group=clips_per_group, web_per_class=web_per_class,
                    web_noise=web_noise, seed=seed, size=size, frames=frames,
                    untrimmed_per_class=untrimmed_per_class,
                    val_groups=sorted(int(g) for g in val_groups), val_clips_per_group=val_clips_per_group, version=10)
    done = root / "done.json"
    if done.exists() and json.loads(done.read_text()).get("settings") == settings:
        return json.loads(done.read_text())["counts"]
    rng = np.random.default_rng(seed)
    val = {int(g) for g in val_groups}
    n_videos = 0
    for cls in CLASSES:
        for g in range(1, groups + 1):
            group_rng = np.random.default_rng([seed, CLASSES.index(cls), g])
            where = scene(group_rng, size)
            for c in range(1, (val_clips_per_group if g in val else clips_per_group) + 1):
                clip = render_clip(cls, group_rng, size, frames, retake(where, group_rng))
                write_mp4(root / "videos" / cls / f"v_{cls}_g{g:02d}_c{c:02d}.mp4", clip)
                n_videos += 1
    truth = {}
    for cls in CLASSES:
        folder = root / "web" / QUERIES[cls]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(web_per_class):
            true = _wrong_result(cls, rng) if rng.random() < web_noise else cls
            img = render_web_image(true, rng)
            name = folder / f"{k:04d}.jpg"
            cv2.imwrite(str(name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            truth[str(name.relative_to(root))] = true
    n_images = len(truth)
    for cls in CLASSES:
        for k in range(untrimmed_per_class):
            # A long video of one scene: the action happens in one segment, the rest is idle.
            # Like search results, a share of the videos show another action than the query.
            action = LOOKALIKE[cls] if rng.random() < web_noise / 2 else cls
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
    """Manifests of the demo's web sources with the ground truth in ``true_label`` (a target
    class or None, so the selection reports filter precision and recall)."""
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
                                true_label=true_label if true_label in CLASSES else None))
        out[name] = write_manifest(Manifest(rows, []), root / f"web_{name}.parquet")
    return out
