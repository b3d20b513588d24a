"""Training regularizers: L1 on weights and Shi et al. (2021)'s warm-up regularizer.

* :func:`l1_penalty` — ``Σ |W|`` over the weights of every ``Conv2d`` / ``Linear`` layer (no biases, no
  BatchNorm, no Normalization); the loss adds ``l1 · l1_penalty(model)`` every step (paper §4.1, App. C.3;
  original ``regularization.compute_L1_reg``).
* :func:`warmup_regularizer` — Shi, Wang, Zhang, Yi & Hsieh, "Fast Certified Robust Training with Short
  Warmup", NeurIPS 2021 (original ``regularization.compute_fast_reg(net, eps, tol=0.5)``): penalizes
  loose IBP bounds and imbalanced ReLU states, used only while ε ramps up, with weight
  ``fast_reg · (1 − ε/ε_end)``. From IBP bounds ``[(l₀, u₀), (l₁, u₁), …]`` — the input box after the
  Normalization layer, then the pre-activation bounds of every ReLU layer — and τ = 0.5:

  - ``input_tightness = mean((u₀ − l₀)/2)``;
  - per ReLU layer k: ``tightness = mean((u − l)/2)``, ``L_tight += relu(τ − input_tightness/tightness)/τ``;
  - ``c = (u + l)/2``, ``μ = mean(c)``, active ``l > 0``, inactive ``u < 0``;
    ``mean_act = mean(c·1_act)``, ``mean_inact = mean(c·1_inact)`` (means over all entries),
    ``var_act = Σ (c − μ)²·1_act``, ``var_inact = Σ (c − μ)²·1_inact``;
    ``r_m = mean_act/(−mean_inact)``, ``r_v = var_act/var_inact``, each replaced by ``min(r, 1/r)``;
    ``L_relu += (relu(τ − r_m) + relu(τ − r_v))/τ`` — a layer's term is skipped when it is NaN/Inf;
  - result ``(L_tight + L_relu) / #ReLU layers``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Bounds = tuple[torch.Tensor, torch.Tensor]


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """``Σ |W|`` over Conv2d / Linear weights (biases, BatchNorm and Normalization excluded)."""
    terms = [m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def warmup_regularizer(bounds: Sequence[Bounds], tol: float = 0.5) -> torch.Tensor:
    """Shi et al. (2021)'s warm-up regularizer (module docstring) from ``[input box, ReLU pre-activation
    bounds …]``, each ``(l, u)`` of shape (B, *). Returns a differentiable scalar (0 without ReLU layers)."""
    if len(bounds) < 1:
        raise ValueError("warmup_regularizer needs at least the input bounds")
    l0, u0 = bounds[0]
    relu_bounds = list(bounds[1:])
    if not relu_bounds:
        return torch.zeros((), dtype=l0.dtype, device=l0.device)
    input_tightness = ((u0 - l0) / 2).mean()
    loss_tight = torch.zeros((), dtype=l0.dtype, device=l0.device)
    loss_relu = torch.zeros((), dtype=l0.dtype, device=l0.device)
    for lo, up in relu_bounds:
        tightness = ((up - lo) / 2).mean()
        loss_tight = loss_tight + torch.relu(tol - input_tightness / tightness) / tol
        center = (up + lo) / 2
        mu = center.mean()
        active = (lo > 0).to(center.dtype)
        inactive = (up < 0).to(center.dtype)
        mean_act = (center * active).mean()
        mean_inact = (center * inactive).mean()
        var_act = ((center - mu) ** 2 * active).sum()
        var_inact = ((center - mu) ** 2 * inactive).sum()
        r_m = mean_act / (-mean_inact)
        r_v = var_act / var_inact
        r_m = torch.minimum(r_m, 1 / r_m)
        r_v = torch.minimum(r_v, 1 / r_v)
        term = (torch.relu(tol - r_m) + torch.relu(tol - r_v)) / tol
        if bool(torch.isfinite(term)):
            loss_relu = loss_relu + term
    return (loss_tight + loss_relu) / len(relu_bounds)


def warmup_weight(fast_reg: float, eps: float, eps_end: float, min_eps: float = 1e-6) -> float:
    """``fast_reg · (1 − max(ε, min_eps)/ε_end)``, the warm-up regularizer's weight at ε (≥ 0)."""
    if fast_reg <= 0 or eps_end <= 0:
        return 0.0
    return max(0.0, fast_reg * (1.0 - max(eps, min_eps) / eps_end))
