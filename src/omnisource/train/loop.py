"""The training loop: one explicit step over a target batch plus optional auxiliary batches.

OmniSource Eq. 1 (Duan et al. 2020, §3.3): the loss of an iteration is the cross-entropy summed
over the target mini-batch and each auxiliary mini-batch; one backward, one optimizer step.
Target-only training is the same step with no auxiliary batches.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..evaluate.metrics import classification_metrics
from .card import card_from_text
from .checkpoint import (after_epoch, latest_checkpoint, load_training_state, load_weights, save_checkpoint,
                         set_rng_state)
from .loggers import open_loggers
from .precision import amp_dtype, autocast, backward, make_scaler, optimizer_step, prepare_model, to_memory_format


@dataclass
class Source:
    """An auxiliary stream of (x, y) batches, cycled for as long as the target epoch lasts."""
    name: str
    loader: Iterable
    weight: float = 1.0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def autocast_for(device: torch.device, enabled: bool, dtype: str = "auto"):
    """Autocast in ``dtype`` (auto: fp16 on CUDA, bf16 elsewhere), or nothing when disabled."""
    return autocast(device, amp_dtype(device, enabled, dtype))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, param_groups=None) -> torch.optim.Optimizer:
    """No weight decay on biases and norm layers (standard for both SGD and AdamW)."""
    if param_groups is None:
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        param_groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    for g in param_groups:
        g.setdefault("lr_scale", 1.0)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine / step / constant, evaluated per iteration."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "step":
        epoch = step / steps_per_epoch
        return cfg.lr * cfg.step_gamma ** sum(epoch >= e for e in cfg.step_epochs)
    return cfg.lr


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot rows, or rows already soft (N, C) passed through, with label smoothing."""
    t = y.float() if y.ndim == 2 else F.one_hot(y, num_classes).float()
    return t * (1 - smoothing) + smoothing / num_classes if smoothing else t


def mixup(x: torch.Tensor, t: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018) inside one batch: x and soft targets mixed with λ ~ Beta(α, α)."""
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


def cross_partners(source: torch.Tensor) -> torch.Tensor:
    """For each sample, the index of a partner drawn uniformly from the samples of the *other*
    sources (within its own source when there is only one)."""
    n = len(source)
    partner = torch.randperm(n, device=source.device)
    for s in torch.unique(source):
        mine, others = (source == s).nonzero().flatten(), (source != s).nonzero().flatten()
        if len(others):
            partner[mine] = others[torch.randint(len(others), (len(mine),), device=source.device)]
    return partner


def mix_across_sources(x: torch.Tensor, t: torch.Tensor, source: torch.Tensor,
                       alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup across datasets (OmniSource §3.3): every sample is mixed with a sample of another
    source (a target clip with a web one and vice versa), λ ~ Beta(α, α). Returns (x, t, partner)."""
    lam = float(np.random.beta(alpha, alpha))
    partner = cross_partners(source)
    return lam * x + (1 - lam) * x[partner], lam * t + (1 - lam) * t[partner], partner


def per_sample_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return per_sample_cross_entropy(logits, targets).mean()


