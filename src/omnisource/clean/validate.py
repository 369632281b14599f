"""Validation of web manifests (DESIGN.md §1, "Cleaning: remove invalid/corrupt files").

Every ok row is decoded with :func:`omnisource.data.media.check` (images: header, size guard, then a
full load; videos: probe, then decode the first and last frames) with a minimum size and a pixel
budget against decompression bombs. On top of that, for web images:

* **animated** GIF/WebP/PNG: ``animated="reject"`` (default; status rejected) or ``"first-frame"``
  (kept as a still of its first frame);
* **colour normalisation**: CMYK, alpha (composited on white), grayscale, palette and 16-bit images,
  EXIF-rotated images and kept animations get an RGB copy (as :func:`media.read_image` sees them) under
  ``normalized_dir`` (``WORKSPACE/web/<source>/rgb/``), so that every later reader, whatever library
  it uses, sees the same 8-bit upright RGB pixels. The row's ``path`` points to the copy and
  ``orig_path`` keeps the download.

Row results: status ``corrupt`` (does not decode) or ``rejected`` (decodes but fails a policy: too
small, too many pixels, animated) with a one-line reason; ok rows gain width, height, num_frames, fps,
image_mode and ``validated=True`` (validated rows are skipped by a re-run).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..data import media
from ..data.manifest import atomic_write_bytes, read_manifest, write_manifest
from ..data.prepare import _run

ANIMATED = ("reject", "first-frame")
_POLICY_REASONS = ("too small", "decompression bomb", "single frame video")
_PLAIN_MODES = ("RGB",)


def _image_facts(path: Path) -> tuple[str, str, int, int]:
    """(mode, format, number of frames, EXIF orientation) from the header."""
    with Image.open(path) as im:
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
            orientation = 1
        mode = "P+transparency" if "transparency" in im.info and im.mode != "RGBA" else im.mode
        return mode, im.format or "", int(getattr(im, "n_frames", 1) or 1), orientation


def _normalized_path(out_dir: Path, row: dict, fmt: str) -> Path:
    key = str(row.get("sha256") or row["id"])
    ext = ".jpg" if fmt in ("JPEG", "MPO") else ".png"
    return out_dir / key[:2] / f"{key}{ext}"


def _write_rgb(rgb: np.ndarray, dst: Path) -> None:
    im = Image.fromarray(rgb)
    if dst.suffix == ".jpg":
        atomic_write_bytes(dst, lambda tmp: im.save(tmp, "JPEG", quality=95))
    else:
        atomic_write_bytes(dst, lambda tmp: im.save(tmp, "PNG"))


def validate_row(row: dict, min_size: int = 32, max_pixels: int | None = media.MAX_PIXELS,
                 animated: str = "reject", normalized_dir: str | Path | None = None) -> dict:
    """The row after the checks (a new dict); never raises for a bad file."""
    path = Path(row["path"])
    kind = row.get("kind") or media.infer_kind(path)
    try:
        info = media.check(path, kind, max_pixels, min_size)
        new = dict(row, width=int(info.width), height=int(info.height), num_frames=int(info.num_frames),
                   fps=float(info.fps), validated=True)
        if kind != "image":
            return new
        mode, fmt, n_frames, orientation = _image_facts(path)
        new["image_mode"] = mode
        if n_frames > 1 and animated == "reject":
            return dict(new, status="rejected", reason=f"animated image ({fmt or 'unknown'}, {n_frames} frames)")
        needs = mode not in _PLAIN_MODES or orientation != 1 or n_frames > 1
        if needs and normalized_dir is not None:
            dst = _normalized_path(Path(normalized_dir), row, fmt)
            if not dst.exists():
                _write_rgb(media.read_image(path, max_pixels), dst)
            with Image.open(dst) as im:
                w, h = im.size
            new.update(path=str(dst), orig_path=str(path), width=w, height=h)
        return new
    except media.MediaError as err:
        reason = str(err)
        status = "rejected" if reason.startswith(_POLICY_REASONS) else "corrupt"
        return dict(row, status=status, reason=reason, validated=True)
    except Exception as err:  # noqa: BLE001 - one odd file must not stop a long run
        return dict(row, status="corrupt", reason=f"unreadable: {type(err).__name__}: {err}", validated=True)


def _validate_job(job: tuple) -> dict:
    return validate_row(*job)


def validate_web_rows(rows: list[dict], min_size: int = 32, max_pixels: int | None = media.MAX_PIXELS,
                      animated: str = "reject", normalized_dir: str | Path | None = None, workers: int = 1,
                      progress: bool = True, force: bool = False, engine=None) -> list[dict]:
    """validate_row over every ok row not validated before (all ok rows with ``force``); ``engine``
    (distributed.ray.RayOptions) runs the checks on a Ray cluster."""
    if animated not in ANIMATED:
        raise ValueError(f"animated must be one of {ANIMATED}, got {animated!r}")
    if min_size < 0:
        raise ValueError("min_size must be >= 0")
    todo = [i for i, r in enumerate(rows) if r.get("status", "ok") == "ok" and (force or not r.get("validated"))]
    out = [dict(r) for r in rows]
    jobs = [(rows[i], min_size, max_pixels, animated, normalized_dir) for i in todo]
    for i, new in zip(todo, _run(_validate_job, jobs, workers, progress, "validate (web)", engine)):
        out[i] = new
    return out


def web_manifests(workspace: str | Path, sources: Sequence[str] | None = None) -> list[Path]:
    """WORKSPACE/manifests/web_<source>.parquet for the given sources (default: all there are)."""
    from ..workspace import Workspace

    ws = Workspace.of(workspace)
    folder = ws.manifests_dir
    if sources:
        paths = [ws.web(s) for s in sources]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"web manifest not found: {', '.join(missing)}; run `omnisource download`")
        return paths
    paths = [ws.web(s) for s in ws.web_sources()]
    if not paths:
        raise FileNotFoundError(f"{folder}: no web_<source>.parquet manifests; run `omnisource download` first")
    return paths


def validate_web(workspace: str | Path, sources: Sequence[str] | None = None, min_size: int = 32,
                 max_pixels: int | None = media.MAX_PIXELS, animated: str = "reject", normalize: bool = True,
                 workers: int = 1, progress: bool = True, force: bool = False, engine=None) -> list[Path]:
    """Validate the web manifests in place (atomically); returns their paths."""
    from ..workspace import Workspace

    ws = Workspace.of(workspace)
    done = []
    for path in web_manifests(ws, sources):
        manifest = read_manifest(path)
        source = path.stem[len("web_"):]
        norm_dir = ws.web_files(source) / "rgb" if normalize else None
        manifest.rows = validate_web_rows(manifest.rows, min_size, max_pixels, animated, norm_dir, workers,
                                          progress, force, engine)
        write_manifest(manifest, path)
        done.append(path)
    return done
