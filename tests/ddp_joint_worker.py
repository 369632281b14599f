"""One joint-training run (target batch + a resampled auxiliary batch, OmniSource Eq. 1) on tiny
synthetic features, as one process or under torchrun; rank 0 writes the final weights and log.

    python tests/ddp_joint_worker.py OUT_DIR                    # one process
    torchrun --standalone --nproc_per_node=2 tests/ddp_joint_worker.py OUT_DIR
"""
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


def main(out: Path) -> None:
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
