"""The one validator of media rows (DESIGN.md §1, "Cleaning: remove invalid/corrupt files").

Every path that gives a file a verdict uses it with the same rules (``Rules``, from the config's
``media`` section: ``min_size``, ``max_pixels``, ``animated``): target ``import`` + ``validate``,
``import-web`` and ``clean validate``. So one file gets one verdict wherever it comes in.

1. **Type by content** (``data.sniff.content_kind``: magic bytes, else a header-only probe), never
   by extension: a JPEG without an extension is an image, an HTML page named ``.mp4`` is not media.
   Content of another kind than the row needs (a video in an image source, a directory where a
   file should be) is ``rejected: wrong kind`` / ``corrupt``.
2. **Decode** with :func:`omnisource.data.media.check` (images: header, pixel budget, then a full
   load; videos: probe, pixel budget, then the first and last frames), so a decompression bomb is
   refused from its header before any pixel is decoded.
3. **Rules**: the short side at least ``min_size``; width x height at most ``max_pixels``;
   animated GIF/WebP/PNG ``animated="reject"`` (default) or ``"first-frame"`` (kept as a still).
4. **Colour normalisation** (when given ``normalized_dir``, as the web paths do): CMYK, alpha
   (composited on white), grayscale, palette and 16-bit images, EXIF-rotated images and kept
   animations get an RGB copy (as :func:`media.read_image` sees them), so every later reader sees
   the same 8-bit upright RGB pixels; ``path`` points to the copy and ``orig_path`` keeps the file.

Verdicts: status ``corrupt`` (does not decode, not media) or ``rejected`` (media that breaks a
rule; ``data.sniff.status_of`` is the one mapping) with a one-line reason; ok rows gain width,
height, num_frames, fps (and image_mode). Each checked row records ``validated_by`` (a digest of
the rules and the kind it was checked for) and ``validated_status``: a re-run skips rows checked
under the same rules, re-checks them when a rule changed, and leaves alone the verdicts other
stages gave (download, dedup).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..data import media
from ..data.manifest import atomic_write_bytes, read_manifest, write_manifest
from ..data.prepare import _run
from ..data.sniff import content_kind, status_of

ANIMATED = ("reject", "first-frame")
_PLAIN_MODES = ("RGB",)


@dataclass(frozen=True)
class Rules:
    """What a usable file is; the defaults are the config's (``media.min_size`` etc.)."""
    min_size: int = 32  # smallest accepted width and height, pixels
    max_pixels: int | None = media.MAX_PIXELS  # largest width x height (decompression bombs)
    animated: str = "reject"  # animated images: reject | first-frame

    def __post_init__(self):
        if self.animated not in ANIMATED:
            raise ValueError(f"animated must be one of {', '.join(ANIMATED)}, got {self.animated!r}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be 0 or more, got {self.min_size}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")

    @classmethod
    def from_config(cls, media_cfg) -> "Rules":
        return cls(media_cfg.min_size, media_cfg.max_pixels, media_cfg.animated)

    def digest(self, kind: str | None, normalize: bool) -> str:
        key = json.dumps(dict(asdict(self), kind=kind, normalize=normalize), sort_keys=True)
        return hashlib.sha1(key.encode()).hexdigest()[:12]


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


_ARTICLE = {"image": "an image", "video": "a video", "frames": "a frame folder"}


def _check(path: Path, want: str | None, rules: Rules) -> tuple[str, media.MediaInfo | None]:
    """(reason, info): reason "" for a usable file of kind `want` (None: any media kind)."""
    found, reason = content_kind(path)
    if found is None:
        return reason, None
    if want and found != want:
        if found == "frames":
            return "is a directory, not a file", None
        try:  # what is wrong with it in its own right (audio only, broken header) comes first
            media.probe(path, found)
        except media.MediaError as err:
            return str(err), None
        return f"wrong kind: the content is {_ARTICLE[found]}, {_ARTICLE.get(want, want)} was expected", None
    try:
        return "", media.check(path, found, rules.max_pixels, rules.min_size)
    except media.MediaError as err:
        return str(err), None


