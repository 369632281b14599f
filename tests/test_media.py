from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media_factory import (frame_number, index_frame, write_audio, write_frames, write_gif,
                           write_image, write_png_bomb, write_video)
from omnisource.clean.validate import Rules, verdict
from omnisource.data import media

SMALL = Rules(min_size=8)  # these fixtures are 32x24: the old decode-check floor, not the web default of 32


def check(path, kind=None, max_pixels=media.MAX_PIXELS, rules=None):
    """The one validator's verdict (clean.validate) on a file."""
    return verdict(path, kind, rules or Rules(min_size=8, max_pixels=max_pixels))

ORIGINALS = Path(__file__).resolve().parents[2] / "shared/data/ucf101-6/originals"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "short_gop": write_video(d / "short.mp4", 120, gop=12, bframes=2),
        "long_gop": write_video(d / "long.mp4", 300, gop=250),
        "avi": write_video(d / "mpeg4.avi", 60, gop=10, codec="mpeg4", bframes=2),
        "mkv": write_video(d / "clip.mkv", 40, gop=12),
    }


def numbers(frames: np.ndarray) -> list[int]:
    return [frame_number(f) for f in frames]


# ----------------------------------------------------------------------------- videos
def test_probe(videos):
    info = media.probe(videos["short_gop"])
    assert (info.kind, info.num_frames, info.fps, info.width, info.height) == ("video", 120, 25.0, 32, 24)
    assert info.duration_s == pytest.approx(4.8, abs=0.1)
    assert media.probe(videos["mkv"]).num_frames == 40  # Matroska: duration x fps estimate


