"""Compare two teacher-score folders (``scores/<source>/`` of two engines, e.g. ``--engine local``
and ``--engine ray``): shard files, ids, predictions and the largest probability difference.

    python benchmarks/compare_scores.py WS_A/scores/images WS_B/scores/images [--atol 1e-5]

Prints one line per folder pair and exits 1 when they differ by more than ``--atol``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from omnisource.teacher.score import read_scores

FIELDS = ("prob", "top5_probs", "probs", "frame_probs", "clip_windows", "clip_probs")


def differences(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """Counts of ids only in one side, of differing predictions / top-5 labels, and the largest
    absolute difference of each numeric field over the common ids."""
    common = sorted(set(a) & set(b))
    out = {"ids": len(common), "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a)),
           "pred_differs": sum(a[i]["pred"] != b[i]["pred"] or a[i]["top5_labels"] != b[i]["top5_labels"]
                               for i in common)}
    for field in FIELDS:
        worst = 0.0
        for i in common:
            x, y = a[i].get(field), b[i].get(field)
            if x is None and y is None:
                continue
            if (x is None) != (y is None) or np.shape(x) != np.shape(y):
                worst = float("inf")
                break
            if np.size(x):
                worst = max(worst, float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)))))
        out[f"max|d {field}|"] = worst
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()
    shards_a = sorted(p.name for p in args.a.glob("part-*.parquet"))
    shards_b = sorted(p.name for p in args.b.glob("part-*.parquet"))
    d = differences(read_scores(args.a), read_scores(args.b))
    same = (shards_a == shards_b and d["only_a"] == d["only_b"] == d["pred_differs"] == 0 and d["ids"] > 0
            and all(v <= args.atol for k, v in d.items() if k.startswith("max")))
    print(f"{args.a} vs {args.b}: shards {len(shards_a)} / {len(shards_b)} "
          f"({'same names' if shards_a == shards_b else 'DIFFERENT names'}), "
          + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())
          + f" -> {'equal' if same else 'DIFFERENT'} (atol {args.atol:g})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
