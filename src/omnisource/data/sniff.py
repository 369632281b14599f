"""What a file is, from its content: magic bytes first, a header probe for the rest.

File names lie (a JPEG saved without an extension, an HTML error page saved as ``.mp4``), so
every path that types a file (the downloader, web and target import, validation) asks this
module and never the extension. ``sniff`` reads only the first bytes; ``content_kind`` adds a
header-only probe (Pillow, then FFmpeg) for formats without a signature we know, and names what
a non-media file is (HTML page, SVG, text, PDF, archive, audio) so its row says why it was
refused.
"""
from __future__ import annotations

from pathlib import Path

HEAD_BYTES = 512  # enough for every signature below (MPEG-TS needs 3 packets of 188 bytes: 377)
_QT_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")  # QuickTime files without ftyp
_HEIF = (b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"heim", b"heis")
_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ")
_SUBTITLE_OR_TEXT = (b"WEBVTT", b"[Script Info]")


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, extension) from a file's first bytes, None when it is no known image/video format."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", ".png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", ".gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", ".webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", ".avi"
    if head[:2] == b"BM" and len(head) >= 14 and int.from_bytes(head[2:6], "little") > 14:
        return "image", ".bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", ".tif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AUDIO_BRANDS:
            return None  # M4A & co: `describe` names it
        if brand in _HEIF:
            return "image", ".heic"
        if brand in (b"avif", b"avis"):
            return "image", ".avif"
        if brand.startswith(b"qt"):
            return "video", ".mov"
        if brand.startswith(b"3g"):
            return "video", ".3gp"
        return "video", ".mp4"  # an audio-only isom file too: the decoder says "audio only"
    if head[4:8] in _QT_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return "video", ".mov"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "video", ".webm" if b"webm" in head[:64] else ".mkv"
    if head[:3] == b"FLV":
        return "video", ".flv"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video", ".mpg"
    if head[:4] == b"OggS":
        return "video", ".ogv"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "video", ".wmv"
    if head[:4] == b".RMF":
        return "video", ".rm"
    if head[:9] == b"YUV4MPEG2":
        return "video", ".y4m"
    if len(head) >= 377 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "video", ".ts"
    return None


def describe(head: bytes) -> str | None:
    """A reason naming a recognisable non-media file (None when the bytes say nothing)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:256]:
        return "not a media file: HTML page"
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in head.lower():
        return "unsupported format: SVG vector image"
    if text.startswith(b"<?xml"):
        return "not a media file: XML"
    if head.startswith(b"%PDF"):
        return "not a media file: PDF document"
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!", b"BZh")):
        return "not a media file: archive"
    if head.startswith((b"ID3", b"fLaC", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"#!AMR", b"MThd")) or \
            (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or \
            (head[4:8] == b"ftyp" and head[8:12] in _AUDIO_BRANDS):
        return "audio only: no video stream"
    if head.startswith(_SUBTITLE_OR_TEXT) or (head and _is_text(head)):
        return "not a media file: text"
    return None


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the head is still text
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(c.isprintable() or c in "\t\r\n" for c in decoded)
    return printable >= 0.95 * max(len(decoded), 1)


def read_head(path: str | Path, n: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def content_kind(path: str | Path) -> tuple[str | None, str]:
    """("image" | "video" | "frames", "") for media, (None, one-line reason) for anything else.

    A directory is a frame folder (whether it holds frames is the decoder's call). Files without a
    known signature get a header-only probe: Pillow identifies an image from its header without
    decoding pixels; FFmpeg's probe names video containers we have no signature for."""
    path = Path(path)
    if path.is_dir():
        return "frames", ""
    if not path.exists():
        return None, "missing file"
    if not path.is_file():
        return None, "not a regular file"
    try:
        if path.stat().st_size == 0:
            return None, "zero-byte file"
        head = read_head(path)
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"
    found = sniff(head)
    if found is not None:
        return found[0], ""
    named = describe(head)
    if named is not None:
        return None, named
    return _probe_kind(path)


def _probe_kind(path: Path) -> tuple[str | None, str]:
    import av
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return "image", ""
    except Image.DecompressionBombError:  # an image, and the validator's size rule says why it is refused
        return "image", ""
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # not an image Pillow knows
        pass
    try:  # through a nameless reader: given a name, FFmpeg picks a demuxer by its extension
        with open(path, "rb") as f, av.open(_Nameless(f), metadata_errors="ignore") as container:
            fmt = container.format.name
            if fmt == "image2" or fmt.endswith("_pipe"):
                return None, f"unsupported format: {fmt.removesuffix('_pipe')} image"
            if container.streams.video:
                return "video", ""
            if container.streams.audio:
                return None, "audio only: no video stream"
    except Exception:  # noqa: BLE001 - FFmpeg does not know it either
        pass
    return None, "not a media file"


class _Nameless:
    """A binary file without a ``name`` (PyAV passes a name on to FFmpeg's format guess)."""

    def __init__(self, f):
        self.read, self.seek, self.tell = f.read, f.seek, f.tell


# Reasons of files that are media but break a rule get status "rejected"; every other reason (does
# not decode, not media at all) is "corrupt". The one mapping, for every path that gives a verdict.
POLICY_REASONS = ("too small", "decompression bomb", "single frame video", "animated image", "audio only",
                  "unsupported format", "wrong kind")


def status_of(reason: str) -> str:
    return "rejected" if reason.startswith(POLICY_REASONS) else "corrupt"
