"""A corpus of hostile media files, generated (never downloaded) for the validation tests.

``make_corpus(root)`` writes ``root/image/*`` and ``root/video/*`` and returns one ``Entry`` per
item: truncations, bit rot and header-then-garbage files; HTML, SVG, text and audio disguised as
media; zero-byte, tiny, audio-only and one-frame files; decompression bombs (a header claiming a
huge size, and media above the corpus pixel budget ``MAX_PIXELS``); odd codecs, containers, sizes
and names; files with the wrong extension or none; directories named like files.

``expect`` is the status every path must give (None where decoders legitimately differ on
damaged data, e.g. JPEG or H.264 bit rot that may still decode), ``reason`` a substring of the
reason. ``kind_specific`` entries hold content of the other kind (a video named .jpg): web sources
of one kind reject them, a target set takes them as what they are.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from media_factory import write_audio, write_gif, write_image, write_png_bomb, write_video

MAX_PIXELS = 1_000_000  # the corpus runs with media.max_pixels at 1 MP: a 1280x1024 video is a bomb here


@dataclass
class Entry:
    name: str  # file name (unique across the corpus)
    group: str  # "image" | "video": the web source it goes to
    path: Path
    expect: str | None  # ok | corrupt | rejected | None (either, but the same on every path)
    reason: str = ""  # substring of the reason
    kind_specific: bool = False  # content of the other kind: web and target verdicts differ by design
    is_dir: bool = False
    fifo: bool = False  # a named pipe: a reader that opens it blindly blocks forever


def _rgb(seed: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = np.stack([xx * 255 // max(w, 1), yy * 255 // max(h, 1), (xx + yy) % 256], axis=2)
    return np.clip(base + rng.integers(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def _jpeg(seed=0, w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(seed, w, h)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png(seed=0, w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_rgb(seed, w, h)).save(buf, "PNG")
    return buf.getvalue()


def _rot(data: bytes, start: float, n: int = 64, seed: int = 0) -> bytes:
    """Flip random bits in n bytes from fraction `start` of the file on (bit rot)."""
    arr = bytearray(data)
    rng = np.random.default_rng(seed)
    at = int(len(arr) * start)
    for i in range(at, min(at + n, len(arr))):
        arr[i] ^= int(rng.integers(1, 256))
    return bytes(arr)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _gif_bomb() -> bytes:
    """A GIF whose logical screen claims 65535 x 65535."""
    buf = io.BytesIO()
    Image.new("L", (40, 40), 7).convert("P").save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def _jpeg_bomb() -> bytes:
    """A JPEG whose SOF0 claims 60000 x 60000."""
    data = bytearray(_jpeg(3))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_text if isinstance(data, str) else path.write_bytes)(data)
    return path


def make_corpus(root: str | Path) -> list[Entry]:
    root = Path(root)
    img, vid = root / "image", root / "video"
    img.mkdir(parents=True, exist_ok=True)
    vid.mkdir(parents=True, exist_ok=True)
    out: list[Entry] = []

    def add(group, name, data, expect, reason="", **kw):
        folder = img if group == "image" else vid
        path = folder / name
        if callable(data):
            data(path)
        elif data is not None:
            _write(path, data)
        out.append(Entry(name, group, path, expect, reason, **kw))

    jpg, png = _jpeg(1), _png(2)
    html = "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>gone</body></html>\n"
    svg = '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect/></svg>\n'
    # ---- images: good ones, some with wrong, odd or no extensions
    add("image", "good.jpg", jpg, "ok")
    add("image", "good_jpeg_no_extension", jpg, "ok")
    add("image", "png_named.jpg", png, "ok")
    add("image", "jpeg_named.png", _jpeg(4), "ok")
    add("image", "UPPER CASE & spaces.JPG", _jpeg(5), "ok")
    add("image", "ünïcödé-名前.jpeg", _jpeg(6), "ok")
    add("image", "double.jpg.exe", _jpeg(7), "ok")
    add("image", "edge_32x32.png", _png(8, 32, 32), "ok")
    add("image", "odd_33x47.png", _png(9, 33, 47), "ok")
    add("image", "cmyk.jpg", lambda p: write_image(p, "CMYK", (40, 40), value=120), "ok")
    add("image", "gray16.png", lambda p: write_image(p, "I;16", (40, 40), value=200), "ok")
    add("image", "rgba.png", lambda p: write_image(p, "RGBA", (40, 40), value=0, alpha=0), "ok")
    add("image", "palette.gif", lambda p: Image.new("L", (40, 40), 99).convert("P").save(p, "GIF"), "ok")
    add("image", "still.webp", lambda p: Image.fromarray(_rgb(10, 48, 40)).save(p, "WEBP"), "ok")
    add("image", "still.bmp", lambda p: Image.fromarray(_rgb(11, 48, 40)).save(p, "BMP"), "ok")
    add("image", "still.tiff", lambda p: Image.fromarray(_rgb(12, 48, 40)).save(p, "TIFF"), "ok")
    add("image", "still.ppm", lambda p: Image.fromarray(_rgb(13, 48, 40)).save(p, "PPM"), "ok")  # no signature we know
    # ---- images: damaged
    add("image", "truncated.jpg", jpg[: len(jpg) // 2], "corrupt")
    add("image", "truncated.png", png[: len(png) // 2], "corrupt")
    add("image", "bitrot.png", _rot(png, 0.5), "corrupt")  # PNG chunks carry CRCs, zlib an Adler-32
    add("image", "bitrot.jpg", _rot(jpg, 0.6), None)  # a JPEG decoder may paint over flipped bits
    add("image", "header_then_garbage.jpg", jpg[:200] + np.random.default_rng(1).bytes(3000), "corrupt")
    add("image", "header_then_garbage.png",
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0))
        + np.random.default_rng(2).bytes(3000), "corrupt")
    add("image", "heic_signature_only.heic", b"\x00\x00\x00\x18ftypheic" + bytes(40), "corrupt")
    # ---- images: not media, disguised
    add("image", "html_page.jpg", html, "corrupt", "HTML page")
    add("image", "vector.png", svg, "rejected", "SVG")
    add("image", "notes.gif", "just some text, no pixels\n" * 20, "corrupt", "text")
    add("image", "random_bytes.png", np.random.default_rng(3).bytes(5000), "corrupt", "not a media file")
    add("image", "song.jpg", lambda p: write_audio(p.with_suffix(".m4a")).rename(p), "rejected", "audio only")
    add("image", "zero_bytes.jpg", b"", "corrupt", "zero-byte")
    # ---- images: rules
    add("image", "tiny_4x4.png", _png(14, 4, 4), "rejected", "too small: 4x4")
    add("image", "tracking_pixel.gif", lambda p: Image.new("P", (1, 1)).save(p, "GIF"), "rejected", "too small: 1x1")
    add("image", "thin_31x100.png", _png(15, 31, 100), "rejected", "too small: 31x100")
    add("image", "animated.gif", lambda p: write_gif(p, (10, 200, 90), (40, 40)), "rejected", "animated image (GIF")
    add("image", "animated.png", lambda p: Image.fromarray(_rgb(16, 40, 40)).save(
        p, "PNG", save_all=True, append_images=[Image.fromarray(_rgb(17, 40, 40))]), "rejected", "animated image (PNG")
    add("image", "bomb_claims_30000x30000.png", lambda p: write_png_bomb(p, (30000, 30000)), "rejected",
        "decompression bomb")
    add("image", "bomb_claims_65535x65535.gif", _gif_bomb(), "rejected", "decompression bomb")
    add("image", "bomb_claims_60000x60000.jpg", _jpeg_bomb(), "rejected", "decompression bomb")
    add("image", "zip_bomb_4000x4000.png", lambda p: Image.new("1", (4000, 4000)).save(p, optimize=True),
        "rejected", "decompression bomb: 4000x4000")
    # ---- images: the other kind, and directories named like files
    add("image", "video_named.jpg", lambda p: write_video(p.with_suffix(".mp4"), 12, (64, 48)).rename(p), "rejected",
        "wrong kind", kind_specific=True)
    add("image", "empty_dir.jpg", lambda p: p.mkdir(), "corrupt", is_dir=True)
    add("image", "named_pipe.jpg", lambda p: os.mkfifo(p), "corrupt", "not a regular file", fifo=True)

    # ---- videos: good ones in several codecs and containers
    good = write_video(vid / "good.mp4", 20, (64, 48))
    out.append(Entry("good.mp4", "video", good, "ok"))
    add("video", "good_mp4_no_extension", good.read_bytes(), "ok")
    add("video", "mp4_named.avi", good.read_bytes(), "ok")
    add("video", "bframes_long_gop.mp4", lambda p: write_video(p, 60, (64, 48), gop=250, bframes=2), "ok")
    add("video", "mpeg4.avi", lambda p: write_video(p, 20, (64, 48), codec="mpeg4"), "ok")
    add("video", "h264.mkv", lambda p: write_video(p, 20, (64, 48)), "ok")
    add("video", "vp9.webm", lambda p: write_video(p, 20, (64, 48), codec="libvpx-vp9"), "ok")
    add("video", "mjpeg.mov", lambda p: write_video(p, 20, (64, 48), codec="mjpeg", pix_fmt="yuvj420p"), "ok")
    add("video", "mpeg2.mpg", lambda p: write_video(p, 20, (64, 48), codec="mpeg2video"), "ok")
    add("video", "mpegts.ts", lambda p: write_video(p, 20, (64, 48)), "ok")
    add("video", "odd_66x50.mp4", lambda p: write_video(p, 20, (66, 50)), "ok")
    # ---- videos: damaged
    data = good.read_bytes()
    add("video", "truncated.mp4", data[: len(data) // 2], "corrupt")
    fast = write_video(vid / "_faststart_source.mp4", 60, (64, 48), faststart=True)
    add("video", "truncated_faststart.mp4", fast.read_bytes()[: len(fast.read_bytes()) // 2], "corrupt", "truncated")
    fast.unlink()
    add("video", "bitrot.mp4", _rot(data, 0.5, 200), None)  # H.264 decoders conceal damaged slices
    add("video", "header_then_garbage.mp4", data[:32] + np.random.default_rng(4).bytes(6000), "corrupt")
    add("video", "random_bytes.mkv", np.random.default_rng(5).bytes(6000), "corrupt", "not a media file")
    # ---- videos: not media, disguised
    add("video", "html_page.mp4", html, "corrupt", "HTML page")
    add("video", "vector.webm", svg, "rejected", "SVG")
    add("video", "subtitles.mkv", "1\n00:00:01,000 --> 00:00:02,000\nhello\n", "corrupt", "text")
    add("video", "zero_bytes.mp4", b"", "corrupt", "zero-byte")
    add("video", "audio_only.mp4", lambda p: write_audio(p), "rejected", "audio only")
    add("video", "audio_only_mp2.mkv", lambda p: write_audio(p, codec="mp2"), "rejected", "audio only")
    # ---- videos: rules
    add("video", "one_frame.mp4", lambda p: write_video(p, 1, (64, 48)), "rejected", "single frame")
    add("video", "tiny_8x6.mp4", lambda p: write_video(p, 10, (8, 6)), "rejected", "too small: 8x6")
    add("video", "bomb_1280x1024.mp4", lambda p: write_video(p, 2, (1280, 1024), gop=2,
        frame_fn=lambda i: np.full((1024, 1280, 3), 90, np.uint8)), "rejected", "decompression bomb: 1280x1024")
    # ---- videos: the other kind, and directories named like files
    add("video", "image_named.mp4", _jpeg(18), "rejected", "wrong kind", kind_specific=True)
    add("video", "empty_dir.mp4", lambda p: p.mkdir(), "corrupt", is_dir=True)
    return out