def train_step(model, batches: list[tuple[str, torch.Tensor, torch.Tensor, float]], optimizer,
               cfg: TrainConfig, num_classes: int, device: torch.device, cross_mixup: bool = False, *,
               scaler: torch.amp.GradScaler | None = None, memory_format: torch.memory_format | None = None,
               zero_grad: bool = True, step: bool = True, loss_scale: float = 1.0) -> dict:
    """One iteration: for each (source, x, y, weight) batch, forward + weighted CE; sum; one backward.

    Mixup is within each batch; with ``cross_mixup`` the batches are concatenated and each sample
    is mixed with one of another source (OmniSource §3.3), keeping its source's weight / batch
    size, which is the same summed loss as the per-batch form before mixing.
    Gradient accumulation: ``zero_grad`` / ``step`` say whether this iteration opens / closes an
    accumulation window, and ``loss_scale`` (1 / window length) makes the window's summed
    gradient that of one large batch. ``scaler``: fp16 loss scaling (``train.precision``).
    """
    model.train()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    prepared = []
    for source, x, y, weight in batches:
        x = to_memory_format(x.to(device, non_blocking=True), memory_format)
        y = y.to(device, non_blocking=True)
        prepared.append((source, x, y, soft_targets(y, num_classes, cfg.label_smoothing), weight))
    mixed = cross_mixup and cfg.mixup_alpha > 0 and len(prepared) > 1
    if mixed:
        x, t, _ = mix_across_sources(
            torch.cat([p[1] for p in prepared]), torch.cat([p[3] for p in prepared]),
            torch.cat([torch.full((len(p[1]),), k, device=device) for k, p in enumerate(prepared)]), cfg.mixup_alpha)
        groups = [("mixed", x, t, torch.cat([torch.full((len(p[1]),), p[4] / len(p[1]), device=device)
                                             for p in prepared]))]
    else:
        groups = [(src, x, t, torch.full((len(x),), w / len(x), device=device)) for src, x, _, t, w in prepared]
    total = torch.zeros((), device=device)
    logits_of = {}
    for name, x, t, w in groups:
        if cfg.mixup_alpha > 0 and not mixed:
            x, t = mixup(x, t, cfg.mixup_alpha)
        with autocast_for(device, cfg.amp, cfg.amp_dtype):
            logits = model(x)
        total = total + (w * per_sample_cross_entropy(logits, t)).sum()
        logits_of[name] = logits.detach()
    backward(total * loss_scale if loss_scale != 1.0 else total, scaler)
    if step:
        optimizer_step(optimizer, model.parameters(), cfg.clip_grad, scaler)
    stats = {"total_loss": total.item()}
    offset = 0
    for source, x, y, t, weight in prepared:
        if "mixed" in logits_of:
            logits, offset = logits_of["mixed"][offset:offset + len(x)], offset + len(x)
        else:
            logits = logits_of[source]
        hard = y if y.ndim == 1 else y.argmax(-1)
        stats[source] = {"loss": soft_cross_entropy(logits, t).item(),
                         "acc": (logits.argmax(-1) == hard).float().mean().item(), "n": int(x.shape[0])}
    return stats


