"""Two-stage image-to-video domain adaptation of Kae & Song ("Image to Video Domain Adaptation
Using Web Supervision", WACV 2020), trained on web data only; the target frames carry no label.

Stage 1 (§3.1–3.3): one 2D image model, three branches with shared weights — web images
(``image``), frames of web videos (``frame``), unlabeled target frames (``target``). Stage 2
(§3.4): a (2+1)D video model built from the stage-1 network
(:mod:`omnisource.models.inflate2plus1`), trained on web video chunks (``frame``) against target
video chunks with the same DA and attention. Both stages use :func:`da_step`:

    L = Σ_{s ∈ web} Σ_i α_i CE(f(x_i), y_i)  +  Σ_{(a, b) ∈ pairs} L_d(D_ab(GRL_β(E(x_a))), D_ab(GRL_β(E(x_b))))

(Eq. 2 and 6 of the paper: weighted classification loss plus the discriminator losses through the
gradient reversal layer), summed and back-propagated once. Without attention α_i = 1/|B_s|
(the plain batch mean); without DA the second sum is empty.

A run folder (``runs/<da.image_run>`` or ``runs/<da.video_run>``) holds ``checkpoints/``
(the classifier, discriminators and attention together, per epoch; ``--resume`` continues),
``log.jsonl`` (per epoch: each loss term, β, attention-weight statistics, validation metrics),
``metrics.json`` (validation of the final model) and ``attention.jsonl``:

    one JSON object per web sample that was drawn, sorted by ``weight`` ascending:
    {"id": str, "source": "image" | "frame", "weight": float, "draws": int}
    ``weight`` is the mean over the run of n·α_i (n = its batch size), so 1.0 is the uniform
    weight, < 1 down-weighted, > 1 up-weighted. The first lines are the lowest-weighted web
    samples of the run, the last lines the highest-weighted. A frame sample carries the id of
    its video (all its frames pooled). Rows of the workspace's web manifests share these ids.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..config import DAConfig, TrainConfig
from ..data.manifest import atomic_write_text
from ..data.transforms import to_float
from ..evaluate.metrics import classification_metrics
from ..models.domain import DOMAIN_PAIRS, BilinearAttention, DomainDiscriminator, beta_at, domain_loss, grad_reverse
from .checkpoint import after_epoch, save_checkpoint
from .loggers import open_loggers
from .loop import (_cycle, _seed_epoch, autocast_for, build_optimizer, per_sample_cross_entropy, predict,
                   resolve_device, set_epoch, set_lr, soft_targets, start_or_resume)
from .precision import amp_dtype, backward, make_scaler, optimizer_step, prepare_model, to_memory_format

WEB = ("image", "frame")


class DANet(nn.Module):
    """The classifier with its domain discriminators and attention, trained and saved together.

    ``domains`` are the branches fed to the step (a subset of image, frame, target); a
    discriminator is built for each configured pair whose two domains are both fed. ``forward``
    computes a step's losses, so that under torchrun DistributedDataParallel wraps all of it.
    """

    def __init__(self, model: nn.Module, da: DAConfig, domains: Iterable[str]):
        super().__init__()
        from ..models.domain import stage_dims_of

        self.model = model
        self.multi_layer = da.multi_layer
        domains = set(domains)
        dims = stage_dims_of(model) if da.multi_layer else [int(model.num_features)]
        pairs = [p for p in da.discriminators if set(DOMAIN_PAIRS[p]) <= domains] if da.adversarial else []
        self.discs = nn.ModuleDict({p: DomainDiscriminator(dims, da.disc_hidden, da.dropout) for p in pairs})
        use_attention = da.attention and "target" in domains
        self.attention = BilinearAttention(int(model.num_features), da.top_ratio, da.tau, da.learn_w) \
            if use_attention else None

    def forward(self, batches: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], beta: float,
                num_classes: int, smoothing: float = 0.0, amp: bool = False, amp_dtype: str = "auto") -> dict:
        """The loss terms of one step (Eq. 2 and 6) on ``batches`` (branch -> (x, y, index), x on
        the device) as this process's share: under torchrun, where each process holds a share of
        every branch's global batch, the shares of all processes sum to the terms one process
        computes on the whole batch. Returns {"losses": {term: tensor}, "alpha": {web branch: α
        of the global batch}, "index": {web branch: its sample indices, in α's order}}.

        α is the one term that couples samples (a softmax over the web batch of top-T sums over
        the target batch). Its inputs are embeddings detached from the encoder (which is not
        trained through α, in one process either), so every process gathers the web and target
        embeddings of the global batch without gradient and computes the whole α itself; a
        learned W gets, on each process, the gradient of its own samples' weighted loss through
        every α_j, and DDP's average of those (times the world size, see ``da_step``) is the
        one-process gradient. The cross-entropy and discriminator terms are sums over samples,
        so a process needs only the global counts to take its share."""
        from ..distributed import ddp

        device = next(iter(batches.values()))[0].device
        with autocast_for(device, amp, amp_dtype):
            stages = {name: self.model.forward_stages(x) for name, (x, _, _) in batches.items()}
            web = [name for name in WEB if name in batches]
            logits = {name: self.model.fc(self.model.dropout(stages[name][-1])) for name in web}
        names = list(batches)
        embedded = web + ["target"] if self.attention is not None else []
        gathered, counts = ddp.gather_rows([batches[n][2] for n in names] + [stages[n][-1] for n in embedded])
        rank = ddp.context().rank
        size = {n: sum(counts[k]) for k, n in enumerate(names)}
        emb = dict(zip(embedded, gathered[len(names):]))
        losses, alphas = {}, {}
        for name in web:
            ce = per_sample_cross_entropy(logits[name], soft_targets(batches[name][1], num_classes, smoothing))
            if self.attention is not None:  # Eq. 3-5 over the global batch
                alpha = self.attention(emb[name], emb["target"])
            else:
                alpha = torch.full((size[name],), 1.0 / size[name], device=ce.device)
            at = sum(counts[names.index(name)][:rank])  # this process's rows of the global batch
            losses[f"ce_{name}"] = (alpha[at:at + len(ce)] * ce).sum()  # Eq. 6
            alphas[name] = alpha.detach()
        for pair, disc in self.discs.items():  # Eq. 2 through the gradient reversal layer
            a, b = DOMAIN_PAIRS[pair]
            fa = [grad_reverse(f, beta) for f in (stages[a] if self.multi_layer else stages[a][-1:])]
            fb = [grad_reverse(f, beta) for f in (stages[b] if self.multi_layer else stages[b][-1:])]
            losses[f"domain_{pair}"] = domain_loss(disc, fa, fb, size[a] + size[b])
        return {"losses": losses, "alpha": alphas, "index": {n: gathered[names.index(n)] for n in web}}


def da_step(net: nn.Module, batches: dict[str, tuple], optimizer: torch.optim.Optimizer, beta: float,
            cfg: TrainConfig, num_classes: int, device: torch.device, *, scaler=None, memory_format=None,
            zero_grad: bool = True, step: bool = True, loss_scale: float = 1.0) -> dict:
    """One iteration: forward every branch, α-weighted CE on the web branches, discriminator
    losses through the GRL, one backward, one step. ``net``: a :class:`DANet`, or the
    DistributedDataParallel wrapping one under torchrun. ``batches`` maps a branch name (image,
    frame, target) to ``(x, y[, index])``; target labels are ignored. Returns each loss term of
    the global batch, and α with the sample indices it weights. ``scaler``, ``zero_grad``,
    ``step`` and ``loss_scale`` as in ``loop.train_step``."""
    from ..distributed import ddp

    net.train()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    inputs = {}
    for name, (x, y, *index) in batches.items():
        x = to_memory_format(to_float(x.to(device, non_blocking=True)), memory_format)
        inputs[name] = (x, y.to(device), (torch.as_tensor(index[0]) if index else torch.arange(len(x))).to(device))
    out = net(inputs, beta, num_classes, cfg.label_smoothing, cfg.amp, cfg.amp_dtype)
    losses = out["losses"]
    total = sum(losses.values())
    # DDP averages the processes' gradients, and each process's terms are its share of the sum.
    world = ddp.context().world_size
    scale = loss_scale * world
    backward(total * scale if scale != 1.0 else total, scaler)
    if step:
        optimizer_step(optimizer, net.parameters(), cfg.clip_grad, scaler)
    values = ddp.sum_across([float(total.detach())] + [float(v.detach()) for v in losses.values()])
    return {"total_loss": values[0], "losses": dict(zip(losses, values[1:])), "alpha": out["alpha"],
            "index": out["index"]}


class AttentionLog:
    """Running mean of n·α per web sample id (see the module docstring for the file it writes)."""

    def __init__(self, state: dict | None = None):
        self.sums: dict[tuple[str, str], list[float]] = {tuple(k.split("\t", 1)): v for k, v in (state or {}).items()}

    def add(self, source: str, ids: list[str], alpha: torch.Tensor) -> None:
        w = (alpha.float().cpu() * len(alpha)).tolist()
        for rid, wi in zip(ids, w):
            s = self.sums.setdefault((source, rid), [0.0, 0])
            s[0] += wi
            s[1] += 1

    def state(self) -> dict:
        return {"\t".join(k): v for k, v in self.sums.items()}

    def rows(self) -> list[dict]:
        rows = [{"id": rid, "source": src, "weight": s / n, "draws": int(n)} for (src, rid), (s, n) in self.sums.items()]
        return sorted(rows, key=lambda r: (r["weight"], r["id"]))

    def write(self, path: Path) -> Path:
        return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.rows()))


def _mean(items: list[dict]) -> dict:
    keys = sorted({k for it in items for k in it["losses"]})
    out = {k: float(np.mean([it["losses"][k] for it in items if k in it["losses"]])) for k in keys}
    out["total"] = float(np.mean([it["total_loss"] for it in items]))
    return out


def fit_da(net: DANet, loaders: dict[str, object], ids: dict[str, list[str]], val_loader, cfg: TrainConfig,
           da: DAConfig, run_dir: Path, classes: list[str], config_text: str = "", resume: bool = False,
           console=None) -> dict:
    """Train ``net`` for ``cfg.epochs`` epochs (an epoch = one pass over the largest web loader;
    the others cycle), a checkpoint per epoch, then write metrics.json and attention.jsonl.

    ``loaders`` maps branch names to loaders yielding ``(x, y, index)``; ``ids[name][index]``
    names the web sample for the attention log. Under torchrun (as ``loop.fit``) the loaders yield
    this process's share of each global batch, ``net`` trains wrapped in DistributedDataParallel,
    dropout streams are per process, the logged losses and α are those of the global batch,
    validation predictions are gathered, and rank 0 alone writes the run folder."""
    from ..console import console as default_console
    from ..distributed import ddp
    from ..progress import Progress

    console = console or default_console
    if not any(name in loaders for name in WEB):
        raise ValueError("domain adaptation needs at least one web source with labelled samples")
    dist = ddp.context()
    run_dir = Path(run_dir)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    device = ddp.rank_device(resolve_device(cfg.device), dist)
    if cfg.compile:  # the step runs forward_stages, which a compiled forward() would not cover
        raise ValueError("train.compile is not supported with train.method=da")
    _, fmt = prepare_model(net, device, cfg.channels_last)
    scaler = make_scaler(device, amp_dtype(device, cfg.amp, cfg.amp_dtype))
    optimizer = build_optimizer(net, cfg)
    main = max((n for n in WEB if n in loaders), key=lambda n: len(loaders[n]))
    steps_per_epoch = len(loaders[main])
    if steps_per_epoch == 0:
        raise ValueError(f"the web {main} set yields no batch: it has fewer samples than train.batch_size")
    total_steps = cfg.epochs * steps_per_epoch
    state = start_or_resume(net, optimizer, run_dir, resume, device, console, main=dist.is_main)
    start_epoch, history, att = state["epoch"], state.get("history", []), AttentionLog(state.get("attention"))
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    wrapped = ddp.wrap(net, device, dist)
    if dist.enabled:
        batch = ddp.describe_batch(loaders[main].batch_sampler.batch_size // dist.world_size, dist)
        console.print(f"DistributedDataParallel: world size {dist.world_size} ({dist.backend}), global batch "
                      f"{batch} per branch, {steps_per_epoch} steps per epoch")
    loggers = open_loggers(cfg.log if dist.is_main else [], run_dir, start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        _seed_epoch(ddp.rank_seed(cfg.seed, dist.rank), epoch)
        set_epoch(loaders.values(), epoch)
        others = {n: _cycle(l) for n, l in loaders.items() if n != main}
        items, weights, t0 = [], [], time.time()
        with Progress(f"{run_dir.name} epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch, "steps",
                      console=console) as bar:
            for i, batch in enumerate(loaders[main]):
                step = epoch * steps_per_epoch + i
                lr = set_lr(optimizer, step, steps_per_epoch, cfg)
                batches = {main: batch, **{name: next(it) for name, it in others.items()}}
                beta = beta_at(step / max(1, total_steps), da.beta, da.beta_schedule, da.dann_gamma)
                window = min(cfg.accumulate, steps_per_epoch - i + i % cfg.accumulate)
                out = da_step(wrapped, batches, optimizer, beta, cfg, len(classes), device, scaler=scaler,
                              memory_format=fmt, zero_grad=i % cfg.accumulate == 0,
                              step=(i + 1) % cfg.accumulate == 0 or i + 1 == steps_per_epoch, loss_scale=1.0 / window)
                for name, alpha in out["alpha"].items():  # the global batch's: every web sample once
                    att.add(name, [ids[name][int(j)] for j in out["index"][name]], alpha)
                    weights.append((alpha * len(alpha)).cpu())
                items.append(out)
                bar.advance(note=f"loss {out['total_loss']:.3f} lr {lr:.2e}")
        w = torch.cat(weights) if weights else torch.ones(1)
        record = {"epoch": epoch + 1, "lr": lr, "beta": beta, "seconds": round(time.time() - t0, 2),
                  "steps": (epoch + 1) * steps_per_epoch, "world_size": dist.world_size,
                  "train": _mean(items), "attention": {"min": float(w.min()), "max": float(w.max()),
                                                      "std": float(w.std()) if len(w) > 1 else 0.0}}
        if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            m = classification_metrics(*_predict(net.model, val_loader, device, cfg, dist), classes)
            record["val"] = {k: m[k] for k in ("top1", "top5", "mean_class_accuracy")}
        history.append(record)
        if dist.is_main:
            with open(run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(run_dir, epoch + 1, net, optimizer,
                            {"history": history, "attention": att.state(),
                             **({"scaler": scaler.state_dict()} if scaler is not None else {})}, config_text)
            after_epoch(run_dir, history, cfg.keep_checkpoints)
            loggers.log(record)
        terms = ", ".join(f"{k} {v:.3f}" for k, v in record["train"].items())
        val = f", val top1 {record['val']['top1']:.3f}" if "val" in record else ""
        console.print(f"{run_dir.name} epoch {epoch + 1}/{cfg.epochs}: {terms}, α×n {record['attention']['min']:.2f}"
                      f"..{record['attention']['max']:.2f}{val}")
    loggers.close()
    metrics = {}
    if val_loader is not None:
        metrics = classification_metrics(*_predict(net.model, val_loader, device, cfg, dist), classes)
    if dist.is_main:
        att.write(run_dir / "attention.jsonl")
        if metrics:
            atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    ddp.barrier(dist)  # the run folder is complete before any rank goes on (stage 2 reads stage 1's)
    return {"history": history, "metrics": metrics}


def _predict(model: nn.Module, loader, device: torch.device, cfg: TrainConfig, dist):
    """Validation scores and labels: each process predicts its stride, rank order gathered."""
    from ..distributed import ddp

    return ddp.gather_predictions(*predict(model, ddp.shard_eval_loader(loader, dist), device, cfg.amp,
                                           dtype=cfg.amp_dtype), dist)


def stage_config(cfg: TrainConfig, da: DAConfig, stage: str) -> TrainConfig:
    """The TrainConfig of a stage: stage 2 may use its own epochs and a scaled learning rate."""
    if stage == "video":
        return replace(cfg, epochs=da.video_epochs or cfg.epochs, lr=cfg.lr * da.video_lr_scale)
    return cfg
