"""Which target rows an experiment works on, so that stages decode and embed only those.

``import`` keeps every video it finds; those the experiment leaves out (beyond
``target.per_class``, or held back by a benchmark protocol) get a split of their own
(``unused``, ``unused_val``). ``validate``, ``prepare`` and ``features`` skip them unless asked
for all rows (``--all``). Web rows are scoped by the teacher filter (``select.filter.teacher_rows``).
"""
from __future__ import annotations

EXPERIMENT_SPLITS = ("train", "val", "test")


def experiment_rows(rows: list[dict], all_rows: bool = False) -> list[dict]:
    """The target rows of the splits the experiment trains and evaluates on (every row with
    ``all_rows``)."""
    return list(rows) if all_rows else [r for r in rows if r.get("split") in EXPERIMENT_SPLITS]


def map_experiment_rows(fn, rows: list[dict], all_rows: bool = False) -> tuple[list[dict], int]:
    """(rows, how many were left out): ``fn(rows in scope) -> the same rows, processed``
    applied to the experiment's rows, the others kept as they are, in the manifest's order."""
    chosen = [i for i, r in enumerate(rows) if all_rows or r.get("split") in EXPERIMENT_SPLITS]
    out = list(rows)
    for i, new in zip(chosen, fn([rows[i] for i in chosen])):
        out[i] = new
    return out, len(rows) - len(chosen)
