"""Content digests of files (bottom layer: imports nothing of omnisource). One reader for the
stage stamps, the teachers' weights, the exact-duplicate search and the model card's backbone weights."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_hash(path: str | Path, algorithm: str = "sha256", block: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read ``block`` bytes at a time (memory stays flat)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path, block: int = 1 << 20) -> str | None:
    """SHA-256 of a file's bytes (None for folders and missing files)."""
    path = Path(path)
    return file_hash(path, "sha256", block) if path.is_file() else None
