"""What ``omnisource predict`` is given, turned into one item per file to classify.

A PATH is a video, an image, a frame folder, a folder of those (walked recursively, in name
order), or a Parquet manifest (its ``ok`` rows, optionally of one split, with their time windows).
Items below a folder come sorted by path. A file is typed by its content (``data.sniff``), not its
name. A folder counts as a frame folder when it holds only images whose names are one pattern
numbered 0 or 1, 2, 3, ... (``img_00001.jpg``, ``img_00002.jpg``, ...), as frame extraction writes
them; any other folder of images is a folder of separate images. Each item keeps the path as the
user wrote it (joined with the relative path below a folder), so outputs echo what was asked for.
Something unusable (missing, a manifest that does not read, a file that is neither a video nor an
image) becomes an item with an ``error``, never a silent omission.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..data.media import IMAGE_EXTS

MANIFEST_EXTS = frozenset({".parquet"})


@dataclass
class Item:
    """One thing to classify: ``row`` (a manifest-style row: path, kind, start_s, end_s) or ``error``."""
    path: str  # as given
    row: dict = field(default_factory=dict)
    error: str = ""


def _row(path: Path, kind: str) -> dict:
    return {"path": str(path), "kind": kind, "status": "ok", "label": None}


def _file(shown: str, path: Path) -> Item:
    from ..data.sniff import content_kind

    kind, reason = content_kind(path)
    return Item(shown, _row(path, kind)) if kind in ("image", "video") else Item(shown, error=reason)


def _digits_removed(name: str) -> str:
    return re.sub(r"\d+", "#", name.lower())


def is_frame_folder(folder: Path) -> bool:
    """Only image files (two or more) named by one pattern with one number that counts 0 or 1, 2, 3...
    (``img_00001.jpg``, ...), as frame extraction writes them (camera names such as IMG_4711.JPG
    do not start at 0 or 1)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) < 2 or any(not p.is_file() or p.suffix.lower() not in IMAGE_EXTS for p in entries):
        return False
    if len({_digits_removed(p.name) for p in entries}) != 1:
        return False
    numbers = [re.findall(r"\d+", p.name) for p in entries]
    if any(len(n) != 1 for n in numbers):
        return False
    found = sorted(int(n[0]) for n in numbers)
    return found[0] in (0, 1) and found == list(range(found[0], found[0] + len(found)))


def _manifest_items(given: str, split: str | None) -> list[Item]:
    from ..data.manifest import ManifestError, read_manifest

    try:
        manifest = read_manifest(given)
    except (ManifestError, OSError, ValueError) as err:
        return [Item(given, error=f"not a readable manifest: {str(err).splitlines()[0] if str(err) else err}")]
    items = []
    for r in manifest.rows:
        if split and r.get("split") != split:
            continue
        if r.get("status", "ok") != "ok":
            items.append(Item(str(r["path"]), error=f"{r.get('status')} in the manifest: {r.get('reason') or ''}".strip()))
            continue
        row = {k: r.get(k) for k in ("path", "kind", "start_s", "end_s", "num_frames", "fps")}
        items.append(Item(str(r["path"]), dict(row, status="ok", label=None)))
    if not items:
        return [Item(given, error=f"the manifest has no rows{f' in split {split!r}' if split else ''}")]
    return items


def _walk(given: str, folder: Path) -> list[Item]:
    items = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        shown = os.path.join(given, os.path.relpath(dirpath, folder)) if here != folder else given
        if here != folder and is_frame_folder(here):
            items.append(Item(os.path.normpath(shown), _row(here, "frames")))
            dirnames[:] = []
            continue
        items += [_file(os.path.join(shown, name), here / name) for name in filenames if not name.startswith(".")]
    return sorted(items, key=lambda it: it.path)


def expand(paths: list[str], split: str | None = None) -> list[Item]:
    """Items for every PATH, in the order given (folders in name order)."""
    items: list[Item] = []
    for given in paths:
        p = Path(given).expanduser()
        if not p.exists():
            items.append(Item(given, error="no such file or folder"))
        elif p.is_dir():
            if is_frame_folder(p):
                items.append(Item(given, _row(p, "frames")))
            else:
                found = _walk(given, p)
                items += found or [Item(given, error="the folder holds no video, image or frame folder")]
        elif p.suffix.lower() in MANIFEST_EXTS:
            items += _manifest_items(given, split)
        else:
            items.append(_file(given, p))
    return items
