"""Feature mode (DESIGN.md §2): embed frames once with a frozen 2D backbone, keyed by row id.

The cache is a folder of shards ``shard-<hash>.safetensors``, each holding ``features``
(sum of T_i, D) float16 for a batch of ids whose frame counts T_i are listed in its metadata
(videos: T segment centres; stills: 1; untrimmed videos embedded at 1 fps: one per second). Extraction computes only ids that no
shard holds yet, so a killed run resumes where it stopped and the cache is shared by every
manifest (target, web images, web videos) of a workspace.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ..data import media, sampling, transforms
from ..data.datasets import frame_span, image_clip, worker_loader
from ..data.manifest import atomic_write_bytes


class _FrameDataset(Dataset):
    """Decodes the frames of one row: T segment centres of a video (or one frame per second
    with ``per_second``), one frame of a still image, or T frames of the pseudo-clip a row's
    ``clip_transform`` makes of its image (OmniSource §3.4)."""

    def __init__(self, rows: list[dict], size: int, frames: int, max_pixels: int, per_second: bool = False):
        self.rows, self.size, self.frames, self.max_pixels = rows, size, frames, max_pixels
        self.per_second = per_second
        self._motion: dict[str, dict] = {}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        try:
            if row["kind"] == "image":
                clip = image_clip(row, self.frames, self.max_pixels, self._motion)
            else:
                first, num, fps = frame_span(row)
                idx = (sampling.one_fps_indices(num, fps) if self.per_second
                       else sampling.tsn_indices(num, self.frames, train=False)) + first
                clip = media.read_frames(row["path"], idx, kind=row["kind"], max_pixels=self.max_pixels)
            clip = transforms.center_crop(transforms.resize_short(clip, self.size), self.size)
            return transforms.to_tensor(clip), i, ""
        except (media.MediaError, ValueError, KeyError, OSError) as err:
            return torch.zeros(0), i, str(err) or type(err).__name__


def _collate(items):
    return items


def cached_ids(cache_dir: Path) -> dict[str, tuple[Path, int, int]]:
    """id -> (shard file, first row, number of frames)."""
    index = {}
    for shard in sorted(Path(cache_dir).glob("shard-*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            meta = f.metadata()
        ids, lengths = json.loads(meta["ids"]), json.loads(meta["lengths"])
        offsets = np.cumsum([0] + lengths)
        for rid, start, n in zip(ids, offsets, lengths):
            index[rid] = (shard, int(start), int(n))
    return index


def load_failures(cache_dir: Path) -> dict[str, str]:
    path = Path(cache_dir) / "failures.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["id"]] = rec["reason"]
    return out


def _write_shard(cache_dir: Path, ids: list[str], feats: list[np.ndarray]) -> None:
    name = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
    tensor = torch.from_numpy(np.concatenate(feats)).to(torch.float16)
    meta = {"ids": json.dumps(ids), "lengths": json.dumps([len(f) for f in feats])}
    atomic_write_bytes(Path(cache_dir) / f"shard-{name}.safetensors",
                       lambda tmp: save_file({"features": tensor}, tmp, metadata=meta))


def missing_rows(rows: list[dict], cache_dir: Path) -> list[dict]:
    """The ``ok`` rows that the cache neither holds nor records as failed to decode."""
    done = set(cached_ids(cache_dir)) | set(load_failures(cache_dir)) if Path(cache_dir).is_dir() else set()
    return [r for r in rows if r.get("status", "ok") == "ok" and r["id"] not in done]


@torch.no_grad()
def extract_features(rows: list[dict], backbone: torch.nn.Module, cache_dir: Path, size: int = 128,
                     frames: int = 8, batch_size: int = 64, shard_size: int = 256, workers: int = 1,
                     max_pixels: int = 4096 * 4096, device: str | torch.device = "cpu",
                     progress: bool = True, per_second: bool = False) -> dict[str, str]:
    """Embed every ``ok`` row not yet cached; returns {id: reason} for rows that failed to decode."""
    from rich.progress import Progress

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_rows(rows, cache_dir)
    failures: dict[str, str] = {}
    if not todo:
        return {rid: reason for rid, reason in load_failures(cache_dir).items()}
    backbone = backbone.to(device).eval()
    loader = worker_loader(_FrameDataset(todo, size, frames, max_pixels, per_second), batch_size=1,
                           num_workers=workers, collate_fn=_collate)
    pending_ids, pending_feats = [], []
    batch_clips, batch_ids = [], []

    def flush_model():
        if not batch_clips:
            return
        lengths = [c.shape[1] for c in batch_clips]
        x = torch.cat([c.permute(1, 0, 2, 3) for c in batch_clips]).to(device)  # (sum T, 3, H, W)
        f = backbone(x).float().cpu().numpy()
        offsets = np.cumsum([0] + lengths)
        for k, rid in enumerate(batch_ids):
            pending_ids.append(rid)
            pending_feats.append(f[offsets[k]:offsets[k + 1]])
        batch_clips.clear()
        batch_ids.clear()

    def flush_shard():
        if pending_ids:
            _write_shard(cache_dir, list(pending_ids), list(pending_feats))
            pending_ids.clear()
            pending_feats.clear()

    with Progress(disable=not progress, transient=True) as bar, open(cache_dir / "failures.jsonl", "a") as flog:
        task = bar.add_task(f"features ({cache_dir.name})", total=len(todo))
        for items in loader:
            clip, i, reason = items[0]
            row = todo[i]
            bar.advance(task)
            if reason:
                failures[row["id"]] = reason
                flog.write(json.dumps({"id": row["id"], "path": row["path"], "reason": reason}) + "\n")
                flog.flush()
                continue
            batch_clips.append(clip)
            batch_ids.append(row["id"])
            if sum(c.shape[1] for c in batch_clips) >= batch_size:
                flush_model()
            if len(pending_ids) >= shard_size:
                flush_shard()
        flush_model()
        flush_shard()
    return load_failures(cache_dir)


def load_features(cache_dir: Path, ids: list[str]) -> dict[str, np.ndarray]:
    """Features (T, D) float16 for the requested ids that the cache holds."""
    index = cached_ids(cache_dir)
    by_shard: dict[Path, list[tuple[str, int, int]]] = {}
    for rid in ids:
        if rid in index:
            shard, start, n = index[rid]
            by_shard.setdefault(shard, []).append((rid, start, n))
    out = {}
    for shard, wanted in by_shard.items():
        with safe_open(str(shard), framework="np") as f:
            arr = f.get_tensor("features")
        for rid, start, n in wanted:
            out[rid] = arr[start:start + n]
    return out


def stack_features(cache_dir: Path, rows: list[dict], frames: int) -> tuple[np.ndarray, list[dict]]:
    """(N, frames, D) for the rows present in the cache (stills replicated), and those rows."""
    feats = load_features(cache_dir, [r["id"] for r in rows])
    kept = [r for r in rows if r["id"] in feats]
    if not kept:
        return np.zeros((0, frames, 0), np.float16), []
    # Stills are replicated; other lengths are sampled at segment centres.
    arrays = [a if len(a) == frames else a[sampling.tsn_indices(len(a), frames, train=False)]
              for a in (feats[r["id"]] for r in kept)]
    return np.stack(arrays), kept
