"""The training loader: frames are exactly the sampled ones, uint8 through the workers, the
video back-end is an explicit, logged choice."""
import logging
import os

import numpy as np
import pytest
import torch

from media_factory import frame_number, write_video
from omnisource.config import MediaConfig, load_config
from omnisource.data import decode, media, pyav_decode, sampling
from omnisource.data.datasets import VideoClipDataset, clip_indices, make_loader
from omnisource.data.transforms import to_float


def flat_frame(i: int, size=(64, 48)) -> np.ndarray:
    """One flat colour per frame (R, G, B: base-16 digits of i), so crops, flips and resizes keep it."""
    w, h = size
    digits = [i % 16, (i // 16) % 16, (i // 256) % 16]
    return np.broadcast_to(np.array([8 + 16 * d for d in digits], np.uint8), (h, w, 3)).copy()


def flat_number(frame_chw: torch.Tensor) -> int:
    return sum(16 ** c * int(round((frame_chw[c].float().mean().item() - 8) / 16)) for c in range(3))


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory):
    """300 frames, one keyframe, B-frames: a TSN clip decodes forward and skips non-reference frames."""
    return write_video(tmp_path_factory.mktemp("v") / "long.mp4", 300, size=(64, 48), gop=250, bframes=3,
                       frame_fn=flat_frame)


def _rows(path, n=300):
    return [{"id": "a", "path": str(path), "kind": "video", "label": 2, "status": "ok", "num_frames": n,
             "fps": 25.0}]


def test_training_clips_are_the_sampled_frames_as_uint8(long_gop):
    cfg = MediaConfig(resize_short=24, input_size=24)
    ds = VideoClipDataset(_rows(long_gop), cfg, train=True, seed=3)
    for epoch in range(4):
        ds.set_epoch(epoch)
        x, y, j = ds[0]
        assert x.dtype == torch.uint8 and x.shape == (3, 8, 24, 24) and (y, j) == (2, 0)
        expected = clip_indices(300, cfg, True, np.random.default_rng([3, epoch, 0]))
        assert [flat_number(x[:, t]) for t in range(8)] == expected.tolist()
    f = to_float(x[None])
    assert f.dtype == torch.float32 and torch.allclose(f * 255, x[None].float())
    features = torch.rand(2, 3)
    assert to_float(features) is features  # float batches (features) pass unchanged


def test_test_views_are_uint8_and_exact(long_gop):
    cfg = MediaConfig(resize_short=24, input_size=24, test_views=2, test_crops=3)
    x, _, _ = VideoClipDataset(_rows(long_gop), cfg, train=False)[0]
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 8, 24, 24)
    views = clip_indices(300, cfg, False, np.random.default_rng(0))
    assert [flat_number(x[0, :, t]) for t in range(8)] == views[0].tolist()
    assert [flat_number(x[3, :, t]) for t in range(8)] == views[1].tolist()


def test_nonref_frames_are_skipped_and_frames_stay_exact(long_gop, monkeypatch):
    idx = sampling.tsn_indices(300, 8, train=True, rng=5)  # the last one lies past the keyframe at 250
    stats = {}
    got, last = media.decode_pyav(long_gop, idx, stats=stats)
    assert [flat_number(torch.from_numpy(got[int(i)]).permute(2, 0, 1)) for i in idx] == idx.tolist()
    assert last == max(idx) and stats["seeks"] == 1 and stats["skipped"] > 0.3 * 250
    # without the seek every frame up to the last is either decoded or skipped
    monkeypatch.setattr(pyav_decode, "SEEK_MIN_GAP", 10**9)
    got, last = media.decode_pyav(long_gop, idx, stats=stats)
    assert [flat_number(torch.from_numpy(got[int(i)]).permute(2, 0, 1)) for i in idx] == idx.tolist()
    assert stats["seeks"] == 0 and stats["skipped"] > 0.3 * last and stats["decoded"] + stats["skipped"] == last + 1
    full = {}
    media.decode_pyav(long_gop, idx, stats=full, skip_nonref=False)
    assert full["skipped"] == 0 and full["decoded"] == last + 1


