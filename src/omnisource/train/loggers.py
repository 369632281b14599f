"""Training-curve loggers beside ``log.jsonl`` (which the report reads and which is always written).

``train.log=tensorboard`` writes TensorBoard event files to ``runs/<name>/tensorboard/`` through
``torch.utils.tensorboard`` (needs the optional ``tensorboard`` package): per epoch the learning
rate, each source's training loss and accuracy, and the validation metrics. A resumed run
purges the events after the epoch it resumes from, so its curves show no stale tail.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..config import ConfigError


class _TensorBoard:
    def __init__(self, run_dir: Path, start_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.log=tensorboard needs the tensorboard package: "
                              "pip install -c constraints.txt -e '.[tensorboard]'") from None
        folder = Path(run_dir) / "tensorboard"
        if start_epoch == 0:  # a run started over: its old curves go with its old checkpoints
            shutil.rmtree(folder, ignore_errors=True)
        self.writer = SummaryWriter(str(folder), purge_step=start_epoch + 1 if start_epoch else None)

    def log(self, record: dict) -> None:
        step = int(record["epoch"])
        self.writer.add_scalar("lr", record["lr"], step)
        for source, stats in record.get("train", {}).items():
            for key, value in stats.items():
                self.writer.add_scalar(f"train/{source}/{key}", value, step)
        for key, value in (record.get("val") or {}).items():
            self.writer.add_scalar(f"val/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Loggers:
    """The configured loggers, called once per epoch with the record written to ``log.jsonl``."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def log(self, record: dict) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def open_loggers(kinds: list[str], run_dir: Path, start_epoch: int = 0) -> Loggers:
    """Loggers of ``train.log`` for a run starting (or resuming) after ``start_epoch`` epochs."""
    makers = {"tensorboard": _TensorBoard}
    unknown = [k for k in kinds if k not in makers]
    if unknown:
        raise ConfigError(f"train.log: unknown logger {unknown[0]!r}; available: {', '.join(makers)}")
    return Loggers([makers[k](run_dir, start_epoch) for k in dict.fromkeys(kinds)])
