"""Content digests of files (bottom layer: imports nothing of omnisource). One reader for the
stage stamps, the teachers' weights and the exact-duplicate search."""
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
