"""Exact duplicates (OmniSource, "Cleaning"; docs/methods.md): files with the same SHA-256 (the
downloader's ``sha256`` column, or hashed here). A web file identical to an evaluation file is
flagged against it; among web files the first in manifest order stays and the others point to it
(``dup_kind="exact"``)."""
from __future__ import annotations

from typing import Sequence

from ..digest import file_sha256

__all__ = ["exact_duplicates", "file_sha256"]


def exact_duplicates(rows: list[dict], eval_rows: Sequence[dict] = ()) -> list[dict]:
    """Flag ok rows whose bytes equal an evaluation file or an earlier ok row; fills ``sha256``."""
    from ..progress import track

    eval_hash: dict[str, str] = {}
    for er in track(eval_rows, "dedup: hashes of evaluation files", unit="files"):
        h = er.get("sha256") or file_sha256(er["path"])
        if h:
            eval_hash.setdefault(h, er["id"])
    first: dict[str, str] = {}
    out = []
    for row in track(rows, "dedup: hashes of web files", unit="files"):
        row = dict(row)
        if row.get("status") == "ok":
            h = row.get("sha256") or file_sha256(row["path"])
            row["sha256"] = h
            if h in eval_hash:
                row.update(status="duplicate", dup_of=eval_hash[h], dup_kind="exact-eval", similarity=1.0,
                           reason=f"identical to evaluation sample {eval_hash[h]}")
            elif h in first:
                row.update(status="duplicate", dup_of=first[h], dup_kind="exact", similarity=1.0,
                           reason=f"exact duplicate of {first[h]}")
            elif h:
                first[h] = row["id"]
        out.append(row)
    return out

