"""Importers for target datasets (DESIGN.md §4) and group-aware splitting.

Formats: class folders, CSV ``path,label``, mmaction2 lists (``path label`` and
``frame_dir total_frames label``), Kinetics CSV (``label,youtube_id,time_start,time_end,split``).
"""
from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from pathlib import Path

from .manifest import Manifest, ManifestError, _error_rows, check, new_row
from .sniff import content_kind, status_of



def kind_of(path: Path) -> tuple[str, str, str]:
    """(kind, status, reason) of a file or frame folder, typed by its content (``data.sniff``),
    never its extension; a non-media file gets kind "video", a status and the validator's reason."""
    kind, reason = content_kind(path)
    return (kind, "ok", "") if kind else ("video", status_of(reason), reason)


def _media_row(source: str, path: Path, **values) -> dict:
    kind, status, reason = kind_of(path)
    return new_row(source, kind, str(path), status=status, reason=reason, **values)


def check_classes(manifest: Manifest, where: str, split: str | None = None) -> None:
    """ManifestError unless at least two classes have usable (ok) rows (in `split` if given): a
    one-class "classifier" scores top-1 1.000 and an empty dataset has nothing to learn."""
    rows = [r for r in manifest.rows if r.get("status") == "ok" and r.get("label") is not None
            and (split is None or r.get("split") == split)]
    present = sorted({int(r["label"]) for r in rows})
    names = [manifest.classes[i] if i < len(manifest.classes) else str(i) for i in present]
    what = f"{split} rows" if split else "rows"
    if not rows:
        bad = len([r for r in manifest.rows if r.get("status") != "ok"])
        raise ManifestError(f"{where}: no usable {what}" + (f" ({bad} corrupt or rejected)" if bad else ""))
    if len(present) < 2:
        raise ManifestError(f"{where}: only one class ({names[0]}) has usable {what}; "
                            "a classifier needs at least two")


def _finish(rows: list[dict], classes: list[str], missing: list[str], on_missing: str) -> Manifest:
    if missing and on_missing == "error":
        raise _error_rows("missing files", missing)
    manifest = Manifest(rows, classes)
    check(manifest)
    return manifest


def _missing_row(rows, missing, source, path, i, **values):
    missing.append(f"line {i} {path}")
    rows.append(new_row(source, "video", str(path), status="corrupt", reason="file not found", **values))


