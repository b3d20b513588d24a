"""PGD (Madry et al., ICLR 2018) as in CTBench's ``attacks.adv_whitebox`` (reference §2 "PGD").

For each of ``restarts`` runs: random start ``x + U(−½, ½)·(ub − lb)`` clamped to the box, then
``steps + 1`` evaluations; after each evaluation the per-sample loss is compared with the best so far
(the point with the highest loss over all iterations and restarts is kept), then
``x ← clamp(x + lr_t · (ub − lb)/2 · sign(∇_x loss), lb, ub)``. ``lr_0 = step_size`` (default
``max(0.25, 2/steps)``), decayed inside the attack: ≥ 50 steps ×0.1 at 50 %, 80 %, 90 %; ≥ 20 steps
×0.1 at 70 %; otherwise ×0.2 every 10 steps.

Losses: ``"ce"`` (cross-entropy, the original ``"pgd"``) and ``"margin"`` (``max_{i≠y} z_i − z_y``, or
``z_t − z_y`` towards a given target class ``t``: Carlini & Wagner 2017's margin, which keeps its gradient
where cross-entropy saturates).

The attack uses the model's current mode: in a training step, BatchNorm normalizes with the frozen
clean-batch statistics (``ctbench.bounds.clean_forward_and_freeze_bn``), never updating running
statistics; in eval mode, running statistics. Gradients are taken w.r.t. the input only
(``torch.autograd.grad``): parameter ``.grad`` is never touched, and parameters' ``requires_grad``
is switched off during the attack (saves work) and restored afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ctbench.errors import CTBenchError

ATTACK_LOSSES = ("ce", "margin")


def default_step_size(steps: int) -> float:
    """The original default initial step size ``max(0.25, 2 / steps)`` (fraction of the half-width)."""
    return max(0.25, 2.0 / max(steps, 1))


def step_size_multiplier(iteration: int, steps: int) -> float:
    """Factor on the initial step size at ``iteration`` (0-based) of a ``steps``-step attack."""
    if steps >= 50:
        milestones, gamma = [int(steps * f) for f in (0.5, 0.8, 0.9)], 0.1
    elif steps >= 20:
        milestones, gamma = [int(steps * 0.7)], 0.1
    else:
        milestones, gamma = list(range(10, steps + 1, 10)), 0.2
    return gamma ** sum(iteration >= m for m in milestones)


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: str, target: torch.Tensor | None = None):
    """(B, K), (B,) → (B,): the loss PGD maximizes. ``target`` (B,) int64 (margin loss only): ``z_t − z_y``."""
    if loss == "ce":
        if target is not None:
            raise CTBenchError("a targeted attack needs the margin loss")
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "margin":
        true = logits.gather(1, y[:, None]).squeeze(1)
        if target is not None:
            return logits.gather(1, target[:, None]).squeeze(1) - true
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
        return other - true
    raise CTBenchError(f"unknown attack loss {loss!r}; known: {', '.join(ATTACK_LOSSES)}")


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    steps: int,
    restarts: int = 1,
    step_size: float | None = None,
    loss: str = "ce",
    target: torch.Tensor | None = None,
    done=None,
    check_every: int = 10,
) -> torch.Tensor:
    """Adversarial examples within the box ``[lower, upper]``.

    Args:
        model: classifier, (B, *input) → (B, K); used in its current mode (see module docstring).
        x: clean inputs (B, *input); y: labels (B,) int64.
        lower, upper: the perturbation box (B, *input), ``lower <= upper`` (e.g. ``clamp(x ∓ ε, 0, 1)``).
        steps: gradient steps per restart (0: random point only); restarts: ≥ 1 random starts.
        step_size: initial step as a fraction of the half-width ``(ub − lb)/2``; None → max(0.25, 2/steps).
        loss: ``"ce"`` or ``"margin"``; target: (B,) int64 class to push each sample towards (margin only).
        done: ``done(points (n, *input), idx (n,) int64) -> (n,) bool``: whether each sample's best point so
            far already breaks it (e.g. a confirmed counterexample). Checked every ``check_every`` steps and
            at the end of a restart; a sample it confirms is attacked no further (its point is kept), so the
            attack's cost follows the samples that are still robust. None: every sample runs every step.

    Returns:
        ``x_adv`` (B, *input), detached, ``lower <= x_adv <= upper``: per sample the evaluated point with
        the highest loss over all iterations and restarts (or, with ``done``, the first point it confirmed).
    """
    if loss not in ATTACK_LOSSES:
        raise CTBenchError(f"unknown attack loss {loss!r}; known: {', '.join(ATTACK_LOSSES)}")
    if steps < 0 or restarts < 1 or check_every < 1:
        raise CTBenchError(f"PGD needs steps >= 0, restarts >= 1 and check_every >= 1, got steps={steps}, "
                           f"restarts={restarts}, check_every={check_every}")
    lr0 = default_step_size(steps) if step_size is None else float(step_size)
    lower, upper = lower.detach(), upper.detach()
    best_x = x.detach().clone().clamp_(min=lower).clamp_(max=upper)
    best_loss = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)  # the samples still attacked
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for _ in range(restarts):
            if active.numel() == 0:
                break
            active = _restart(model, x, y, lower, upper, target, loss, steps, lr0, best_x, best_loss, active,
                              done, check_every)
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return best_x


#: the loss above which a point may misclassify: margin > 0; cross-entropy > log 2 (the true class's
#: probability below one half is necessary for another class to lead)
_MAY_BREAK = {"margin": 0.0, "ce": math.log(2.0)}


def _not_done(done, best_x, best_loss, idx, loss) -> torch.Tensor:
    """(n,) bool: the samples ``idx`` that ``done`` does not confirm; only those whose best loss says they may
    be broken are checked (so the checks cost nothing while no sample is near breaking)."""
    keep = torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)
    may = (best_loss[idx] > _MAY_BREAK[loss]).nonzero().flatten()
    if may.numel():
        keep[may] = ~done(best_x[idx[may]], idx[may]).to(idx.device)
    return keep


def _restart(model, x, y, lower, upper, target, loss, steps, lr0, best_x, best_loss, idx, done, check_every):
    """One random start and ``steps`` sign steps on the samples ``idx``, updating ``best_x``/``best_loss`` in
    place; returns the samples ``done`` has not confirmed (all of ``idx`` without ``done``)."""
    lo, hi = lower[idx], upper[idx]
    yi, ti = y[idx], (target[idx] if target is not None else None)
    x_adv = x[idx].detach() + (torch.rand_like(x[idx]) - 0.5) * (hi - lo)
    x_adv = torch.max(torch.min(x_adv, hi), lo)
    for it in range(steps + 1):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            sample_loss = per_sample_loss(model(x_adv), yi, loss, ti)
            objective = sample_loss.sum()
        improved = sample_loss.detach() > best_loss[idx]
        best_loss[idx[improved]] = sample_loss.detach()[improved]
        best_x[idx[improved]] = x_adv.detach()[improved]
        grad = torch.autograd.grad(objective, x_adv)[0] if it < steps else None
        x_adv = x_adv.detach()
        if done is not None and (it == steps or (it > 0 and it % check_every == 0)):
            keep = _not_done(done, best_x, best_loss, idx, loss)
            if not keep.all():
                idx, x_adv, lo, hi, yi = idx[keep], x_adv[keep], lo[keep], hi[keep], yi[keep]
                ti = ti[keep] if ti is not None else None
                grad = grad[keep] if grad is not None else None
                if idx.numel() == 0:
                    break
        if it == steps:
            break
        lr = lr0 * step_size_multiplier(it, steps)
        with torch.no_grad():
            x_adv = x_adv + lr * ((hi - lo) / 2) * grad.sign()
            x_adv = torch.max(torch.min(x_adv, hi), lo)
    return idx
