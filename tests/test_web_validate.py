"""Validation of web manifests: decode checks, size guards, animations, colour normalisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from media_factory import write_gif, write_image, write_png_bomb, write_video
from omnisource.clean.validate import Rules, validate_rows, validate_web
from omnisource.data import media
from omnisource.data.manifest import Manifest, new_row, read_manifest, write_manifest


def _rows(files: dict[str, tuple[str, Path]]) -> list[dict]:
    return [new_row("web", kind, str(p), id=name, weak_labels=["q"]) for name, (kind, p) in files.items()]


def make_files(d: Path) -> dict[str, tuple[str, Path]]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good = d / "good.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(good)
    trunc = d / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    rotated = d / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    yy, xx = np.mgrid[0:40, 0:64]
    smooth = np.stack([xx * 4, yy * 6, (xx + yy) * 2], axis=2).astype(np.uint8)
    Image.fromarray(smooth).save(rotated, exif=exif, quality=95)
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("<html>not an image</html>")
    video = write_video(d / "clip.mp4", 10, size=(64, 48))
    broken = d / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:600])
    return {
        "good": ("image", good),
        "trunc": ("image", trunc),
        "empty": ("image", d / "empty.png"),
        "text": ("image", d / "text.jpg"),
        "small": ("image", write_image(d / "small.png", "RGB", (12, 40))),
        "bomb": ("image", write_png_bomb(d / "bomb.png", (20000, 20000))),
        "big": ("image", write_image(d / "big.png", "L", (1200, 1000))),
        "cmyk": ("image", write_image(d / "cmyk.jpg", "CMYK", (40, 40), value=120)),
        "rgba": ("image", write_image(d / "rgba.png", "RGBA", (40, 40), value=0, alpha=0)),
        "gray": ("image", write_image(d / "gray.png", "L", (40, 40), value=70)),
        "gray16": ("image", write_image(d / "gray16.png", "I;16", (40, 40), value=200)),
        "palette": ("image", write_image(d / "palette.png", "P", (40, 40), value=9)),
        "gif": ("image", write_gif(d / "anim.gif", (10, 200, 90), (40, 40))),
        "rotated": ("image", rotated),
        "video": ("video", video),
        "broken_video": ("video", broken),
        "missing": ("image", d / "gone.jpg"),
    }


def test_statuses_and_reasons(tmp_path):
    files = make_files(tmp_path / "files")
    out = validate_rows(_rows(files), Rules(min_size=32, max_pixels=1_000_000, animated="reject"),
                        normalized_dir=tmp_path / "rgb", progress=False)
    by = {r["id"]: r for r in out}
    status = {k: (r["status"], r["reason"]) for k, r in by.items()}
    for ok in ("good", "cmyk", "rgba", "gray", "gray16", "palette", "rotated", "video"):
        assert status[ok] == ("ok", ""), (ok, status[ok])
    for bad in ("trunc", "empty", "text", "broken_video", "missing"):
        assert status[bad][0] == "corrupt" and status[bad][1], (bad, status[bad])
    assert status["small"][0] == "rejected" and status["small"][1].startswith("too small: 12x40")
    assert status["bomb"][0] == "rejected" and "decompression bomb" in status["bomb"][1]
    assert status["big"][0] == "rejected" and "exceeds max_pixels=1000000" in status["big"][1]
    assert status["gif"] == ("rejected", "animated image (GIF, 3 frames)")
    assert by["video"]["num_frames"] == 10 and (by["video"]["width"], by["video"]["height"]) == (64, 48)
    assert by["good"]["path"] == str(files["good"][1]) and by["good"]["image_mode"] == "RGB"
    # Normalised copies: plain 8-bit RGB, upright, alpha on white; the original path is kept.
    for name, mode in (("cmyk", "CMYK"), ("rgba", "RGBA"), ("gray", "L"), ("gray16", "I;16"),
                       ("palette", "P+transparency"), ("rotated", "RGB")):
        row = by[name]
        assert row["image_mode"] == mode and row["orig_path"] == str(files[name][1])
        assert Path(row["path"]).parent.parent == tmp_path / "rgb"
        with Image.open(row["path"]) as im:
            assert im.mode == "RGB" and len(getattr(im, "getbands")()) == 3
        a, b = media.read_image(row["path"]).astype(int), media.read_image(files[name][1]).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= (6 if row["path"].endswith(".jpg") else 0)
    assert Image.open(by["rgba"]["path"]).getpixel((5, 5)) == (255, 255, 255)
    assert Image.open(by["gray16"]["path"]).getpixel((5, 5)) == (200, 200, 200)
    assert (by["rotated"]["width"], by["rotated"]["height"]) == (40, 64)
    assert by["cmyk"]["path"].endswith(".jpg") and by["rgba"]["path"].endswith(".png")


def test_first_frame_policy_and_no_normalisation(tmp_path):
    files = make_files(tmp_path / "files")
    rows = _rows({k: files[k] for k in ("gif", "gray")})
    first = Rules(min_size=8, animated="first-frame")
    out = validate_rows(rows, first, normalized_dir=tmp_path / "rgb", progress=False)
    gif = out[0]
    assert gif["status"] == "ok" and Path(gif["path"]).suffix == ".png"
    assert Image.open(gif["path"]).getpixel((3, 3)) == (10, 10, 10)
    out = validate_rows(rows, first, normalized_dir=None, progress=False)
    assert [r["path"] for r in out] == [str(files["gif"][1]), str(files["gray"][1])]


def test_stage_in_place_resumable_and_cli(tmp_path):
    from typer.testing import CliRunner

    from omnisource.cli import app

    files = make_files(tmp_path / "files")
    ws = tmp_path / "ws"
    rows = _rows({k: files[k] for k in ("good", "trunc", "gray", "gif")})
    rows[0]["status"], rows[0]["reason"] = "rejected", "http 404"  # a failed download stays as it is
    path = write_manifest(Manifest(rows, []), ws / "manifests" / "web_s.parquet")
    res = CliRunner().invoke(app, ["clean", "validate", "-w", str(ws), "--min-size", "16"])
    assert res.exit_code == 0, res.output
    got = {r["id"]: r for r in read_manifest(path).rows}
    assert got["good"]["reason"] == "http 404" and got["trunc"]["status"] == "corrupt"
    assert got["gif"]["status"] == "rejected" and got["gray"]["status"] == "ok"
    assert Path(got["gray"]["path"]).is_relative_to(ws / "web" / "s" / "rgb")
    first = read_manifest(path).rows
    validate_web(ws, ["s"], Rules(min_size=16), progress=False)  # validated rows are skipped
    assert read_manifest(path).rows == first
    res = CliRunner().invoke(app, ["clean", "validate", "-w", str(ws), "--source", "nope"])
    assert res.exit_code == 2 and "web manifest not found" in res.output
    res = CliRunner().invoke(app, ["clean", "validate", "-w", str(ws), "--animated", "keep"])
    assert res.exit_code == 2 and "animated" in res.output


def test_import_web_of_a_downloaded_manifest_keeps_its_verdicts(tmp_path):
    """download/dedup write manifests/web_<source>.parquet; a config web source of the same name
    pointing at it imports it in place without losing the duplicate/rejected rows."""
    from omnisource.config import load_config
    from omnisource.data.manifest import Manifest, new_row, read_manifest, write_manifest
    from omnisource.web import import_web
    from omnisource.workspace import Workspace

    ws = tmp_path / "ws"
    good = write_image(tmp_path / "a.jpg", size=(40, 36))
    dup = write_image(tmp_path / "b.jpg", size=(40, 36), value=30)
    rows = [new_row("crawl", "image", str(good), weak_labels=["archery"]),
            new_row("crawl", "image", str(dup), weak_labels=["archery"], status="duplicate", reason="near-duplicate of val"),
            new_row("crawl", "image", str(tmp_path / "gone.jpg"), weak_labels=["archery"], status="rejected",
                    reason="HTTP 404")]
    path = write_manifest(Manifest(rows, []), Workspace(ws).web("crawl"))
    cfg = load_config(None, [f"workspace={ws}", f"web=[{{name: crawl, kind: image, format: manifest, root: '{path}'}}]"])
    import_web(cfg, ws)
    out = {r["path"]: r for r in read_manifest(path).rows}
    assert out[str(good)]["status"] == "ok" and out[str(good)]["width"] == 40
    assert out[str(dup)]["status"] == "duplicate" and out[str(dup)]["reason"] == "near-duplicate of val"
    assert out[str(tmp_path / "gone.jpg")]["status"] == "rejected"