def test_resized_in_the_decoder(long_gop):
    frames = media.read_frames(long_gop, [0, 299], backend="pyav", short_side=24)
    assert frames.shape == (2, 24, 32, 3)
    shrunk = media.read_frames(long_gop, [7], backend="pyav", short_side=12)  # > 2x: inside swscale
    assert shrunk.shape == (1, 12, 16, 3)
    assert flat_number(torch.from_numpy(shrunk[0]).permute(2, 0, 1)) == 7


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_conversion_starts_no_swscale_threads(long_gop, monkeypatch):
    """PyAV 18 converts with a slice thread per CPU unless told otherwise: the loader's workers
    (one per core already) must convert serially."""
    from omnisource.data import convert

    monkeypatch.setattr(convert, "_reformatters", {})  # a fresh swscale context, as in a new worker
    with decode.decoder(long_gop, None) as dec:
        _, frame = dec.next()
        before = _threads()
        rgb = convert.to_rgb(frame)
        shrunk = convert.to_rgb(frame, (16, 12))
        assert _threads() == before
    assert rgb.shape == (48, 64, 3) and shrunk.shape == (12, 16, 3) and flat_number(torch.from_numpy(rgb).permute(2, 0, 1)) == 0


def test_conversion_on_a_pyav_without_the_threads_option(long_gop, monkeypatch):
    from omnisource.data import convert

    class OldReformatter:  # PyAV before the `threads` option
        def reformat(self, frame, width=None, height=None, format=None, interpolation=None):
            return frame.reformat(width=width, height=height, format=format, interpolation=interpolation)

    monkeypatch.setattr(convert, "_reformatters", {os.getpid(): OldReformatter()})
    monkeypatch.setattr(convert, "_SWS_THREADS", {"threads": 1})
    with decode.decoder(long_gop, None) as dec:
        _, frame = dec.next()
        assert flat_number(torch.from_numpy(convert.to_rgb(frame)).permute(2, 0, 1)) == 0
    assert convert._SWS_THREADS is None  # asked once, then no more


def test_timestamps_off_the_grid_fall_back_to_counting(tmp_path):
    """pts that leave the frame grid (a gap skews the average rate) once skipping started: the
    decode restarts in full and frame indices still count decoded frames."""
    path = write_video(tmp_path / "gap.mp4", 200, gop=250, bframes=3, pts_fn=lambda i: i if i < 90 else i + 3)
    wanted = [5, 60, 95, 130, 170, 199]
    frames = media.read_frames(path, wanted, backend="pyav")
    assert [frame_number(f) for f in frames] == wanted


