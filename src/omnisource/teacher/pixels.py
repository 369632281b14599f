"""Pixel-mode teacher scoring: whole networks over decoded clips (OmniSource §3.2, §3.5).

* Images and trimmed videos: one probability vector per sample, averaged over
  ``omni.score_views`` temporal views (multi-view testing) and over the ensemble.
* Untrimmed videos: cut into consecutive ``omni.clip_seconds`` windows, each window scored as a
  clip with the teacher's own sampling (a TSN's segments, a SlowOnly's dense frames) and views:
  ``clip_windows`` / ``clip_probs``, from which ``omni.untrimmed=clips`` keeps the positive clips.
  ``frame_probs`` (one row per second, for the snippets of 2D students): under
  ``omni.untrimmed=snippet`` a 2D teacher scores each 1 fps frame; otherwise, and always for a
  3D teacher (no meaningful one-frame output), each second gets the probabilities of the window
  it falls in.

Decoding runs in loader workers (``train.num_workers``); a file that fails to decode is left
unscored with a warning (``select`` then records it as corrupt), never a crash. The scorer is a
plain function of a shard's rows, so any engine can run it shard by shard.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import Config
from ..console import console
from ..data import media
from ..data.datasets import VideoClipDataset, frame_span, worker_loader
from ..data.transforms import to_float
from ..transform.untrimmed import window_rows, windows_of
from .score import Teacher, summarise


class _Tolerant(Dataset):
    """A VideoClipDataset for testing whose items are (clip or None, index, reason)."""

    def __init__(self, rows: list[dict], media_cfg):
        self.base = VideoClipDataset(rows, media_cfg, train=False)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        try:
            return self.base.load(i), i, ""
        except (media.MediaError, ValueError, OSError) as err:
            return None, i, str(err) or type(err).__name__


class _SecondFrames(Dataset):
    """The 1 fps frames of an untrimmed video as one-frame clips (F, 3, 1, H, W), or None + reason."""

    def __init__(self, rows: list[dict], media_cfg):
        self.rows, self.cfg = rows, media_cfg

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        from ..data import sampling, transforms

        r = self.rows[i]
        try:
            first, num, fps = frame_span(r)
            frames = media.read_frames(r["path"], sampling.one_fps_indices(num, fps) + first, kind=r["kind"],
                                       max_pixels=self.cfg.max_pixels)
        except (media.MediaError, ValueError, OSError) as err:
            return None, i, str(err) or type(err).__name__
        clip = transforms.center_crop(transforms.resize_short(frames, self.cfg.resize_short), self.cfg.input_size)
        return transforms.to_tensor(clip).permute(1, 0, 2, 3).unsqueeze(2), i, ""


def _collate(items):
    ok = [(x, i) for x, i, _ in items if x is not None]
    failed = [(i, reason) for x, i, reason in items if x is None]
    return (torch.stack([x for x, _ in ok]) if ok else None), [i for _, i in ok], failed


def is_frame_model(model: torch.nn.Module) -> bool:
    """2D (TSN-style) networks score single frames; 3D networks need clips."""
    return hasattr(model, "forward_frame_logits")


def scoring_media(teacher: Teacher, views: int, images: bool = False):
    """The teacher's own sampling, with ``views`` temporal views and one centre crop. A 2D
    teacher sees a still image once (its segment average over copies of it is the same)."""
    m = replace(teacher.cfg.media, test_views=views, test_crops=1)
    return replace(m, num_segments=1, test_views=1) if images and is_frame_model(teacher.model) else m


@torch.no_grad()
def clip_probs(teacher: Teacher, rows: list[dict], views: int, device, batch: int, workers: int,
               images: bool = False) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """{row index: (C,) probabilities averaged over views}, {row index: why it failed}."""
    dataset = _Tolerant(rows, scoring_media(teacher, views, images))
    loader = worker_loader(dataset, batch_size=batch, num_workers=workers, collate_fn=_collate)
    model = teacher.model.to(device).eval()
    probs, failed = {}, {}
    for x, idx, bad in loader:
        failed.update(dict(bad))
        if x is None:
            continue
        x = to_float(x.to(device))
        multi = dataset.base.multi_view
        b, v = (x.shape[0], x.shape[1]) if multi else (x.shape[0], 1)
        p = model(x.flatten(0, 1) if multi else x).float().softmax(-1).view(b, v, -1).mean(1).cpu().numpy()
        probs.update(zip(idx, p))
    return probs, failed


@torch.no_grad()
def frame_probs(teacher: Teacher, rows: list[dict], device, workers: int
                ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """{row index: (F, C) probabilities of the 1 fps frames} of a 2D teacher."""
    loader = worker_loader(_SecondFrames(rows, teacher.cfg.media), batch_size=1, num_workers=workers,
                           collate_fn=_collate)
    model = teacher.model.to(device).eval()
    probs, failed = {}, {}
    for x, idx, bad in loader:
        failed.update(dict(bad))
        if x is not None:
            probs[idx[0]] = model(to_float(x[0].to(device))).float().softmax(-1).cpu().numpy()
    return probs, failed


def pixel_scorer(teachers: list[Teacher], cfg: Config, kind: str, device):
    """``score(rows) -> records`` for one shard of a source of ``kind``, averaging the ensemble."""
    views, batch, workers = cfg.omni.score_views, cfg.train.batch_size, cfg.train.num_workers

    def warn(rows, failed):
        for i, reason in sorted(failed.items()):
            console.print(f"[yellow]score: {rows[i]['path']}: {reason}; left unscored[/]")

    def score_clips(rows: list[dict]) -> dict[int, np.ndarray]:
        parts, bad = [], {}
        for t in teachers:
            probs, failed = clip_probs(t, rows, views, device, batch, workers, images=kind == "image")
            parts.append(probs)
            bad.update(failed)
        warn(rows, bad)
        return {i: np.mean([p[i] for p in parts], axis=0) for i in parts[0] if i not in bad}

    def score(rows: list[dict]) -> list[dict]:
        if kind != "untrimmed":
            probs = score_clips(rows)
            return [{"id": rows[i]["id"], **summarise(p)} for i, p in sorted(probs.items())]
        windows, flat, owner = [], [], []
        for k, r in enumerate(rows):
            try:
                w = windows_of(r, cfg.omni.clip_seconds)
            except (media.MediaError, ValueError, OSError) as err:
                console.print(f"[yellow]score: {r['path']}: {err}; left unscored[/]")
                w = []
            windows.append(w)
            flat += window_rows(r, w)
            owner += [k] * len(w)
        by_window = score_clips(flat) if flat else {}
        per_frame = []
        frame_level = [is_frame_model(t.model) and cfg.omni.untrimmed == "snippet" for t in teachers]
        for t, own in zip(teachers, frame_level):  # 2D teachers, for snippets: their own 1 fps frame scores
            if own:
                probs, failed = frame_probs(t, rows, device, workers)
                warn(rows, failed)
                per_frame.append(probs)
        out = []
        for k, r in enumerate(rows):
            mine = [j for j, o in enumerate(owner) if o == k]
            if not mine or any(j not in by_window for j in mine) or any(k not in p for p in per_frame):
                continue
            cp = np.stack([by_window[j] for j in mine])
            seconds = max(1, int(round(windows[k][-1][1])))
            spread = cp[np.minimum((np.arange(seconds) // cfg.omni.clip_seconds).astype(int), len(cp) - 1)]
            frames = [p[k] for p in per_frame] + [spread] * frame_level.count(False)
            n = min(len(f) for f in frames)
            fp = np.mean([f[:n] for f in frames], axis=0)
            # A video's class evidence is its most confident frame (a long video mixes content).
            out.append({"id": r["id"], **summarise(fp.max(axis=0)), "frame_probs": fp.tolist(),
                        "clip_windows": [list(w) for w in windows[k]], "clip_probs": cp.tolist()})
        return out

    return score
