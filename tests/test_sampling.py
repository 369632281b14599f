import numpy as np
import pytest

from omnisource.data import sampling, transforms


# ----------------------------------------------------------------------------- samplers
def test_tsn_test_takes_segment_centres():
    np.testing.assert_array_equal(sampling.tsn_indices(10, 5, train=False), [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(sampling.tsn_indices(80, 8, train=False), np.arange(5, 80, 10))


def test_tsn_short_video_repeats_frames():
    np.testing.assert_array_equal(sampling.tsn_indices(3, 5, train=False), [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(sampling.tsn_indices(1, 4, train=True, rng=0), [0, 0, 0, 0])


def test_tsn_train_one_frame_inside_each_segment():
    for seed in range(20):
        idx = sampling.tsn_indices(100, 8, train=True, rng=seed)
        edges = np.arange(9) * 12.5  # frame k covers [k, k+1): it may straddle two segments
        assert np.all(idx >= np.floor(edges[:-1])) and np.all(idx < np.ceil(edges[1:]))
    draws = np.stack([sampling.tsn_indices(100, 8, True, np.random.default_rng(s)) for s in range(200)])
    assert len(np.unique(draws[:, 0])) > 8  # really random within the segment
    same = sampling.tsn_indices(100, 8, True, 3), sampling.tsn_indices(100, 8, True, 3)
    np.testing.assert_array_equal(*same)


def test_dense_centred_at_test_random_in_training():
    np.testing.assert_array_equal(sampling.dense_indices(100, 8, 2, train=False), np.arange(42, 57, 2))
    for seed in range(20):
        idx = sampling.dense_indices(100, 8, 4, train=True, rng=seed)
        assert np.all(np.diff(idx) == 4) and idx[0] >= 0 and idx[-1] < 100


def test_dense_short_video_loops_or_clamps():
    np.testing.assert_array_equal(sampling.dense_indices(5, 4, 2, train=False), [0, 2, 4, 1])
    clamped = sampling.dense_indices(5, 4, 2, train=False, out_of_bound="clamp")
    np.testing.assert_array_equal(clamped, [0, 2, 4, 4])
    idx = sampling.dense_indices(3, 16, 1, train=True, rng=1)
    assert idx.min() >= 0 and idx.max() <= 2


def test_multiview_evenly_spaced():
    views = sampling.multiview_indices(100, 4, 1, 3)
    assert views.shape == (3, 4)
    np.testing.assert_array_equal(views[:, 0], [16, 48, 80])
    one_view = sampling.multiview_indices(100, 8, 2, 1)[0]
    np.testing.assert_array_equal(one_view, sampling.dense_indices(100, 8, 2, False))
    short = sampling.multiview_indices(5, 4, 2, 2)
    assert short.shape == (2, 4) and short.max() < 5


def test_one_fps():
    np.testing.assert_array_equal(sampling.one_fps_indices(60, 25), [12, 37])  # 0.4 s tail dropped
    np.testing.assert_array_equal(sampling.one_fps_indices(70, 25), [12, 37, 60])  # 0.8 s tail kept
    np.testing.assert_array_equal(sampling.one_fps_indices(50, 25), [12, 37])
    np.testing.assert_array_equal(sampling.one_fps_indices(3, 25), [1])
    idx = sampling.one_fps_indices(300, 29.97)
    assert len(idx) == 10 and idx.max() < 300 and np.all(np.diff(idx) >= 29)


def test_bad_arguments():
    with pytest.raises(ValueError):
        sampling.tsn_indices(0, 8, False)
    with pytest.raises(ValueError):
        sampling.dense_indices(10, 0, 1, False)
    with pytest.raises(ValueError):
        sampling.one_fps_indices(10, 0)


# ----------------------------------------------------------------------------- transforms
def _clip(t=4, h=60, w=80):
    """Frame t = base pattern + t, so a crop shared by all frames keeps frame t - frame 0 == t."""
    base = (np.arange(h * w).reshape(h, w) % 200).astype(np.uint8)
    return np.stack([np.repeat((base + i)[..., None], 3, axis=2) for i in range(t)])


def test_resize_and_crops():
    clip = _clip()
    assert transforms.resize_short(clip, 30).shape == (4, 30, 40, 3)
    assert transforms.resize_short(clip[:, :, :50], 30).shape == (4, 36, 30, 3)
    c = transforms.center_crop(clip, 20)
    np.testing.assert_array_equal(c[0], clip[0, 20:40, 30:50])
    rng = np.random.default_rng(0)
    for crop in (transforms.random_crop(clip, 32, rng), transforms.random_crop(clip, (24, 40), rng)):
        diff = crop.astype(int) - crop[:1].astype(int)
        assert np.all(diff == np.arange(4)[:, None, None, None])  # the same box on every frame
    for fn in (transforms.multi_scale_crop, transforms.random_resized_crop):
        assert fn(clip, 24, rng).shape == (4, 24, 24, 3)
    assert transforms.random_crop(clip[:, :10, :10], 16, rng).shape == (4, 16, 16, 3)  # upscaled first


def test_three_crops_and_flip_and_tensor():
    clip = _clip()
    three = transforms.three_crops(clip, 60)
    assert three.shape == (3, 4, 60, 60, 3)
    np.testing.assert_array_equal(three[0], clip[:, :, :60])
    np.testing.assert_array_equal(three[2], clip[:, :, 20:])
    tall = transforms.three_crops(clip.transpose(0, 2, 1, 3), 60)
    np.testing.assert_array_equal(tall[2], clip.transpose(0, 2, 1, 3)[:, 20:])
    np.testing.assert_array_equal(transforms.hflip(clip)[:, :, 0], clip[:, :, -1])
    t = transforms.to_tensor(transforms.hflip(clip))
    assert t.shape == (3, 4, 60, 80) and t.dtype.is_floating_point
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    assert abs(float(t[0, 1, 0, 0]) - clip[1, 0, -1, 0] / 255) < 1e-6
