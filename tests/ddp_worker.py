"""Several trainings in one torchrun launch (one process group), so the tests pay for starting
torchrun and its processes once instead of once per training:

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py JOBS.json

JOBS.json is a list of jobs, run in order: ``["omnisource", "train", "-w", WS, ...]`` runs that CLI
command as ``torchrun -m omnisource ...`` would; ``["joint", OUT_DIR]`` runs :func:`joint`. Rank 0
prints ``=== job N`` before each job, so the test splits the output by job. Run without torchrun,
``joint`` is the one-process reference of the same training.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from omnisource.config import load_config
from omnisource.data.datasets import FeatureDataset, make_loader
from omnisource.distributed import ddp
from omnisource.models import create_head
from omnisource.train.joint import aux_loader
from omnisource.train.loop import Source, fit


def joint(out: Path) -> None:
    """One joint-training run (target batch + a resampled auxiliary batch, OmniSource Eq. 1) on tiny
    synthetic features; rank 0 writes the final weights and the log."""
    cfg = load_config(None, ["train.batch_size=8", "train.epochs=3", "train.optimizer=adamw", "train.lr=0.01",
                             "train.device=cpu", "omni.resample=power", "omni.resample_power=0.2"])
    ctx = ddp.setup("cpu")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    x = centres[y][:, None, :] + 0.5 * rng.normal(size=(40, 2, 16)).astype(np.float32)
    ya = np.repeat(np.arange(4), [40, 12, 6, 2])  # an unbalanced web source
    xa = centres[ya][:, None, :] + 0.8 * rng.normal(size=(60, 2, 16)).astype(np.float32)
    torch.manual_seed(0)
    model = create_head("tsn", 16, 4, 2, dropout=0.0)
    train = make_loader(FeatureDataset(x, y, 2, True, 0), 8, True, seed=0)
    aux = aux_loader(FeatureDataset(xa, ya, 2, True, 0), ya, 4, 4, len(train), cfg, name="web")
    fit(model, train, None, cfg.train, out, [str(c) for c in range(4)], aux=[Source("web", aux, 1.0)])
    if ctx.is_main:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "final.pt")


def main(jobs: list[list[str]]) -> int:
    from omnisource.cli.commands import app

    for i, job in enumerate(jobs):
        if os.environ.get("RANK", "0") == "0":  # the process group is joined by the first command
            print(f"=== job {i}", flush=True)
        if job[0] == "joint":
            joint(Path(job[1]))
            continue
        assert job[0] == "omnisource", job
        code = app(args=job[1:], prog_name="omnisource", standalone_mode=False)
        if code:  # the command printed its error line
            return int(code)
        ddp.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(Path(sys.argv[1]).read_text())))