def from_folders(root: str | Path, source: str = "target", classes: list[str] | None = None) -> Manifest:
    """``root/<class>/<file or frame folder>``: one class per sub-folder, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder of class sub-folders")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ManifestError(f"{root}: no class sub-folders found")
    names = list(classes) if classes else [p.name for p in class_dirs]
    index = {name: i for i, name in enumerate(names)}
    rows, unknown, empty = [], [], []
    for cdir in class_dirs:
        if cdir.name not in index:
            unknown.append(f"{cdir}")
            continue
        items = [p for p in sorted(cdir.iterdir()) if not p.name.startswith(".")]
        if not items:
            empty.append(cdir.name)
        for item in items:  # every entry keeps a row; non-media ones say why (typed by content)
            rows.append(_media_row(source, item, label=index[cdir.name], weak_labels=[cdir.name]))
    if unknown:
        raise _error_rows("class folders not in the given class list", unknown)
    if empty:
        raise ManifestError(f"{root}: class folder(s) without files: {', '.join(empty[:10])}"
                            + (f" (and {len(empty) - 10} more)" if len(empty) > 10 else "")
                            + "; add videos or remove the folder(s)")
    return _finish(rows, names, [], "error")


def _label_index(labels: list[str], classes: list[str] | None) -> tuple[list[str], dict[str, int]]:
    if classes:
        names = list(classes)
    elif all(re.fullmatch(r"\d+", lab) for lab in labels):
        names = [str(i) for i in range(max(int(x) for x in labels) + 1)] if labels else []
    else:
        names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    # Integer labels index the class list directly.
    for lab in labels:
        if re.fullmatch(r"\d+", lab) and lab not in index and int(lab) < len(names):
            index[lab] = int(lab)
    return names, index


def _resolve(root: Path | None, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or root is None else root / p


def from_csv(path: str | Path, root: str | Path | None = None, source: str = "target",
             classes: list[str] | None = None, on_missing: str = "error") -> Manifest:
    """CSV with a header containing ``path`` and ``label`` (label = class name or index)."""
    path = Path(path)
    root = Path(root) if root else path.parent
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise ManifestError(f"{path}: CSV needs a header with 'path' and 'label' columns")
        records = [(i + 2, r["path"], (r["label"] or "").strip()) for i, r in enumerate(reader)]
    return _from_records(records, root, source, classes, on_missing)


def _from_records(records, root, source, classes, on_missing, kind=None, extra=None) -> Manifest:
    names, index = _label_index([lab for _, _, lab in records], classes)
    rows, missing, unknown = [], [], []
    for n, (line, p, lab) in enumerate(records):
        if lab not in index:
            unknown.append(f"line {line} label {lab!r}")
            continue
        full = _resolve(root, p)
        values = dict(label=index[lab], weak_labels=[names[index[lab]]], **((extra or {}).get(n, {})))
        if not full.exists():
            _missing_row(rows, missing, source, full, line, **values)
            continue
        rows.append(new_row(source, kind, str(full), **values) if kind else _media_row(source, full, **values))
    if unknown:
        raise _error_rows(f"unknown labels (classes: {', '.join(names[:20])})", unknown)
    return _finish(rows, names, missing, on_missing)


def from_mmaction(path: str | Path, root: str | Path | None = None, source: str = "target",
                  classes: list[str] | None = None, on_missing: str = "error") -> Manifest:
    """mmaction2 list: ``path label`` (videos) or ``frame_dir total_frames label`` (rawframes)."""
    path = Path(path)
    records, extra = [], {}
    frames_format = None
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            raise ManifestError(f"{path}: line {i}: expected 'path label' or 'frame_dir total_frames label'")
        is_frames = len(parts) == 3
        if frames_format is None:
            frames_format = is_frames
        elif frames_format != is_frames:
            raise ManifestError(f"{path}: line {i}: mixes video and rawframe entries")
        if is_frames:
            if not parts[1].isdigit():
                raise ManifestError(f"{path}: line {i}: total_frames {parts[1]!r} is not an integer")
            extra[len(records)] = {"num_frames": int(parts[1])}
        records.append((i, parts[0], parts[-1]))
    return _from_records(records, Path(root) if root else None, source, classes, on_missing,
                         kind="frames" if frames_format else None, extra=extra)


def from_kinetics(path: str | Path, root: str | Path, source: str = "target",
                  classes: list[str] | None = None, on_missing: str = "error") -> Manifest:
    """Kinetics CSV; files as the common downloaders name them:
    ``root/[split/]<label>/<youtube_id>_<start:06d>_<end:06d>.<ext>`` (or flat under root)."""
    path, root = Path(path), Path(root)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ManifestError(f"{path}: Kinetics CSV needs columns {sorted(need)}")
        entries = list(reader)
    labels = sorted({e["label"] for e in entries}) if not classes else list(classes)
    index = {name: i for i, name in enumerate(labels)}
    rows, missing, unknown = [], [], []
    for i, e in enumerate(entries, start=2):
        if e["label"] not in index:
            unknown.append(f"line {i} label {e['label']!r}")
            continue
        start, end = int(float(e["time_start"])), int(float(e["time_end"]))
        stem = f"{e['youtube_id']}_{start:06d}_{end:06d}"
        split = e.get("split", "") or ""
        found = None
        for folder in (root / split / e["label"], root / e["label"], root / split, root):
            hits = sorted(folder.glob(stem + ".*")) if folder.is_dir() else []
            if hits:
                found = hits[0]
                break
        values = dict(label=index[e["label"]], weak_labels=[e["label"]], split=_split_name(split))
        if found is None:
            _missing_row(rows, missing, source, root / e["label"] / (stem + ".mp4"), i, **values)
            continue
        rows.append(_media_row(source, found, **values))
    if unknown:
        raise _error_rows("unknown labels", unknown)
    return _finish(rows, labels, missing, on_missing)


def _split_name(split: str) -> str:
    return {"validate": "val", "valid": "val", "validation": "val"}.get(split, split)


# --------------------------------------------------------------------------- splitting


def group_of(path: str, group_regex: str) -> str | None:
    m = re.search(group_regex, Path(path).name)
    return m.group(1) if m else None


def split_by_group(manifest: Manifest, group_regex: str = r"_g(\d+)_", val_groups=("08", "09", "10", "11"),
                   train_groups=(), val_fraction: float = 0.2, seed: int = 0) -> Manifest:
    """Assign ``split`` so that all clips of one group land on the same side.

    With ``val_groups`` given, those groups are validation (and ``train_groups``, if given, limit
    training); otherwise whole groups are drawn at random until ``val_fraction`` of rows is reached.
    Rows whose name carries no group each form a group of their own.
    """
    rows = [dict(r) for r in manifest.rows]
    groups = [group_of(r["path"], group_regex) or f"file:{r['id']}" for r in rows]
    for r, g in zip(rows, groups):
        r["group"] = g
    if val_groups and any(not g.startswith("file:") for g in groups):
        val, train = set(val_groups), set(train_groups)
        for r, g in zip(rows, groups):
            r["split"] = "val" if g in val else ("train" if not train or g in train else "unused")
    else:
        rng = random.Random(seed)
        unique = sorted(set(groups))
        rng.shuffle(unique)
        target = val_fraction * len(rows)
        counts = defaultdict(int)
        for g in groups:
            counts[g] += 1
        val, total = set(), 0
        for g in unique:
            if total >= target:
                break
            val.add(g)
            total += counts[g]
        for r, g in zip(rows, groups):
            r["split"] = "val" if g in val else "train"
    return Manifest(rows, list(manifest.classes))


def subsample_per_class(manifest: Manifest, k: int, split: str = "train", seed: int = 0) -> Manifest:
    """Keep ``k`` rows per class in ``split`` (the rest become ``unused``); k <= 0 keeps all.

    Picks whole groups first-come in a seeded order so near-duplicates are not all kept together.
    """
    if k <= 0:
        return manifest
    rng = random.Random(seed)
    by_class = defaultdict(list)
    for i, r in enumerate(manifest.rows):
        if r.get("split") == split and r.get("status") == "ok":
            by_class[r["label"]].append(i)
    keep = set()
    for label, idx in by_class.items():
        # Ordered by file name, not id (a hash of the full path), so the same dataset gives
        # the same picks wherever it is stored.
        idx = sorted(idx, key=lambda i: (Path(manifest.rows[i]["path"]).name, manifest.rows[i]["id"]))
        rng.shuffle(idx)
        # Prefer spreading the k picks across groups.
        seen_groups, first, rest = set(), [], []
        for i in idx:
            g = manifest.rows[i].get("group")
            (rest if g in seen_groups else first).append(i)
            seen_groups.add(g)
        keep.update((first + rest)[:k])
    rows = []
    for i, r in enumerate(manifest.rows):
        r = dict(r)
        if r.get("split") == split and i not in keep:
            r["split"] = "unused"
        rows.append(r)
    return Manifest(rows, list(manifest.classes))
