"""Evaluating a pre-trained network on the target (Ghadiyaram et al. CVPR 2019, §4; SPL, Li et al. 2022, §4):
full fine-tuning with a new classifier and per-layer learning rates, and the fc-only linear probe
(frozen body, BatchNorm frozen too: running statistics fixed and used in training).

Works for any model of the zoo (pixel mode) and any feature-mode head: both expose ``fc`` and
``reset_classifier(num_classes)``; "body" is every parameter outside ``fc``.
"""
from __future__ import annotations

from torch import nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _check(model: nn.Module) -> None:
    if not isinstance(getattr(model, "fc", None), nn.Linear) or not hasattr(model, "reset_classifier"):
        raise ValueError(f"{type(model).__name__} has no `fc` classifier with reset_classifier(); "
                         "it cannot be fine-tuned or probed")


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(body parameters, classifier parameters)."""
    fc = {id(p) for p in model.fc.parameters()}
    body = [p for p in model.parameters() if id(p) not in fc]
    return body, list(model.fc.parameters())


def finetune_groups(model: nn.Module, num_classes: int, body_lr_scale: float = 0.1) -> list[dict]:
    """Replace the classifier by a fresh one for ``num_classes`` and return optimizer groups: the
    body at ``body_lr_scale`` × the learning rate, the new ``fc`` at the full rate; no weight
    decay on biases and norm weights (``loop.build_optimizer`` reads ``lr_scale``)."""
    _check(model)
    if body_lr_scale < 0:
        raise ValueError(f"body learning-rate scale must be 0 or more, got {body_lr_scale}")
    model.reset_classifier(num_classes)
    body, head = split_params(model)
    for p in model.parameters():
        p.requires_grad_(True)
    groups = [{"params": [p for p in body if p.ndim > 1], "lr_scale": body_lr_scale},
              {"params": [p for p in body if p.ndim <= 1], "lr_scale": body_lr_scale, "weight_decay": 0.0},
              {"params": [p for p in head if p.ndim > 1], "lr_scale": 1.0},
              {"params": [p for p in head if p.ndim <= 1], "lr_scale": 1.0, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode for good (``model.train()`` leaves them in eval)
    and freeze its affine parameters; returns how many layers were frozen."""
    n = 0
    for m in model.modules():
        if isinstance(m, _BN):
            m.train = _stay_eval.__get__(m)
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            n += 1
    return n


def linear_probe_groups(model: nn.Module, num_classes: int) -> list[dict]:
    """fc-only evaluation: a fresh ``fc``, every other parameter frozen, BatchNorm frozen."""
    _check(model)
    model.reset_classifier(num_classes)
    body, head = split_params(model)
    for p in body:
        p.requires_grad_(False)
    freeze_batchnorm(model)
    for p in head:
        p.requires_grad_(True)
    return [{"params": [p for p in head if p.ndim > 1]}, {"params": [p for p in head if p.ndim <= 1], "weight_decay": 0.0}]


def transfer(model: nn.Module, how: str, train_loader, val_loader, cfg, run_dir, classes: list[str],
             body_lr_scale: float = 0.1, console=None, config_text: str = "", resume: bool = False) -> dict:
    """Fine-tune (``how="finetune"``) or linear-probe (``how="probe"``) ``model`` on the target
    loaders with ``loop.fit``; returns the validation metrics of the last epoch (or {} without
    validation rows)."""
    from ..evaluate.metrics import classification_metrics
    from .loop import fit, predict, resolve_device

    if how == "finetune":
        groups = finetune_groups(model, len(classes), body_lr_scale)
    elif how == "probe":
        groups = linear_probe_groups(model, len(classes))
    else:
        raise ValueError(f"unknown transfer {how!r}; expected finetune or probe")
    fit(model, train_loader, val_loader, cfg, run_dir, classes, config_text, resume=resume, console=console,
        param_groups=groups)
    if val_loader is None:
        return {}
    device = resolve_device(cfg.device)
    scores, labels = predict(model, val_loader, device, cfg.amp, cfg.amp_dtype)
    return classification_metrics(scores, labels, classes)
