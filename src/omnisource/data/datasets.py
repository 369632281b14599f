"""Torch datasets over manifest rows: decoded clips (pixel mode) and cached features (feature mode)."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import MediaConfig
from . import media, sampling, transforms

log = logging.getLogger(__name__)


def clip_indices(num_frames: int, cfg: MediaConfig, train: bool, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of one sample: (T,) for training, (views, T) for testing."""
    if cfg.sampler == "tsn":
        if train or cfg.test_views <= 1:
            return sampling.tsn_indices(num_frames, cfg.num_segments, train, rng)
        # Several TSN views: shift the segment centres by fractions of a segment.
        seg = num_frames / cfg.num_segments
        base = np.arange(cfg.num_segments) * seg
        views = [np.minimum((base + (v + 0.5) * seg / cfg.test_views).astype(int), num_frames - 1)
                 for v in range(cfg.test_views)]
        return np.stack(views)
    if train or cfg.test_views <= 1:
        return sampling.dense_indices(num_frames, cfg.num_segments, cfg.frame_interval, train, rng)
    return sampling.multiview_indices(num_frames, cfg.num_segments, cfg.frame_interval, cfg.test_views)


def frame_span(row: dict) -> tuple[int, int, float]:
    """(first frame, number of frames, fps) of the row, honouring start_s / end_s windows."""
    num, fps = row.get("num_frames"), row.get("fps")
    if not num or not fps:
        info = media.probe(row["path"], row["kind"])
        num, fps = info.num_frames, info.fps
    first = 0
    if row.get("start_s") is not None or row.get("end_s") is not None:
        start = row.get("start_s") or 0.0
        end = row.get("end_s") if row.get("end_s") is not None else num / max(fps, 1e-6)
        first = min(int(round(start * fps)), max(0, num - 1))
        num = max(1, min(num - first, int(round((end - start) * fps))))
    return first, int(num), float(fps or 0.0)


def image_clip(row: dict, num_frames: int, max_pixels: int, motion_cache: dict) -> np.ndarray:
    """An image row as a clip: one frame, or the pseudo-clip its ``clip_transform`` names."""
    from ..transform.image_to_clip import load_motion, render_clip

    image = media.read_image(row["path"], max_pixels=max_pixels)
    spec = row.get("clip_transform") or ""
    if not spec:
        return image[None]
    motion = None
    if spec.startswith("perspective"):
        path = row["motion_path"]
        if path not in motion_cache:
            motion_cache[path] = load_motion(path)
        fits = motion_cache[path]
        motion = fits.get(row.get("motion_key") or "agnostic", fits["agnostic"])
    rng = np.random.default_rng(int(row.get("render_seed") or 0))
    return render_clip(image, spec, num_frames, rng, motion, float(row.get("warp_scale") or 1.0))


def snippet_frames(row: dict) -> np.ndarray:
    """Frame indices of a snippet row (``frame_indices`` are 1 fps frames, i.e. seconds)."""
    _, num, fps = frame_span(dict(row, start_s=None, end_s=None))
    return np.minimum(((np.asarray(row["frame_indices"]) + 0.5) * fps).astype(np.int64), num - 1)


class EpochDataset(Dataset):
    """A dataset whose samples depend on the epoch. The counter lives in shared memory, so loader
    workers that outlive an epoch (persistent workers) see `set_epoch` too; a copy would not."""

    def __init__(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)