def validate_row(row: dict, rules: Rules = Rules(), normalized_dir: str | Path | None = None,
                 expected: str | None = None) -> dict:
    """The row after the checks (a new dict); never raises for a bad file. `expected`: the kind
    the caller needs (a web source's kind), default the row's own ``kind``."""
    want = expected or row.get("kind")
    # A row normalised before is checked again from its original file.
    path = Path(row["orig_path"] if row.get("orig_path") and row.get("image_mode") else row["path"])
    stamp = dict(validated_by=rules.digest(want, normalized_dir is not None))
    base = dict(row, path=str(path), **stamp)
    try:
        reason, info = _check(path, want, rules)
        if reason:
            status = status_of(reason)
            return dict(base, status=status, reason=reason, validated_status=status)
        new = dict(base, status="ok", reason="", width=int(info.width), height=int(info.height),
                   num_frames=int(info.num_frames), fps=float(info.fps), validated_status="ok")
        if info.kind != "image":
            return new
        mode, fmt, n_frames, orientation = _image_facts(path)
        if row.get("image_mode"):
            new.pop("orig_path", None)  # ours from an earlier check: set again below if still needed
        new["image_mode"] = mode
        if n_frames > 1 and rules.animated == "reject":
            return dict(new, status="rejected", reason=f"animated image ({fmt or 'unknown'}, {n_frames} frames)",
                        validated_status="rejected")
        needs = mode not in _PLAIN_MODES or orientation != 1 or n_frames > 1
        if needs and normalized_dir is not None:
            dst = _normalized_path(Path(normalized_dir), row, fmt)
            if not dst.exists():
                _write_rgb(media.read_image(path, rules.max_pixels), dst)
            with Image.open(dst) as im:
                w, h = im.size
            new.update(path=str(dst), orig_path=str(path), width=w, height=h)
        return new
    except Exception as err:  # noqa: BLE001 - one odd file must not stop a long run
        return dict(base, status="corrupt", reason=f"unreadable: {type(err).__name__}: {err}",
                    validated_status="corrupt")


def needs_check(row: dict, digest: str, force: bool = False) -> bool:
    """Ok rows not checked under these rules, and this validator's own earlier verdicts when a
    rule changed; verdicts of other stages (download, dedup) stand."""
    status = row.get("status") or "ok"
    mine = bool(row.get("validated_by")) and row.get("validated_status") == status
    if status != "ok" and not mine:
        return False
    return force or row.get("validated_by") != digest


def _validate_job(job: tuple) -> dict:
    return validate_row(*job)


def validate_rows(rows: list[dict], rules: Rules = Rules(), normalized_dir: str | Path | None = None,
                  expected: str | None = None, workers: int = 1, progress: bool = True, force: bool = False,
                  label: str = "validate") -> list[dict]:
    """validate_row over every row that needs it (see needs_check); the others are copied."""
    out = [dict(r) for r in rows]
    todo = [i for i, r in enumerate(rows)
            if needs_check(r, rules.digest(expected or r.get("kind"), normalized_dir is not None), force)]
    jobs = [(rows[i], rules, normalized_dir, expected) for i in todo]
    for i, new in zip(todo, _run(_validate_job, jobs, workers, progress, label)):
        out[i] = new
    return out


def verdict(path: str | Path, kind: str | None = None, rules: Rules = Rules()) -> tuple[str, str]:
    """("ok", "") or (status, reason) of one file; `kind` None accepts any media kind."""
    row = validate_row({"id": "x", "path": str(path), "kind": kind, "status": "ok"}, rules)
    return row["status"], row["reason"]


def counts(rows: list[dict]) -> str:
    """"12 ok, 3 corrupt, 1 rejected" (statuses present only)."""
    n = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "corrupt", "rejected", "duplicate")}
    return ", ".join(f"{v} {s}" for s, v in n.items() if v or s == "ok")


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


def normalized_dir(workspace, source: str) -> Path:
    """Where the RGB copies of a web source's images go: WORKSPACE/web/<source>/rgb/."""
    from ..workspace import Workspace

    return Workspace.of(workspace).web_files(source) / "rgb"


def validate_web(workspace: str | Path, sources: Sequence[str] | None = None, rules: Rules = Rules(),
                 normalize: bool = True, workers: int = 1, progress: bool = True, force: bool = False) -> list[Path]:
    """Validate the web manifests in place (atomically); returns their paths."""
    from ..workspace import Workspace

    ws = Workspace.of(workspace)
    done = []
    for path in web_manifests(ws, sources):
        manifest = read_manifest(path)
        source = path.stem[len("web_"):]
        norm_dir = normalized_dir(ws, source) if normalize else None
        manifest.rows = validate_rows(manifest.rows, rules, norm_dir, None, workers, progress, force,
                                      f"validate ({source})")
        write_manifest(manifest, path)
        done.append(path)
    return done
