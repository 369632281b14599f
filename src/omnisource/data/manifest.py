"""Manifests: one Parquet row per sample (docs/concepts.md), written atomically.

Rows are plain dicts; a manifest is a list of rows plus the class names, which travel in
the Parquet schema metadata so that integer labels always have a meaning attached.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("image", "video", "frames")
STATUSES = ("ok", "corrupt", "duplicate", "rejected")

# Required columns and their Arrow types. Stages may add columns (group, num_frames, ...).
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("label", pa.int32()),
        ("weak_labels", pa.list_(pa.string())),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)
REQUIRED = tuple(SCHEMA.names)
_DEFAULTS = {"split": "", "label": None, "weak_labels": [], "start_s": None, "end_s": None,
             "status": "ok", "reason": ""}


class ManifestError(ValueError):
    """Bad manifest content; the message lists the offending rows (first 10)."""


def make_id(source: str, path: str, start_s: float | None = None, end_s: float | None = None) -> str:
    """Stable id of a sample: the same file (and time span) always gets the same id."""
    key = f"{source}\0{path}\0{start_s}\0{end_s}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def absolute_path(path: str | Path, base: str | Path | None = None) -> str:
    """An absolute, normalised path (relative ones against ``base``, default the current
    directory): manifests never depend on where a command runs. "" stays ""."""
    path = os.fspath(path)
    if not path:
        return path
    p = Path(path).expanduser()
    return os.path.abspath(p if p.is_absolute() or base is None else Path(base) / p)


def absolute_paths(rows: list[dict], base: str | Path) -> list[dict]:
    """Rows of a manifest given by the user, their relative paths taken against ``base`` (its
    folder); ids stay as they are."""
    return [dict(r, path=absolute_path(r["path"], base)) if r.get("path") else r for r in rows]


def new_row(source: str, kind: str, path: str, **values) -> dict:
    path = absolute_path(path)
    row = {"source": source, "kind": kind, "path": path, **_DEFAULTS, **values}
    row["weak_labels"] = [str(w) for w in (row.get("weak_labels") or [])]
    row.setdefault("id", None)
    if not row["id"]:
        row["id"] = make_id(source, str(path), row["start_s"], row["end_s"])
    return row


@dataclass
class Manifest:
    rows: list[dict]
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, **conditions) -> "Manifest":
        """Rows whose columns equal the given values (``split="train", status="ok"``)."""
        keep = [r for r in self.rows if all(r.get(k) == v for k, v in conditions.items())]
        return Manifest(keep, list(self.classes))

    def column(self, name: str) -> list:
        return [r.get(name) for r in self.rows]

    def by_id(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.rows}


def _error_rows(message: str, bad: list[str]) -> ManifestError:
    shown = "; ".join(bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    return ManifestError(f"{message} in {len(bad)} row(s): {shown}{more}")


def check(manifest: Manifest, check_files: bool = False) -> None:
    """Raise ManifestError for duplicate ids, bad kinds/statuses, unknown labels, missing files."""
    seen: dict[str, int] = {}
    dups, bad_kind, bad_label, missing = [], [], [], []
    n = len(manifest.classes)
    for i, row in enumerate(manifest.rows):
        rid = row.get("id")
        if rid in seen:
            dups.append(f"row {i} id {rid} (first at row {seen[rid]}) {row.get('path')}")
        seen.setdefault(rid, i)
        if row.get("kind") not in KINDS or row.get("status") not in STATUSES:
            bad_kind.append(f"row {i} kind={row.get('kind')!r} status={row.get('status')!r}")
        label = row.get("label")
        if label is not None and n and not 0 <= label < n:
            bad_label.append(f"row {i} label {label} {row.get('path')}")
        if check_files and row.get("status") == "ok" and not Path(row["path"]).exists():
            missing.append(f"row {i} {row['path']}")
    if dups:
        raise _error_rows("duplicate ids", dups)
    if bad_kind:
        raise _error_rows(f"kind must be one of {KINDS} and status one of {STATUSES}", bad_kind)
    if bad_label:
        raise _error_rows(f"labels outside 0..{n - 1}", bad_label)
    if missing:
        raise _error_rows("missing files", missing)


def _to_table(manifest: Manifest) -> pa.Table:
    extra: list[str] = []
    for row in manifest.rows:
        for key in row:
            if key not in REQUIRED and key not in extra:
                extra.append(key)
    columns = {name: [row.get(name, _DEFAULTS.get(name)) for row in manifest.rows] for name in REQUIRED}
    arrays = [pa.array(columns[f.name], type=f.type) for f in SCHEMA]
    fields = list(SCHEMA)
    for key in extra:
        arr = pa.array([row.get(key) for row in manifest.rows])
        arrays.append(arr)
        fields.append(pa.field(key, arr.type))
    meta = {b"omnisource.classes": json.dumps(manifest.classes).encode()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


def _umask() -> int:
    try:  # Linux tells it without changing it (os.umask would, for a moment, in every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(folder: bool = False) -> int:
    """The mode a plain ``open`` (or ``mkdir``) would give under the process umask; temp files
    are created 0600 and must get it before they are renamed into a shared workspace."""
    return (0o777 if folder else 0o666) & ~_umask()


def atomic_write_bytes(path: Path, writer) -> Path:
    """Call ``writer(tmp_path)`` then rename into place, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, default_mode())
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_npz(path: Path, **arrays) -> Path:
    """``arrays`` as an uncompressed .npz, atomically (written through a file handle: given a
    name, ``np.savez`` would append ``.npz`` to the temporary one)."""
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write_bytes(path, write)


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    check(manifest)
    table = _to_table(manifest)
    return atomic_write_bytes(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"{path}: not a readable Parquet manifest ({err})") from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ManifestError(f"{path}: missing required columns {missing}")
    meta = table.schema.metadata or {}
    classes = json.loads(meta.get(b"omnisource.classes", b"[]"))
    return Manifest(table.to_pylist(), classes)


def concat(manifests: Iterable[Manifest]) -> Manifest:
    manifests = list(manifests)
    classes = manifests[0].classes if manifests else []
    rows = [r for m in manifests for r in m.rows]
    return Manifest(rows, list(classes))