def test_early_end_in_skip_mode_decodes_again_in_full(tmp_path):
    """A file whose data stops before its announced frame count (index intact, bytes cut)."""
    path = write_video(tmp_path / "cut.mp4", 200, gop=250, bframes=3, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    wanted = [3, 50, 199]
    skipping, _ = media.decode_pyav(path, wanted)
    counting, _ = media.decode_pyav(path, wanted, skip_nonref=False)
    assert [frame_number(skipping[i]) for i in wanted] == [frame_number(counting[i]) for i in wanted]
    assert frame_number(skipping[199]) < 199  # the last decodable frame stands in


def test_backend_choice_is_checked_and_logged_once(monkeypatch, caplog, long_gop):
    monkeypatch.setattr(decode, "_announced", set())
    with caplog.at_level(logging.INFO, logger="omnisource.data.decode"):
        assert media.resolve_backend("auto") == "pyav"
        assert media.resolve_backend("auto") == "pyav"
        assert media.resolve_backend("pyav") == "pyav"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("video decoding: pyav (media.backend=auto")
    with pytest.raises(ValueError, match="media.backend must be one of"):
        media.resolve_backend("ffmpeg")
    with pytest.raises(Exception, match="expected one of 'auto', 'pyav', 'torchcodec'"):
        load_config(None, ["media.backend=ffmpeg"])


def test_torchcodec_that_does_not_import_is_a_one_line_error(monkeypatch, long_gop):
    monkeypatch.setattr(decode, "_TorchcodecDecoder", None)
    monkeypatch.setattr(decode, "_TORCHCODEC_ERROR", "ImportError: no module named torchcodec")
    cfg = load_config(None, ["media.backend=torchcodec"])
    with pytest.raises(ValueError) as err:
        VideoClipDataset(_rows(long_gop), cfg.media, train=True)
    assert "\n" not in str(err.value) and "torchcodec does not import here" in str(err.value)
    with pytest.raises(ValueError, match="torchcodec does not import here"):
        media.set_backend("torchcodec")
    assert media.read_frames(long_gop, [1], backend="auto").shape == (1, 48, 64, 3)  # auto: PyAV


def test_torchcodec_frames_match_pyav(long_gop):
    """Where torchcodec imports, it returns the same frames for the same indices."""
    if decode.torchcodec_decoder() is None:
        with pytest.raises(ValueError):
            media.read_frames(long_gop, [0], backend="torchcodec")
        return
    idx = [299, 0, 120, 121, 250, 400]
    tc = media.read_frames(long_gop, idx, backend="torchcodec", short_side=24)
    pa = media.read_frames(long_gop, idx, backend="pyav", short_side=24)
    assert tc.shape == pa.shape == (6, 24, 32, 3)
    numbers = [flat_number(torch.from_numpy(f).permute(2, 0, 1)) for f in tc]
    assert numbers == [flat_number(torch.from_numpy(f).permute(2, 0, 1)) for f in pa] == [299, 0, 120, 121, 250, 299]


def test_persistent_workers_see_each_epoch(long_gop):
    """set_epoch reaches workers that outlive the epoch (their dataset copy shares the counter)."""
    cfg = MediaConfig(resize_short=24, input_size=24)
    ds = VideoClipDataset(_rows(long_gop) * 2, cfg, train=True, seed=1)
    loader = make_loader(ds, batch_size=2, train=False, num_workers=1, persistent=True)
    assert loader.persistent_workers
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        (x, _, _), = list(loader)
        seen.append([flat_number(x[0, :, t]) for t in range(8)])
    assert seen == [clip_indices(300, cfg, True, np.random.default_rng([1, e, 0])).tolist() for e in range(2)]


def test_command_applies_backend_and_refuses_one_that_cannot_work(monkeypatch, tmp_path):
    """load_cfg (every command) makes media.backend this process's default, and an unusable
    choice stops the command before it creates a workspace."""
    from omnisource.cli.common import load_cfg
    from omnisource.console import detach_log

    monkeypatch.setattr(decode, "_default_backend", "auto")
    try:
        load_cfg(None, tmp_path / "ws", ["media.backend=pyav"])
        assert decode._default_backend == "pyav"
        monkeypatch.setattr(decode, "_TorchcodecDecoder", None)
        monkeypatch.setattr(decode, "_TORCHCODEC_ERROR", "ImportError: no module named torchcodec")
        with pytest.raises(ValueError, match="torchcodec does not import here"):
            load_cfg(None, tmp_path / "new", ["media.backend=torchcodec"])
        assert not (tmp_path / "new").exists() and decode._default_backend == "pyav"
    finally:
        detach_log()  # load_cfg logs to the workspace until the command ends


def test_torchcodec_is_imported_only_when_asked_for():
    """Its import costs seconds (torch, FFmpeg's libraries): PyAV decoding never pays it."""
    import subprocess
    import sys

    code = ("import sys; from omnisource.data import media; media.set_backend('auto'); "
            "assert media.resolve_backend() == 'pyav'; print('torchcodec' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "False"