@torch.no_grad()
def predict(model, loader, device: torch.device, amp: bool = False, dtype: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores averaged over views when x is (B, V, ...) for a model expecting (B, ...)."""
    model.eval()
    scores, labels = [], []
    for x, y, *_ in loader:
        x = x.to(device)
        multi_view = getattr(loader, "multi_view", False)
        if multi_view:
            b, v = x.shape[:2]
            x = x.flatten(0, 1)
        with autocast_for(device, amp, dtype):
            p = model(x).float().softmax(-1)
        if multi_view:
            p = p.view(b, v, -1).mean(1)
        scores.append(p.cpu().numpy())
        labels.append(np.asarray(y))
    if not scores:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    return np.concatenate(scores), np.concatenate(labels)


def _cycle(loader: Iterable) -> Iterator:
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise RuntimeError("an auxiliary source yielded no batch (is it empty?)")


def _mean_stats(items: list[dict]) -> dict:
    out = {}
    for source in {k for it in items for k, v in it.items() if isinstance(v, dict)}:
        rows = [it[source] for it in items if source in it]
        n = sum(r["n"] for r in rows)
        out[source] = {"loss": sum(r["loss"] * r["n"] for r in rows) / n, "acc": sum(r["acc"] * r["n"] for r in rows) / n}
    return out


def fit(model, train_loader, val_loader, cfg: TrainConfig, run_dir: str | Path, classes: list[str],
        config_text: str = "", aux: list[Source] = (), resume: bool = False, console=None,
        param_groups=None, cross_mixup: bool = False) -> dict:
    """Train for cfg.epochs with a checkpoint per epoch; ``resume`` continues from the latest one.

    Every epoch reseeds the global RNGs from (seed, epoch), so a resumed run draws the same
    shuffles, augmentations and mixup coefficients as an uninterrupted one.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    forward, fmt = prepare_model(model, device, cfg.channels_last, cfg.compile, cfg.compile_backend)
    scaler = make_scaler(device, amp_dtype(device, cfg.amp, cfg.amp_dtype))
    optimizer = build_optimizer(model, cfg, param_groups)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise RuntimeError("the target training set yields no batch: check the split and batch size")
    state = start_or_resume(model, optimizer, run_dir, resume, device, console)
    start_epoch, history = state["epoch"], state.get("history", [])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    log_path = run_dir / "log.jsonl"
    card, loggers = card_from_text(config_text, classes, model), open_loggers(cfg.log, run_dir, start_epoch)
    after_epoch(run_dir, history, cfg.keep_checkpoints)  # what a kill left: debris, an unpruned epoch
    aux_iters = [(s, _cycle(s.loader)) for s in aux]
    for epoch in range(start_epoch, cfg.epochs):
        _seed_epoch(cfg.seed, epoch)
        for loader in [train_loader, *[s.loader for s in aux]]:
            for part in (getattr(loader, "dataset", None), getattr(loader, "sampler", None)):
                if hasattr(part, "set_epoch"):
                    part.set_epoch(epoch)
        items, t0 = [], time.time()
        with Progress(TextColumn(f"epoch {epoch + 1}/{cfg.epochs}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                      transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("train", total=steps_per_epoch, info="")
            for i, (x, y, *_) in enumerate(train_loader):
                step = epoch * steps_per_epoch + i
                lr = lr_at(step, steps_per_epoch, cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                batches = [("target", x, y, 1.0)]
                for source, it in aux_iters:
                    ax, ay, *_ = next(it)
                    batches.append((source.name, ax, ay, source.weight))
                # Accumulation windows of train.accumulate iterations (the epoch's last may be shorter).
                window = min(cfg.accumulate, steps_per_epoch - i + i % cfg.accumulate)
                items.append(train_step(forward, batches, optimizer, cfg, len(classes), device, cross_mixup,
                                        scaler=scaler, memory_format=fmt, zero_grad=i % cfg.accumulate == 0,
                                        step=(i + 1) % cfg.accumulate == 0 or i + 1 == steps_per_epoch,
                                        loss_scale=1.0 / window))
                bar.update(task, advance=1, info=f"loss {items[-1]['total_loss']:.3f} lr {lr:.2e}")
        record = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.time() - t0, 2), "train": _mean_stats(items)}
        if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            scores, labels = predict(model, val_loader, device, cfg.amp, cfg.amp_dtype)
            m = classification_metrics(scores, labels, classes)
            record["val"] = {k: m[k] for k in ("top1", "top5", "mean_class_accuracy")}
        history.append(record)
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        save_checkpoint(run_dir, epoch + 1, model, optimizer,
                        {"history": history, **({"scaler": scaler.state_dict()} if scaler is not None else {})},
                        config_text, card)
        after_epoch(run_dir, history, cfg.keep_checkpoints)  # best.json, retention
        loggers.log(record)
        parts = [f"{src} loss {v['loss']:.3f} acc {v['acc']:.3f}" for src, v in record["train"].items()]
        if "val" in record:
            parts.append(f"val top1 {record['val']['top1']:.3f} mca {record['val']['mean_class_accuracy']:.3f}")
        console.print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(parts))
    loggers.close()
    return {"history": history, "last": history[-1] if history else None}


def start_or_resume(model, optimizer, run_dir: Path, resume: bool, device: torch.device, console) -> dict:
    """With ``resume``, load the latest checkpoint's weights, optimizer and RNG state and return
    its state dict; otherwise (or with no checkpoint) return {"epoch": 0} after removing the run's
    old log and checkpoints, so stale later epochs cannot pass for the new run's result."""
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is None:
        (run_dir / "log.jsonl").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        return {"epoch": 0}
    state = load_training_state(ckpt)
    load_weights(model, ckpt)
    model.to(device)
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    console.print(f"resumed from {ckpt} (epoch {state['epoch']})")
    return state


def _seed_epoch(seed: int, epoch: int) -> None:
    import random

    s = (seed * 100_003 + epoch) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)

