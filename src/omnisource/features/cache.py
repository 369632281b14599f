"""Feature mode (docs/concepts.md): embed frames once with a frozen 2D backbone, keyed by row id.

The cache is a folder of shards ``shard-<hash>.safetensors``, each holding ``features``
(sum of T_i, D) float16 for a batch of ids whose frame counts T_i are listed in its metadata
(videos: T segment centres; stills: 1; untrimmed videos embedded at 1 fps: one per second).
Extraction computes only ids that no shard holds yet, so a killed run resumes where it stopped
and the cache is shared by every manifest (target, web images, web videos) of a workspace. A row
that fails to decode is recorded in ``failures.jsonl`` with its file's size and modification
time: it is not decoded again while the file stays the same, and is once the file changes (or
with ``retry_failed``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

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
        media.resolve_backend()  # chosen (and logged) once here, not in every worker
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


def _failure_records(cache_dir: Path) -> dict[str, dict]:
    """The last ``failures.jsonl`` record of each id (a retry that failed again appends one)."""
    path = Path(cache_dir) / "failures.jsonl"
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rec = json.loads(line)
            out[rec["id"]] = rec
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill
    return out


def load_failures(cache_dir: Path) -> dict[str, str]:
    """{id: reason} of the rows that failed to decode and have no features since."""
    records = _failure_records(cache_dir)
    cached = set(cached_ids(cache_dir)) if records else set()
    return {rid: rec["reason"] for rid, rec in records.items() if rid not in cached}


def file_state(path: str) -> list | None:
    """[size, mtime_ns] of a file (None when it cannot be read): a failure recorded with another
    state was a failure of another file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def missing_rows(rows: list[dict], cache_dir: Path, retry_failed: bool = False) -> list[dict]:
    """The ``ok`` rows the cache lacks. A row that failed to decode before counts as done while
    its file is unchanged (same path, size and modification time), so decode failures are not
    retried on every run, but are once the file is replaced; ``retry_failed`` retries them all."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return [r for r in rows if r.get("status", "ok") == "ok"]
    done = set(cached_ids(cache_dir))
    if not retry_failed:
        records = _failure_records(cache_dir)
        done |= {r["id"] for r in rows if r["id"] in records and records[r["id"]].get("path") == r["path"]
                 and records[r["id"]].get("file") == file_state(r["path"])}
    return [r for r in rows if r.get("status", "ok") == "ok" and r["id"] not in done]


AUTO_MIN_ROWS = 64  # below this, starting worker processes costs more than it saves


def decode_workers(requested: int, rows: int) -> int:
    """Loader worker processes: ``requested`` when set, else (0) one per core available to this
    process, or none (decode here) for fewer than AUTO_MIN_ROWS rows."""
    if requested > 0:
        return requested
    if rows < AUTO_MIN_ROWS:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


def _write_shard(cache_dir: Path, ids: list[str], feats: list[np.ndarray]) -> None:
    name = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
    tensor = torch.from_numpy(np.concatenate(feats)).to(torch.float16)
    meta = {"ids": json.dumps(ids), "lengths": json.dumps([len(f) for f in feats])}
    atomic_write_bytes(Path(cache_dir) / f"shard-{name}.safetensors",
                       lambda tmp: save_file({"features": tensor}, tmp, metadata=meta))


@torch.no_grad()
def embed_rows(rows: list[dict], backbone: torch.nn.Module, size: int = 128, frames: int = 8, batch_size: int = 64,
               workers: int = 1, max_pixels: int = 4096 * 4096, device: str | torch.device = "cpu",
               per_second: bool = False) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """(index in ``rows``, features (T, D) or None, failure reason) for every row, in row order:
    frames decoded in ``workers`` loader processes, the backbone run on ``batch_size`` frames at a time."""
    backbone = backbone.to(device).eval()
    loader = worker_loader(_FrameDataset(rows, size, frames, max_pixels, per_second), batch_size=1,
                           num_workers=workers, collate_fn=_collate)
    waiting: list[tuple[int, torch.Tensor | None, str]] = []  # rows in order, their clips not embedded yet

    def flush():
        clips = [c for _, c, _ in waiting if c is not None]
        feats = []
        if clips:
            x = torch.cat([c.permute(1, 0, 2, 3) for c in clips]).to(device)  # (sum T, 3, H, W)
            f = backbone(x).float().cpu().numpy()
            offsets = np.cumsum([0] + [c.shape[1] for c in clips])
            feats = [f[offsets[k]:offsets[k + 1]] for k in range(len(clips))]
        it = iter(feats)
        out = [(i, next(it) if c is not None else None, reason) for i, c, reason in waiting]
        waiting.clear()
        return out

    for items in loader:
        clip, i, reason = items[0]
        waiting.append((i, None if reason else clip, reason))
        if sum(c.shape[1] for _, c, _ in waiting if c is not None) >= batch_size:
            yield from flush()
    yield from flush()


def extract_features(rows: list[dict], backbone: torch.nn.Module, cache_dir: Path, size: int = 128,
                     frames: int = 8, batch_size: int = 64, shard_size: int = 256, workers: int = 0,
                     max_pixels: int = 4096 * 4096, device: str | torch.device = "cpu",
                     progress: bool = True, per_second: bool = False, label: str = "",
                     retry_failed: bool = False, embed=None) -> dict[str, str]:
    """Embed the ``ok`` rows the cache lacks (see missing_rows); returns {id: reason} of the rows
    that failed to decode. ``workers``: decoding processes (0: see decode_workers); ``label``
    names the task in progress output (default: the cache folder).

    Shards hold exactly ``shard_size`` rows (the last one fewer), in row order, so they are the
    same whichever engine computed them: ``embed(todo)`` (the ray engine) may replace
    :func:`embed_rows` and yield the same (index, features | None, reason) triples in order."""
    from ..progress import Progress

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_rows(rows, cache_dir, retry_failed)
    failures: dict[str, str] = {}
    if not todo:
        return load_failures(cache_dir)
    if embed is None:
        results = embed_rows(todo, backbone, size, frames, batch_size, decode_workers(workers, len(todo)), max_pixels,
                             device, per_second)
    else:
        results = embed(todo)
    pending_ids, pending_feats = [], []

    def flush_shard():
        _write_shard(cache_dir, pending_ids[:shard_size], pending_feats[:shard_size])
        del pending_ids[:shard_size], pending_feats[:shard_size]

    unit = "videos" if per_second else "files"
    with Progress(label or f"features ({cache_dir.name})", len(todo), unit, progress) as bar, \
            open(cache_dir / "failures.jsonl", "a") as flog:
        for i, feats, reason in results:
            row = todo[i]
            if feats is None:
                failures[row["id"]] = reason
                flog.write(json.dumps({"id": row["id"], "path": row["path"], "reason": reason,
                                       "file": file_state(row["path"])}) + "\n")
                flog.flush()
            bar.advance(note=f"{len(failures)} failed to decode" if failures else None)
            if feats is None:
                continue
            pending_ids.append(row["id"])
            pending_feats.append(feats)
            if len(pending_ids) >= shard_size:
                flush_shard()
        while pending_ids:
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
