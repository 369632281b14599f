"""Domain adaptation heads of Kae & Song, "Image to Video Domain Adaptation Using Web
Supervision" (WACV 2020): gradient reversal, domain discriminators, bilinear attention.

* :func:`grad_reverse` — the gradient reversal layer of Ganin & Lempitsky ("Unsupervised
  Domain Adaptation by Backpropagation", ICML 2015, §3.2, Eq. 9): identity forward, the
  gradient multiplied by ``-β`` backward. :func:`beta_at` gives β per training step: constant
  (Kae & Song §3.2 use β = 0.5) or the DANN ramp ``β · (2 / (1 + exp(-γ p)) - 1)`` of Ganin
  et al. (JMLR 2016, §5.2.2), ``p`` = training progress in [0, 1], γ = 10.
* :class:`DomainDiscriminator` — an MLP telling two domains apart from pooled encoder features.
  Kae & Song §3.2 use three: target frames vs web images, target frames vs web video frames,
  web images vs web video frames (:data:`DOMAIN_PAIRS`). The multi-layer variant takes pooled
  features of several encoder stages and concatenates them stage by stage (§3.2, "multi-layer
  domain adaptation") before the MLP. :func:`domain_loss` is the binary cross-entropy of
  Eq. (2): domain ``a`` labelled 1, domain ``b`` labelled 0; through the GRL the discriminator
  minimises it while the encoder maximises it (one backward serves both).
* Attention (§3.3, Eq. 3–5): ``e_ik = E(x_i)ᵀ W E(x_k^T)`` between web sample ``i`` and target
  sample ``k`` (:func:`bilinear_similarity`), ``s_i`` = sum of the top-T ``e_ik`` over the
  target batch, T = 0.9 × target batch size (:func:`top_t_sum`, :func:`top_t_count`),
  ``α = softmax(s / τ)`` over the web batch (:func:`attention_weights`); α weights the
  per-sample cross-entropy (Eq. 6). :class:`BilinearAttention` holds ``W`` (initialised to the
  identity). ``W`` gets its gradient only through the α-weighted loss, whose minimum puts all
  weight on the easiest web sample: on synthetic data n·α reached 7.9–8.0 of a possible 8 (one
  sample per batch of 8 carried the loss) within an epoch, and one run ended predicting a single
  class. So ``learn=False`` (keep ``W = I``, a cosine-similarity attention) is offered and is the
  default of ``da.learn_w``. Embeddings are L2-normalised before the product so that ``e`` is a
  cosine at initialisation and τ has the same meaning for every encoder width (our choice; the
  paper does not say how ``E`` is scaled).

Every function works on plain tensors; the tests check them against values worked out by hand.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["grad_reverse", "beta_at", "DomainDiscriminator", "domain_loss", "DOMAIN_PAIRS",
           "bilinear_similarity", "top_t_count", "top_t_sum", "attention_weights", "BilinearAttention"]

#: discriminator name -> (domain labelled 1, domain labelled 0) (Kae & Song §3.2)
DOMAIN_PAIRS = {"target_image": ("target", "image"), "target_frame": ("target", "frame"),
                "image_frame": ("image", "frame")}

Features = Union[torch.Tensor, Sequence[torch.Tensor]]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta: float):
        ctx.beta = beta
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.beta * grad, None


def grad_reverse(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by ``-beta`` (Ganin & Lempitsky, Eq. 9)."""
    return _GradReverse.apply(x, float(beta))


def beta_at(progress: float, beta: float = 0.5, schedule: str = "constant", gamma: float = 10.0) -> float:
    """GRL weight at training progress ``p`` in [0, 1]: ``beta`` (constant) or the DANN ramp
    ``beta * (2 / (1 + exp(-gamma p)) - 1)``, 0 at the start and -> ``beta`` at the end."""
    if schedule == "constant":
        return float(beta)
    if schedule == "dann":
        p = min(max(float(progress), 0.0), 1.0)
        return float(beta) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)
    raise ValueError(f"unknown GRL schedule {schedule!r}; expected 'constant' or 'dann'")


class DomainDiscriminator(nn.Module):
    """``Linear(sum dims, hidden) - ReLU - Dropout - Linear(hidden, hidden) - ReLU - Linear(hidden, 1)``
    on the concatenation of the given stage features (one logit per sample: domain ``a``)."""

    def __init__(self, dims: Sequence[int], hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.net = nn.Sequential(nn.Linear(sum(self.dims), hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, feats: Features) -> torch.Tensor:
        parts = [feats] if isinstance(feats, torch.Tensor) else list(feats)
        if [p.shape[-1] for p in parts] != self.dims:
            raise ValueError(f"discriminator expects stage features of dims {self.dims}, "
                             f"got {[p.shape[-1] for p in parts]}")
        return self.net(torch.cat([p.float() for p in parts], dim=-1)).squeeze(-1)


def domain_loss(disc: nn.Module, feats_a: Features, feats_b: Features, total: int | None = None) -> torch.Tensor:
    """Binary cross-entropy of ``disc`` over both batches: ``a`` labelled 1, ``b`` labelled 0,
    averaged over all samples of the two (Kae & Song Eq. 2). ``total``: divide the summed loss by
    this count instead (a process's share of a batch split over processes: the shares then sum
    to the mean over the whole batch)."""
    la, lb = disc(feats_a), disc(feats_b)
    logits = torch.cat([la, lb])
    labels = torch.cat([torch.ones_like(la), torch.zeros_like(lb)])
    if total is None:
        return F.binary_cross_entropy_with_logits(logits, labels)
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / total


def bilinear_similarity(web: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``e[i, k] = web[i]ᵀ W target[k]`` (Kae & Song Eq. 3): (N, D), (K, D), (D, D) -> (N, K)."""
    return web @ weight @ target.t()


def top_t_count(target_batch: int, ratio: float = 0.9) -> int:
    """T = ratio × target batch size, rounded, at least 1 and at most the batch (§3.3)."""
    return max(1, min(int(target_batch), int(round(ratio * target_batch))))


def top_t_sum(e: torch.Tensor, t: int) -> torch.Tensor:
    """``s_i`` = sum of the ``t`` largest ``e[i, k]`` over the target batch (Eq. 4): (N, K) -> (N,)."""
    return e.topk(min(int(t), e.shape[1]), dim=1).values.sum(dim=1)


def attention_weights(s: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``α = softmax(s / τ)`` over the web batch (Eq. 5); the weights sum to 1."""
    if tau <= 0:
        raise ValueError(f"attention temperature must be positive, got {tau}")
    return torch.softmax(s.float() / tau, dim=0)


class BilinearAttention(nn.Module):
    """α for a web batch given a target batch: Eq. 3–5 with a learned ``W`` (identity at start)."""

    def __init__(self, dim: int, top_ratio: float = 0.9, tau: float = 1.0, learn: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(int(dim)), requires_grad=learn)
        self.top_ratio, self.tau = float(top_ratio), float(tau)

    def forward(self, web: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        web, target = F.normalize(web.float(), dim=-1), F.normalize(target.float(), dim=-1)
        e = bilinear_similarity(web, target, self.weight)
        return attention_weights(top_t_sum(e, top_t_count(target.shape[0], self.top_ratio)), self.tau)


def stage_dims_of(model: nn.Module) -> List[int]:
    """Dims of ``model.forward_stages`` (TSN models and the feature-mode adapters expose them)."""
    dims = getattr(model, "stage_dims", None)
    if not dims:
        raise ValueError(f"{type(model).__name__} exposes no stage_dims: multi-layer discriminators need them")
    return [int(d) for d in dims]