@pytest.mark.parametrize("name", ["short_gop", "long_gop", "avi", "mkv"])
def test_read_frames_order_duplicates_and_clamp(videos, name):
    n = media.probe(videos[name]).num_frames
    idx = [n - 1, 3, 0, 3, n // 2, 1, n + 50]
    frames = media.read_frames(videos[name], idx)
    assert frames.shape == (len(idx), 24, 32, 3) and frames.dtype == np.uint8
    assert numbers(frames) == [(i if i < n else n - 1) % 256 for i in idx]


def test_read_frames_tsn_pattern(videos):
    from omnisource.data.sampling import tsn_indices
    idx = tsn_indices(300, 8, train=True, rng=0)
    assert numbers(media.read_frames(videos["long_gop"], idx, backend="pyav")) == [i % 256 for i in idx]


def test_decode_forward_once_and_seek_only_across_keyframes(videos):
    stats = {}
    got, last = media.decode_pyav(videos["short_gop"], [0, 1, 2, 3], stats=stats)
    assert stats["seeks"] == 0 and stats["decoded"] <= 6 and last == 3
    got, _ = media.decode_pyav(videos["short_gop"], [0, 110], stats=stats)
    assert stats["seeks"] == 1 and stats["decoded"] < 20  # jumped to the keyframe at 108
    assert frame_number(got[110]) == 110
    got, _ = media.decode_pyav(videos["short_gop"], [5, 6, 40, 41, 80, 81, 115], stats=stats)
    assert stats["seeks"] <= 3 and stats["decoded"] < 60  # never one seek per frame
    assert [frame_number(got[i]) for i in (5, 6, 40, 41, 80, 81, 115)] == [5, 6, 40, 41, 80, 81, 115]
    media.decode_pyav(videos["long_gop"], [0, 200], stats=stats)
    assert stats["seeks"] == 0  # no keyframe in between: decoding on is cheaper than seeking


def test_read_frames_arguments(videos):
    with pytest.raises(ValueError):
        media.read_frames(videos["short_gop"], [-1])
    with pytest.raises(ValueError):
        media.read_frames(videos["short_gop"], [0], backend="nope")
    if media._TorchcodecDecoder is None:
        with pytest.raises(ValueError):
            media.read_frames(videos["short_gop"], [0], backend="torchcodec")
    with pytest.raises(media.MediaError, match="max_pixels"):
        media.read_frames(videos["short_gop"], [0], max_pixels=100)


def test_frame_window():
    info = media.MediaInfo("video", 250, 25.0, 10.0, 32, 24)
    assert media.frame_window(info, 2.0, 4.0) == (50, 50)
    assert media.frame_window(info, None, None) == (0, 250)
    assert media.frame_window(info, 9.0, 30.0) == (225, 25)
    assert media.frame_window(info, 20.0, 30.0) == (249, 1)


# ----------------------------------------------------------------------------- frames and images
def test_frames_folder(tmp_path):
    folder = write_frames(tmp_path / "f", 20)
    info = media.probe(folder)
    assert (info.kind, info.num_frames) == ("frames", 20)
    assert numbers(media.read_frames(folder, [19, 0, 7, 7, 30])) == [19, 0, 7, 7, 19]
    assert check(folder) == ("ok", "")
    assert check(tmp_path / "missing", kind="frames")[0] == "corrupt"


@pytest.mark.parametrize("mode, expected", [("RGB", 100), ("L", 100), ("CMYK", 100), ("I;16", 100),
                                            ("P", 255), ("LA", 100)])
def test_read_image_modes(tmp_path, mode, expected):
    ext = "jpg" if mode == "CMYK" else "png"
    path = write_image(tmp_path / f"im.{ext}", mode=mode if mode != "LA" else "RGB")
    if mode == "LA":
        Image.new("LA", (20, 16), (100, 255)).save(path)
    arr = media.read_image(path)
    assert arr.shape == (16, 20, 3) and arr.dtype == np.uint8
    assert abs(int(arr[5, 5, 0]) - expected) <= 3, mode  # P: entry 0 is transparent -> white
    assert media.probe(path).kind == "image"


def test_alpha_composited_on_white_and_16bit_scaled(tmp_path):
    arr = media.read_image(write_image(tmp_path / "a.png", "RGBA", value=0, alpha=0))
    assert arr.min() == 255
    arr = media.read_image(write_image(tmp_path / "half.png", "RGBA", value=0, alpha=128))
    assert 120 <= arr[0, 0, 0] <= 135
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w16.png")
    assert media.read_image(tmp_path / "w16.png").min() == 255  # 16-bit white stays white


def test_animated_gif_first_frame_and_image_as_clip(tmp_path):
    gif = write_gif(tmp_path / "a.gif", values=(10, 200, 90))
    assert abs(int(media.read_image(gif)[0, 0, 0]) - 10) <= 2
    clip = media.read_frames(gif, [0, 5, 9])
    assert clip.shape == (3, 16, 20, 3)


# ----------------------------------------------------------------------------- validation
def _half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_validate_ok(videos, tmp_path):
    for path in videos.values():
        assert check(path) == ("ok", "")
    assert check(write_image(tmp_path / "ok.png")) == ("ok", "")
    assert verdict(videos["short_gop"]) == ("rejected", "too small: 32x24 is below min_size=32")  # default rules


def test_validate_corrupt_videos(videos, tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    faststart = write_video(tmp_path / "fs.mp4", 200, gop=12, size=(64, 48), faststart=True)
    cases = {
        "zero.mp4": ("corrupt", "zero-byte"),
        _half(videos["short_gop"], tmp_path / "half.mp4").name: ("corrupt", "truncated"),
        _half(faststart, tmp_path / "half_fs.mp4").name: ("corrupt", "truncated"),
        "random.mp4": ("corrupt", "not a media file"),
        "text.mp4": ("corrupt", "not a media file: text"),
        write_audio(tmp_path / "audio.mp4").name: ("rejected", "audio only"),
        write_audio(tmp_path / "audio.mkv", codec="mp2").name: ("rejected", "audio only"),
        write_video(tmp_path / "one.mp4", 1).name: ("rejected", "single frame"),
        write_video(tmp_path / "tiny.mp4", 10, size=(6, 4)).name: ("rejected", "too small"),
        "missing.mp4": ("corrupt", "missing"),
    }
    for name, (want, reason) in cases.items():
        status, why = check(tmp_path / name)
        assert status == want and reason in why, (name, status, why)
    assert check(videos["short_gop"], max_pixels=500) == ("rejected", "decompression bomb: 32x24 exceeds max_pixels=500")
    with pytest.raises(media.MediaError, match="zero-byte"):
        media.read_frames(tmp_path / "zero.mp4", [0])


def test_validate_corrupt_images(tmp_path):
    bomb = write_png_bomb(tmp_path / "bomb.png", (30000, 30000))
    assert check(bomb)[0] == "rejected" and "decompression bomb" in check(bomb)[1]
    assert "5000x5000 exceeds" in check(write_png_bomb(tmp_path / "b2.png", (5000, 5000)))[1]
    assert "decompression bomb" in check(write_image(tmp_path / "big.png", size=(64, 64)), max_pixels=1000)[1]
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "full.jpg")
    _half(tmp_path / "full.jpg", tmp_path / "cut.jpg")
    assert check(tmp_path / "cut.jpg")[0] == "corrupt"
    (tmp_path / "text.jpg").write_text("hello")
    assert check(tmp_path / "text.jpg") == ("corrupt", "not a media file: text")
    assert check(write_image(tmp_path / "tiny.png", size=(4, 4))) == ("rejected", "too small: 4x4 is below min_size=8")
    with pytest.raises(media.MediaError):
        media.read_image(bomb)


@pytest.mark.skipif(not ORIGINALS.exists(), reason="shared UCF101 originals not present")
def test_real_original_avi():
    path = ORIGINALS / "Archery/v_Archery_g10_c01.avi"
    info = media.probe(path)
    assert (info.width, info.height, round(info.fps)) == (320, 240, 25) and info.num_frames > 50
    assert verdict(path) == ("ok", "")
    frames = media.read_frames(path, [info.num_frames - 1, 0, 40, 40])
    assert frames.shape == (4, 240, 320, 3)
    np.testing.assert_array_equal(frames[2], frames[3])
    seq = media.read_frames(path, list(range(41)))
    np.testing.assert_array_equal(seq[40], frames[2])  # same frame by sequential decode
    np.testing.assert_array_equal(seq[0], frames[1])


def test_index_pattern_round_trip():
    assert [frame_number(index_frame(i)) for i in (0, 1, 15, 16, 17, 255)] == [0, 1, 15, 16, 17, 255]


def _first_number(path: str) -> int:
    import gc

    gc.collect()  # finalises whatever the parent left behind, as a worker's GC eventually does
    return frame_number(media.read_frames(path, [7])[0])


def test_forked_worker_after_decoding_in_parent(videos):
    """Decoding in the parent must leave no demux generator for the GC to finish after the
    container closed: that hung or crashed forked DataLoader workers."""
    import gc
    import multiprocessing

    gc.disable()
    try:
        media.read_frames(videos["long_gop"], [0, 10, 50])
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply_async(_first_number, (str(videos["short_gop"]),)).get(timeout=20) == 7
    finally:
        gc.enable()