class VideoClipDataset(EpochDataset):
    """Clips of ``ok`` rows as uint8: (3, T, H, W) for training, (V*crops, 3, T, H, W) for
    multi-view testing; `transforms.to_float` scales a batch on the device (a quarter of the
    bytes through the worker queues). Videos are resized to the short side inside the decoder.

    A file that fails to decode at this point (validation missed it) is logged and replaced by
    the next row, so one bad file cannot stop an epoch.
    """

    def __init__(self, rows: list[dict], cfg: MediaConfig, train: bool, seed: int = 0):
        super().__init__()
        self.rows = [r for r in rows if r.get("status", "ok") == "ok"]
        self.cfg, self.train, self.seed = cfg, train, seed
        media.resolve_backend(cfg.backend)  # an unusable choice fails here, not in a worker
        self.backend = cfg.backend  # what was asked, not the decoder it chose: one log line per choice
        self.multi_view = not train and (cfg.test_views > 1 or cfg.test_crops > 1)
        self._motion: dict = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _frames(self, row: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Decoded frames and their (views, T) layout."""
        if row["kind"] == "image":
            clip = image_clip(row, self.cfg.num_segments, self.cfg.max_pixels, self._motion)
            clip = clip[sampling.tsn_indices(len(clip), self.cfg.num_segments, False)]
            return clip, np.arange(len(clip))[None]
        if row.get("frame_indices"):
            idx = snippet_frames(row)
            idx = idx[sampling.tsn_indices(len(idx), self.cfg.num_segments, self.train, rng)]
        else:
            first, num, _ = frame_span(row)
            idx = clip_indices(num, self.cfg, self.train, rng) + first
        views = idx.reshape(-1, idx.shape[-1])
        frames = media.read_frames(row["path"], views.ravel(), kind=row["kind"], max_pixels=self.cfg.max_pixels,
                                   backend=self.backend, short_side=self.cfg.resize_short)
        return frames, views

    def load(self, i: int) -> torch.Tensor:
        row = self.rows[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        frames, views = self._frames(row, rng)
        frames = transforms.resize_short(frames, self.cfg.resize_short)  # videos: already, in the decoder
        size = self.cfg.input_size
        if self.train:
            clip = transforms.random_crop(frames, size, rng)
            if rng.random() < 0.5:
                clip = transforms.hflip(clip)
            return transforms.to_uint8_tensor(clip)
        t = views.shape[1]
        clips = []
        for v in range(views.shape[0]):
            part = frames[v * t:(v + 1) * t]
            crops = transforms.three_crops(part, size) if self.cfg.test_crops >= 3 else [transforms.center_crop(part, size)]
            clips.extend(transforms.to_uint8_tensor(c) for c in crops)
        return torch.stack(clips) if self.multi_view else clips[0]

    def __getitem__(self, i: int):
        for attempt in range(5):
            j = (i + attempt) % len(self.rows)
            try:
                label = self.rows[j].get("label")
                return self.load(j), -1 if label is None else int(label), j  # -1: unlabelled (web, scoring)
            except media.MediaError as err:
                log.warning("skipping %s: %s", self.rows[j]["path"], err)
                if not self.train:
                    raise
        raise media.MediaError(f"5 consecutive rows failed to decode near row {i}")


class FeatureDataset(EpochDataset):
    """Cached per-frame features (N, T, D) with labels (N,) (int) or soft labels (N, C);
    ``ids``: the manifest ids of the N rows, so predictions can be matched to clips."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_frames: int | None = None,
                 train: bool = False, seed: int = 0, ids: list[str] | None = None):
        super().__init__()
        self.features, self.labels = features, labels
        self.ids = list(ids) if ids is not None else None
        self.num_frames = num_frames or features.shape[1]
        self.train, self.seed = train, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        f = self.features[i]
        if f.shape[0] != self.num_frames:
            # Stills (T=1) are replicated; longer caches are sampled TSN-style.
            rng = np.random.default_rng([self.seed, self.epoch, i])
            f = f[sampling.tsn_indices(f.shape[0], self.num_frames, self.train, rng)]
        y = self.labels[i]
        y = torch.as_tensor(y, dtype=torch.float32) if np.ndim(y) else int(y)
        return torch.from_numpy(np.asarray(f, dtype=np.float32)), y, i


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int = 0,
                drop_last: bool | None = None, seed: int = 0, persistent: bool | None = None) -> DataLoader:
    """A training loader shuffles with a permutation seeded by (seed, epoch) and, under torchrun,
    yields this rank's share of each global batch of ``batch_size`` (distributed.ddp).

    persistent (default: training loaders with workers over an EpochDataset): workers outlive
    the epoch, so a new epoch starts without forking and refilling them. Batches are pinned when
    CUDA is available, so `x.to(device, non_blocking=True)` overlaps the copy."""
    from ..distributed import ddp

    if persistent is None:
        persistent = train and num_workers > 0 and isinstance(dataset, EpochDataset)
    pin = torch.cuda.is_available()
    drop = train and len(dataset) > batch_size if drop_last is None else drop_last
    if train:
        ctx = ddp.context()
        ddp.local_batch(batch_size, ctx)
        sampler = ddp.ShardedBatchSampler(len(dataset), batch_size, True, drop, seed, ctx.rank, ctx.world_size)
        loader = worker_loader(dataset, batch_sampler=sampler, num_workers=num_workers,
                               persistent_workers=persistent and num_workers > 0, pin_memory=pin)
    else:
        loader = worker_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=drop,
                               persistent_workers=persistent and num_workers > 0, pin_memory=pin)
    loader.multi_view = getattr(dataset, "multi_view", False)
    return loader


def worker_loader(dataset: Dataset, **kwargs) -> DataLoader:
    """A DataLoader whose worker processes decode with one thread each (docs/concepts.md: more gave
    nothing on 2 cores).

    Forked workers inherit OpenCV's thread pool without its threads: using or even resizing it
    there hangs (in pthread_cond_destroy). So the process that starts workers makes OpenCV serial
    before it forks them, and only then: importing omnisource leaves OpenCV alone."""
    if kwargs.get("num_workers", 0) > 0:
        cv2.setNumThreads(1)
    return DataLoader(dataset, worker_init_fn=_one_thread, **kwargs)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)
