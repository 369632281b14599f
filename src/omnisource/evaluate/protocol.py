"""The real-data benchmark protocol (docs/guide.md, "Benchmark data"), as reusable functions.

Target: UCF101-6, cross-validated over group folds of 08–25 (``folds``): per fold, k labeled
videos per class from the other groups, validation on the fold's groups (or, with a test folder,
training from all of 08–25 and evaluation on that folder). Web images: the query folders matching target classes, with images
of the other queries injected as noise at a seeded ratio (ground truth kept). Web videos: the
training-group videos not drawn as labeled act as weakly-labelled web videos, trimmed (weak
labels flipped at a seeded ratio) and untrimmed (several clips of different classes in a row,
weak label = the class of one of them, its position kept as ground truth).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import importers
from ..data.manifest import Manifest, make_id, new_row
from .folds import group_folds

GROUPS = [f"{g:02d}" for g in range(8, 26)]  # the official split-1 training groups shipped here
TRAIN_GROUPS = [f"{g:02d}" for g in range(12, 26)]  # the single split of `omnisource sweep` runs
VAL_GROUPS = ["08", "09", "10", "11"]
N_FOLDS = 4
# The web-sports query of each UCF101-6 class that has one.
QUERY_MAP = {"archery": "Archery", "basketball": "BasketballDunk", "surfing": "Surfing",
             "horse racing": "HorseRace"}


@dataclass
class Split:
    manifest: Manifest  # target rows with split = train | val | unused
    classes: list[str]

    def rows(self, split: str) -> list[dict]:
        return [r for r in self.manifest.rows if r["split"] == split and r["status"] == "ok"]


def folds(n_folds: int = N_FOLDS) -> list[list[str]]:
    """The validation groups of each cross-validation fold over 08–25."""
    return group_folds(GROUPS, n_folds)


def target_split(data: Path, k: int, seed: int, test_root: Path | None = None,
                 val_groups: list[str] | None = None) -> Split:
    """k labeled videos per class (k <= 0: all) from the groups of 08–25 outside ``val_groups``,
    validation = ``val_groups`` (default: the first fold), or, with ``test_root``, training
    groups = all of 08–25 and validation = the videos under ``test_root``. The training-group
    videos not drawn as labeled are ``unused`` (the benchmarks' web videos)."""
    manifest = importers.from_folders(Path(data) / "ucf101-6" / "videos")
    val = [] if test_root is not None else list(val_groups or folds()[0])
    manifest = importers.split_by_group(manifest, val_groups=val or ["none"],
                                        train_groups=[g for g in GROUPS if g not in val])
    if test_root is not None:
        test = importers.from_folders(test_root, source="test", classes=manifest.classes)
        manifest = Manifest(manifest.rows + [dict(r, split="val") for r in test.rows], manifest.classes)
    manifest = importers.subsample_per_class(manifest, k, seed=seed)
    return Split(manifest, manifest.classes)


def web_images(data: Path, classes: list[str], noise: float, seed: int) -> list[dict]:
    """Rows of the target queries' images plus injected pool images (``true_label`` None), so
    that a fraction ``noise`` of each query's images is wrong."""
    root = Path(data) / "web-sports"
    rng = np.random.default_rng([seed, 7])
    queries = sorted(q for q in QUERY_MAP if QUERY_MAP[q] in classes)
    pool = sorted(f for d in root.iterdir() if d.is_dir() and d.name not in QUERY_MAP for f in d.glob("*.jpg"))
    pool = [pool[i] for i in rng.permutation(len(pool))]
    rows, used = [], 0
    for q in queries:
        genuine = sorted((root / q).glob("*.jpg"))
        rows += [new_row("images", "image", str(f), weak_labels=[q], true_label=QUERY_MAP[q]) for f in genuine]
        n_noise = int(round(len(genuine) * noise / (1 - noise))) if noise < 1 else len(genuine)
        for f in pool[used:used + n_noise]:
            rows.append(new_row("images", "image", str(f), weak_labels=[q], true_label=None,
                                origin_query=f.parent.name))
        used += n_noise
    return rows


def web_raw_images(data: Path) -> list[dict]:
    """Rows of every ``web-raw`` query folder as crawled (source ``images_raw``); no ground
    truth. Queries that name no target class stay in: dropping them is the filter's job."""
    root = Path(data) / "web-raw"
    return [new_row("images_raw", "image", str(f), weak_labels=[d.name])
            for d in sorted(p for p in root.iterdir() if p.is_dir()) for f in sorted(d.iterdir()) if f.is_file()]


def web_videos(split: Split, label_noise: float, seed: int, clips_per_untrimmed: int = 3) -> tuple[list, list]:
    """(trimmed rows, untrimmed specs) from the ``unused`` training-group videos, halved between
    the two so that no video serves twice. An untrimmed spec is a dict with ``id``,
    ``parts`` (rows in playing order), ``weak_labels`` and ``true_label`` / ``true_segment``."""
    rng = np.random.default_rng([seed, 11])
    unused = split.rows("unused")
    unused = [unused[i] for i in rng.permutation(len(unused))]
    trimmed_src, untrimmed_src = unused[0::2], unused[1::2]
    classes = split.classes
    trimmed = []
    for r in trimmed_src:
        weak = r["label"]
        if rng.random() < label_noise:
            weak = int((weak + rng.integers(1, len(classes))) % len(classes))
        trimmed.append(dict(r, source="trimmed", id=make_id("trimmed", r["path"]), parent_id=r["id"], label=None,
                            weak_labels=[classes[weak]], true_label=classes[r["label"]], split="web"))
    untrimmed, pool = [], list(untrimmed_src)
    while len(pool) >= clips_per_untrimmed:
        first = pool.pop(0)
        parts = [first]
        for r in list(pool):
            if len(parts) == clips_per_untrimmed:
                break
            if all(r["label"] != p["label"] for p in parts):
                parts.append(r)
                pool.remove(r)
        if len(parts) < clips_per_untrimmed:
            break
        order = rng.permutation(len(parts))
        parts = [parts[i] for i in order]
        pick = int(rng.integers(len(parts)))
        name = classes[parts[pick]["label"]]
        untrimmed.append({"id": make_id("untrimmed", "+".join(p["path"] for p in parts)), "parts": parts,
                          "weak_labels": [name], "true_label": name, "true_segment": pick})
    return trimmed, untrimmed


def untrimmed_rows(specs: list[dict]) -> list[dict]:
    """Manifest rows for virtual untrimmed videos (their 1 fps features are the concatenation of
    their parts' features; ``path`` lists the parts for the record)."""
    return [new_row("untrimmed", "video", "+".join(p["path"] for p in s["parts"]), id=s["id"],
                    weak_labels=s["weak_labels"], true_label=s["true_label"]) for s in specs]

