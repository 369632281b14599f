"""Tiny media files for tests, written with PyAV / Pillow (tests never read real data).

Each video frame encodes its own index: the left half has brightness 8 + 16 * (i % 16), the right
half 8 + 16 * (i // 16), so levels are 16 apart and survive lossy coding; `frame_number` reads it back.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def index_frame(i: int, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = 8 + 16 * (i % 16)
    img[:, w // 2:] = 8 + 16 * ((i // 16) % 16)
    return img


def frame_number(img: np.ndarray) -> int:
    """Inverse of index_frame, read from the centre of each half (away from the block edge)."""
    h, w = img.shape[:2]
    lo = img[h // 4: 3 * h // 4, w // 8: 3 * w // 8].mean()
    hi = img[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8].mean()
    return int(round((lo - 8) / 16)) + 16 * int(round((hi - 8) / 16))


def write_video(path, num_frames: int, size: tuple[int, int] = (32, 24), fps: int = 25,
                gop: int = 12, codec: str = "libx264", bframes: int = 0,
                faststart: bool = False, frame_fn=None, pix_fmt: str = "yuv420p", pts_fn=None) -> Path:
    """A video whose frame i shows index_frame(i) (or ``frame_fn(i)``) at pts i (or ``pts_fn(i)``,
    in frame periods); gop = keyframe interval (``pix_fmt="yuvj420p"`` for codec="mjpeg")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        opts = {"crf": "18", "preset": "ultrafast", "scenecut": "0"} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=Fraction(fps), options=opts)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
        if codec != "libx264":
            stream.codec_context.qscale = 2
        for i in range(num_frames):
            img = frame_fn(i) if frame_fn else index_frame(i, size)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts_fn(i) if pts_fn else i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_audio(path, seconds: float = 0.5, codec: str = "aac", rate: int = 44100) -> Path:
    """An audio-only file (a sine tone)."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4" if path.suffix in (".mp4", ".m4a") else None) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        n = stream.codec_context.frame_size or 1152
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        fmt = stream.codec_context.format.name
        for k, s in enumerate(range(0, len(tone) - n + 1, n)):
            chunk = tone[s: s + n][None]
            if fmt == "s16" or fmt == "s16p":
                chunk = (chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, k * n
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_frames(folder, num_frames: int, size: tuple[int, int] = (32, 24)) -> Path:
    """A frame folder img_00001.png ... (lossless, so frame_number is exact)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(index_frame(i, size)).save(folder / f"img_{i + 1:05d}.png")
    return folder


def write_image(path, mode: str = "RGB", size: tuple[int, int] = (20, 16), value: int = 100,
                alpha: int = 255) -> Path:
    """An image of one flat colour in a given Pillow mode ("RGB", "RGBA", "L", "CMYK", "I;16", "P")."""
    path = Path(path)
    w, h = size
    if mode == "I;16":
        arr = np.full((h, w), value * 257, np.uint16)
        im = Image.fromarray(arr)  # Pillow stores uint16 as I;16
    elif mode == "RGBA":
        im = Image.new("RGBA", size, (value, value, value, alpha))
    elif mode == "P":
        im = Image.new("P", size, 0)
        im.putpalette([value] * 3 + [0] * 765)
        im.info["transparency"] = 0  # the only palette entry used is transparent
    else:
        im = Image.new("RGB", size, (value, value, value)).convert(mode)
    im.save(path)
    return path


def write_gif(path, values=(10, 200, 90), size: tuple[int, int] = (20, 16)) -> Path:
    """An animated GIF whose frames are flat grays with the given values."""
    frames = [Image.new("L", size, v).convert("P") for v in values]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return Path(path)


def write_png_bomb(path, claimed: tuple[int, int] = (30000, 30000)) -> Path:
    """A small PNG whose IHDR claims a huge size (the CRC is fixed so decoders accept the header)."""
    import struct
    import zlib

    Image.new("RGB", (4, 4)).save(path)
    data = bytearray(Path(path).read_bytes())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr: ihdr + 8] = struct.pack(">II", *claimed)
    crc = zlib.crc32(bytes(data[ihdr - 4: ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13: ihdr + 17] = struct.pack(">I", crc)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def write_da_media(root) -> Path:
    """Media for domain adaptation: two classes, three groups (01 = validation) of target videos;
    web images (``web/``) and web videos (``webvid/``) by query, four of each per query, the
    query "gamma" naming no class and "beta pics" mapped in the config. Every video starts at its
    own index_frame, so no two videos (nor their features) are the same."""
    root = Path(root)

    def shifted(k: int):
        return lambda i: index_frame(i + 7 * k)

    for c, cls in enumerate(("alpha", "beta")):
        for g in (1, 2, 3):
            write_video(root / "videos" / cls / f"v_{cls}_g{g:02d}_c01.mp4", 16, frame_fn=shifted(3 * c + g))
    rng = np.random.default_rng(0)
    for q, query in enumerate(("alpha", "beta pics", "gamma")):
        for i in range(4):
            (root / "web" / query).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "web" / query / f"{i}.jpg")
            write_video(root / "webvid" / query / f"{i}.mp4", 12, frame_fn=shifted(10 + 4 * q + i))
    return root
