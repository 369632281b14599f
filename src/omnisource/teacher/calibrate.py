"""Out-of-fold teacher probabilities on the target's labeled clips, for per-class thresholds.

The teacher trained on the labeled clips, so its probabilities on them say little about how
sure it is of unseen samples of a class. Cross-fitting (feature mode, where a head trains in
seconds): the clips are split into folds (``select.filter.crossfit_folds``), a head of the
teacher's config trains on all folds but one and scores the one held out. The out-of-fold
probabilities give ``omni.calibrate`` its per-class thresholds
(``select.filter.class_thresholds`` / ``precision_thresholds``); the fold heads, averaged, are also a teacher ensemble.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..config import Config
from ..select.filter import crossfit_folds
from .score import head_probs

CALIBRATION = "calibration.json"  # in scores/<source>/: what `select` calibrates its thresholds from
NO_FOLDS = "fewer than 2 labeled clips in some class: nothing to hold out, omni.threshold for every class"


def crossfit(cfg: Config, x: np.ndarray, y: np.ndarray, classes: list[str], folds: int | None = None) -> dict:
    """{"folds": n, "probs": (N, C) out-of-fold probabilities, "labels": y, "heads": [n heads]},
    or {"folds": 0, "reason": ...} when some class has fewer than 2 clips (k = 1). ``x``: (N, T, D)
    features of the labeled clips, ``y`` their classes; the heads train as ``cfg`` trains the
    teacher (its seed included; folds drawn from it)."""
    from rich.console import Console

    from ..train.build import feature_model_and_loaders
    from ..train.loop import fit

    y = np.asarray(y, np.int64)
    split = crossfit_folds(y, folds or cfg.omni.calibrate_folds, cfg.train.seed)
    if split is None:
        return {"folds": 0, "reason": NO_FOLDS}
    n = int(split.max()) + 1
    probs, heads = np.zeros((len(y), len(classes))), []
    # Quiet, validation-free runs in a scratch folder: only the head is wanted.
    tcfg = dataclasses.replace(cfg.train, log=[], eval_every=10**9)
    tmp = Path(tempfile.mkdtemp(prefix="crossfit-"))
    try:
        for f in range(n):
            fit_on, held = split != f, split == f
            model, train, _ = feature_model_and_loaders(cfg, x[fit_on], y[fit_on], x[:0], y[:0], len(classes))
            fit(model, train, None, tcfg, tmp / f"fold{f}", classes, console=Console(quiet=True))
            heads.append(model.eval())
            probs[held] = head_probs(model, list(x[held]), cfg.features.frames)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"folds": n, "probs": probs, "labels": y, "heads": heads}


def target_crossfit(teachers, workspace, folds: int) -> dict:
    """The JSON record of :func:`crossfit` for the teachers of a source (an ensemble's
    out-of-fold probabilities are the mean of each teacher's), on the target's training clips."""
    from ..data.manifest import read_manifest
    from ..train.build import feature_split
    from ..workspace import Workspace

    ws = Workspace.of(workspace)
    manifest = read_manifest(ws.target_manifest())
    parts = []
    for t in teachers:
        x, y, _ = feature_split(t.cfg, ws, manifest, "train")
        parts.append(crossfit(t.cfg, x, y, manifest.classes, folds))
        if not parts[-1]["folds"]:
            return {**parts[-1], "teachers": [t.run.name for t in teachers]}
    return {"folds": parts[0]["folds"], "teachers": [t.run.name for t in teachers],
            "labels": parts[0]["labels"].tolist(), "probs": np.mean([p["probs"] for p in parts], axis=0).tolist()}
