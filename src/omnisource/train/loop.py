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
from ..data.transforms import to_float
from ..distributed import ddp
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
    logit_offset: torch.Tensor | None = None  # (C,) added to this source's logits in its loss


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


def set_lr(optimizer: torch.optim.Optimizer, step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Give every parameter group the schedule's rate at ``step`` times its ``lr_scale`` (the
    fine-tuned body's share, see ``build_optimizer``); returns the schedule's rate."""
    lr = lr_at(step, steps_per_epoch, cfg)
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot rows, or rows already soft (N, C) passed through, with label smoothing."""
    t = y.float() if y.ndim == 2 else F.one_hot(y, num_classes).float()
    return t * (1 - smoothing) + smoothing / num_classes if smoothing else t


def mixup(x: torch.Tensor, t: torch.Tensor, alpha: float, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mixup (Zhang et al. 2018) inside one batch: x and soft targets (and any ``extra`` per-sample
    tensors, e.g. logit offsets) mixed with λ ~ Beta(α, α)."""
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], device=x.device)
    return tuple(lam * a + (1 - lam) * a[perm] for a in (x, t, *extra))


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


def mix_across_sources(x: torch.Tensor, t: torch.Tensor, source: torch.Tensor, alpha: float,
                       *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mixup across datasets (OmniSource §3.3): every sample is mixed with a sample of another
    source (a target clip with a web one and vice versa), λ ~ Beta(α, α). Returns (x, t, partner,
    *extra mixed alike, e.g. logit offsets)."""
    lam = float(np.random.beta(alpha, alpha))
    partner = cross_partners(source)
    mixed = [lam * a + (1 - lam) * a[partner] for a in (x, t, *extra)]
    return mixed[0], mixed[1], partner, *mixed[2:]


def per_sample_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) cross-entropy of (B, C) logits against (B, C) targets; of (B, T, C) frame logits (a
    frame-level head in training, ``features.head=frames``), the mean of the T frames' own."""
    if logits.dim() == 3:
        return -(targets.unsqueeze(1) * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean(1)
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)


def with_offset(logits: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(B, C) logit offsets added to (B, C) clip logits or to every frame of (B, T, C)."""
    return logits.float() + (offset.unsqueeze(1) if logits.dim() == 3 else offset)


def clip_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) clip scores of a training forward: (B, T, C) frame logits go to their consensus."""
    from ..models.heads import frame_consensus

    return frame_consensus(logits) if logits.dim() == 3 else logits


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return per_sample_cross_entropy(logits, targets).mean()


def train_step(model, batches: list[tuple], optimizer, cfg: TrainConfig, num_classes: int, device: torch.device,
               cross_mixup: bool = False, *, scaler: torch.amp.GradScaler | None = None,
               memory_format: torch.memory_format | None = None, zero_grad: bool = True, step: bool = True,
               loss_scale: float = 1.0) -> dict:
    """One iteration: for each (source, x, y, weight[, logit_offset]) batch, forward + weighted
    CE; sum; one backward.

    ``logit_offset`` (C,), when given, is added to that batch's logits inside its loss only
    (``aux_logit_offset``: the prior correction of web sources). Mixup is within each batch;
    with ``cross_mixup`` the batches are concatenated and each sample is mixed with one of
    another source (OmniSource §3.3), keeping its source's weight / batch size and offset, which
    is the same summed loss as the per-batch form before mixing.
    Gradient accumulation: ``zero_grad`` / ``step`` say whether this iteration opens / closes an
    accumulation window, and ``loss_scale`` (1 / window length) makes the window's summed
    gradient that of one large batch. ``scaler``: fp16 loss scaling (``train.precision``).
    """
    model.train()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    prepared = []
    for source, x, y, weight, *rest in batches:
        # uint8 clips cross to the device and become floats there (features pass as they are)
        x = to_memory_format(to_float(x.to(device, non_blocking=True)), memory_format)
        y = y.to(device, non_blocking=True)
        off = torch.zeros(num_classes, device=device) if not rest or rest[0] is None else rest[0].to(device)
        prepared.append((source, x, y, soft_targets(y, num_classes, cfg.label_smoothing), weight,
                         off.float().expand(len(x), num_classes)))
    mixed = cross_mixup and cfg.mixup_alpha > 0 and len(prepared) > 1
    if mixed:
        x, t, _, off = mix_across_sources(
            torch.cat([p[1] for p in prepared]), torch.cat([p[3] for p in prepared]),
            torch.cat([torch.full((len(p[1]),), k, device=device) for k, p in enumerate(prepared)]), cfg.mixup_alpha,
            torch.cat([p[5] for p in prepared]))
        groups = [("mixed", x, t, torch.cat([torch.full((len(p[1]),), p[4] / len(p[1]), device=device)
                                             for p in prepared]), off)]
    else:
        groups = [(src, x, t, torch.full((len(x),), w / len(x), device=device), off)
                  for src, x, _, t, w, off in prepared]
    total = torch.zeros((), device=device)
    logits_of = {}
    for name, x, t, w, off in groups:
        if cfg.mixup_alpha > 0 and not mixed:
            x, t, off = mixup(x, t, cfg.mixup_alpha, off)
        with autocast_for(device, cfg.amp, cfg.amp_dtype):
            logits = model(x)
        total = total + (w * per_sample_cross_entropy(with_offset(logits, off), t)).sum()
        logits_of[name] = clip_logits(logits.detach())
    backward(total * loss_scale if loss_scale != 1.0 else total, scaler)
    if step:
        optimizer_step(optimizer, model.parameters(), cfg.clip_grad, scaler)
    stats = {"total_loss": total.item()}
    offset = 0
    for source, x, y, t, weight, _ in prepared:
        if "mixed" in logits_of:
            logits, offset = logits_of["mixed"][offset:offset + len(x)], offset + len(x)
        else:
            logits = logits_of[source]
        hard = y if y.ndim == 1 else y.argmax(-1)
        stats[source] = {"loss": soft_cross_entropy(logits, t).item(),
                         "acc": (logits.argmax(-1) == hard).float().mean().item(), "n": int(x.shape[0])}
    return stats


@torch.no_grad()
def predict(model, loader, device: torch.device, amp: bool = False, label: str = "predict",
            progress: bool = True, dtype: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores averaged over views when x is (B, V, ...) for a model expecting (B, ...)."""
    from ..progress import track

    model.eval()
    scores, labels = [], []
    for x, y, *_ in track(loader, label, unit="batches", enabled=progress):
        x = to_float(x.to(device, non_blocking=True))
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


def _mean_stats(items: list[dict], dist: ddp.Dist | None = None) -> dict:
    """Per-source loss and accuracy, weighted by batch size and summed over ranks under torchrun."""
    sources = sorted({k for it in items for k, v in it.items() if isinstance(v, dict)})
    sums = []
    for source in sources:
        rows = [it[source] for it in items if source in it]
        sums += [sum(r["loss"] * r["n"] for r in rows), sum(r["acc"] * r["n"] for r in rows), sum(r["n"] for r in rows)]
    sums = ddp.sum_across(sums, dist)
    return {src: {"loss": sums[3 * k] / sums[3 * k + 2], "acc": sums[3 * k + 1] / sums[3 * k + 2]}
            for k, src in enumerate(sources)}


def set_epoch(loaders: Iterable, epoch: int) -> None:
    """Tell each loader's dataset and samplers the epoch (their draws are seeded by it)."""
    for loader in loaders:
        for part in (getattr(loader, "dataset", None), getattr(loader, "sampler", None),
                     getattr(loader, "batch_sampler", None)):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


def fit(model, train_loader, val_loader, cfg: TrainConfig, run_dir: str | Path, classes: list[str],
        config_text: str = "", aux: list[Source] = (), resume: bool = False, console=None,
        param_groups=None, cross_mixup: bool = False, dist: ddp.Dist | None = None) -> dict:
    """Train for cfg.epochs with a checkpoint per epoch; ``resume`` continues from the latest one.

    An epoch is one pass over the target set, or several when ``cfg.min_steps`` asks for more
    iterations than ``cfg.epochs`` passes give (a few labeled videos per class make passes of one
    or two batches), so checkpoints and validations stay one per epoch whatever the set's size.
    Every epoch reseeds the global RNGs from (seed, epoch), so a resumed run draws the same
    shuffles, augmentations and mixup coefficients as an uninterrupted one. Under torchrun
    (``dist``, default: this process's) the model is wrapped in DistributedDataParallel, the
    loaders already yield this rank's share (distributed.ddp), statistics and validation
    predictions are combined over ranks, and only rank 0 writes the log and checkpoints.
    """
    from ..console import console as default_console
    from ..progress import Progress

    console = console or default_console
    dist = dist or ddp.context()
    run_dir = Path(run_dir)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    device = ddp.rank_device(resolve_device(cfg.device), dist)
    model, fmt = prepare_model(model, device, cfg.channels_last)  # compiled below, after the DDP wrap
    scaler = make_scaler(device, amp_dtype(device, cfg.amp, cfg.amp_dtype))
    optimizer = build_optimizer(model, cfg, param_groups)
    steps_per_pass = len(train_loader)
    if steps_per_pass == 0:
        raise RuntimeError("the target training set yields no batch: check the split and batch size")
    passes = passes_per_epoch(cfg, steps_per_pass)
    steps_per_epoch = passes * steps_per_pass
    state = start_or_resume(model, optimizer, run_dir, resume, device, console, main=dist.is_main)
    start_epoch, history = state["epoch"], state.get("history", [])
    net = ddp.wrap(model, device, dist)
    forward = torch.compile(net, backend=cfg.compile_backend) if cfg.compile else net
    if dist.enabled:
        sampler = train_loader.batch_sampler
        batch = (f"global batch {ddp.describe_batch(sampler.batch_size // dist.world_size, dist)}, "
                 if isinstance(sampler, ddp.ShardedBatchSampler) else "")
        console.print(f"DistributedDataParallel: world size {dist.world_size} ({dist.backend}), {batch}"
                      f"{steps_per_epoch} steps per epoch")
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    log_path = run_dir / "log.jsonl"
    card = card_from_text(config_text, classes, model)
    loggers = open_loggers(cfg.log if dist.is_main else [], run_dir, start_epoch)  # rank 0 writes the run folder
    if dist.is_main:
        after_epoch(run_dir, history, cfg.keep_checkpoints)  # what a kill left: debris, an unpruned epoch
    aux_iters = [(s, _cycle(s.loader)) for s in aux]
    for epoch in range(start_epoch, cfg.epochs):
        _seed_epoch(ddp.rank_seed(cfg.seed, dist.rank), epoch)
        set_epoch([s.loader for s in aux], epoch)  # the target loader's epochs are set per pass (_passes)
        items, t0 = [], time.time()
        with Progress(f"{run_dir.name} epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch, "steps",
                      console=console) as bar:
            for i, (x, y, *_) in enumerate(_passes(train_loader, epoch, passes)):
                step = epoch * steps_per_epoch + i
                lr = set_lr(optimizer, step, steps_per_epoch, cfg)
                batches = [("target", x, y, 1.0)]
                for source, it in aux_iters:
                    ax, ay, *_ = next(it)
                    batches.append((source.name, ax, ay, source.weight, source.logit_offset))
                # Accumulation windows of train.accumulate iterations (the epoch's last may be shorter).
                window = min(cfg.accumulate, steps_per_epoch - i + i % cfg.accumulate)
                items.append(train_step(forward, batches, optimizer, cfg, len(classes), device, cross_mixup,
                                        scaler=scaler, memory_format=fmt, zero_grad=i % cfg.accumulate == 0,
                                        step=(i + 1) % cfg.accumulate == 0 or i + 1 == steps_per_epoch,
                                        loss_scale=1.0 / window))
                bar.advance(note=f"loss {items[-1]['total_loss']:.3f} lr {lr:.2e}")
        record = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.time() - t0, 2),
                  "steps": (epoch + 1) * steps_per_epoch, "world_size": dist.world_size,
                  "train": _mean_stats(items, dist)}
        if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            scores, labels = ddp.gather_predictions(
                *predict(model, ddp.shard_eval_loader(val_loader, dist), device, cfg.amp, f"{run_dir.name} validation",
                         dtype=cfg.amp_dtype), dist)
            m = classification_metrics(scores, labels, classes)
            record["val"] = {k: m[k] for k in ("top1", "top5", "mean_class_accuracy")}
        history.append(record)
        if dist.is_main:
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
    ddp.barrier(dist)  # the run folder is complete before any rank goes on
    return {"history": history, "last": history[-1] if history else None}


def passes_per_epoch(cfg: TrainConfig, steps_per_pass: int) -> int:
    """Passes over the target set per epoch: enough for ``cfg.min_steps`` iterations in all."""
    if cfg.min_steps <= 0:
        return 1
    return max(1, math.ceil(cfg.min_steps / (cfg.epochs * steps_per_pass)))


def _passes(loader, epoch: int, passes: int) -> Iterator:
    """``passes`` passes over ``loader``; each draws its own augmentations (set_epoch)."""
    for p in range(passes):
        set_epoch([loader], epoch * passes + p)
        yield from loader


def start_or_resume(model, optimizer, run_dir: Path, resume: bool, device: torch.device, console,
                    main: bool = True) -> dict:
    """With ``resume``, load the latest checkpoint's weights, optimizer and RNG state and return
    its state dict; otherwise (or with no checkpoint) return {"epoch": 0} after removing the run's
    old log and checkpoints, so stale later epochs cannot pass for the new run's result (only
    the ``main`` process removes or creates anything)."""
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is None:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
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

