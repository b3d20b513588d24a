"""The base class of every training method: what all of CTBench's methods share (paper §4.1).

A method is a small subclass that overrides **one hook**, :meth:`TrainingMethod.robust_loss`::

    @METHODS.register("ibp")
    class IBP(TrainingMethod):
        certified = True                       # IBP init by default + Shi et al. warm-up regularizer

        def robust_loss(self, model, x, y, eps, lower, upper):
            C = margin_spec(y, num_classes, dtype=lower.dtype)     # (b, K-1, K): z_y - z_i
            lb, _, bounds = ibp_bounds(model, lower, upper, C, store_intermediate=True)
            self.store_bounds(bounds)          # optional: reused by the warm-up regularizer
            return robust_ce_from_margin_bounds(lb), certified_from_margin_bounds(lb)

Hook contract — ``robust_loss(model, x, y, eps, lower, upper) -> (loss, robust_correct)``:

* ``x`` (b, *input) clean inputs, ``y`` (b,) labels, ``eps`` float > 0, ``lower``/``upper`` the input
  box ``clamp(x − ε, 0, 1)`` / ``clamp(x + ε, 0, 1)`` (b, *input). ``b`` may be a chunk of the batch
  (gradient accumulation), so the hook must only look at the samples it is given.
* ``loss``: differentiable scalar, the **mean over the b samples** of a per-sample robust loss (so that
  chunked accumulation reproduces the full-batch gradient). A method whose loss is not such a mean,
  e.g. TAPS's product of batch means, sets ``separable = False`` (class or instance attribute): under
  gradient accumulation the base then computes its robust loss **on the full batch** — chunking would
  silently train another objective (a mean of chunk products), and refusing would make the paper's
  TinyImageNet TAPS/STAPS cells (``grad_accu_batch: 32``) unrunnable; the clean pass is full-batch
  anyway, so only the memory saving of accumulation is lost, and a warning says so once.
* ``robust_correct``: (b,) bool, the method's robust-accuracy estimate per sample (IBP-certified,
  correct under PGD, ...); used for logging and for model selection.
* Training: the model is in train mode and every BatchNorm already normalizes with the **frozen
  clean-batch statistics** of the full batch (``ctbench.bounds.clean_forward_and_freeze_bn``); any
  forward pass, attack or bound computation inside the hook uses them and never updates running
  statistics. Evaluation: the model is in eval mode (population statistics), under ``torch.no_grad``
  (attacks re-enable gradients w.r.t. their input themselves).
* Available state: ``self.config`` (resolved config), ``self.ramp_active`` (True while ε ramps up —
  e.g. TAPS falls back to IBP then), ``model.training``; helpers :meth:`attack` (PGD with the
  config's strength) and :meth:`store_bounds`.

What the base does around it, per training step (:meth:`step`):

1. :meth:`pre_step` hook (default no-op; EDAC's extra optimizer step).
2. One clean forward of the **full** batch that sets the BatchNorm statistics and updates running
   statistics exactly once; ``L_nat = CE`` (mean).
3. ``lower, upper = clamp(x ∓ ε)``; for each chunk of ``grad_accu_batch`` samples (or the whole batch):
   ``robust_loss`` → weighted by ``len(chunk)/B``; plus, while ε ramps up and the method is
   ``certified``, Shi et al.'s warm-up regularizer ``fast_reg·(1 − ε/ε_end)·R(bounds)`` from
   :meth:`intermediate_bounds` (or IBP bounds the base computes at ``max(ε, min_eps_reg)``; the
   stored bounds are used only when ε ≥ ``min_eps_reg``). Under accumulation this regularizer — a
   batch statistic — is computed per chunk and weighted like the robust loss (an approximation).
   At ε = 0 the robust part is skipped (standard training, e.g. CIFAR's first epoch).
4. ``L = (1 − w_rob)·L_nat + w_rob·L_rob + L_reg`` with ``L_reg = l1·Σ|W| + warm-up``; backward (per
   chunk under accumulation; the full-batch statistics' graph is shared, so gradients equal the
   unchunked ones). The optimizer step, clipping and zeroing are the training loop's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ctbench.attacks import pgd_attack
from ctbench.bounds import clean_forward_and_freeze_bn, ibp_bounds, unfreeze_bn
from ctbench.regularizers import Bounds, l1_penalty, warmup_regularizer, warmup_weight

logger = logging.getLogger(__name__)


@dataclass
class StepOutput:
    """Loss components of one step (batch means, detached floats) and correct counts."""

    loss: float
    nat_loss: float
    rob_loss: float
    reg_loss: float
    nat_correct: int
    rob_correct: int
    n: int


def input_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ε-box around ``x`` intersected with the pixel range: ``(clamp(x − ε, 0), clamp(x + ε, max=1))``."""
    return (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)


class TrainingMethod:
    """Base of all training methods (see module docstring for the hook contract)."""

    #: Registry name (set by subclasses).
    name: ClassVar[str] = ""
    #: Certified method: Shi et al.'s warm-up regularizer applies during the ε ramp.
    certified: ClassVar[bool] = False
    #: The robust loss is a per-sample mean (gradient accumulation is exact); an instance may override it.
    separable: bool = True

    def __init__(self, config: dict):
        self.config = dict(config)
        get = self.config.get
        self.w_rob = float(get("w_rob", 1.0) if get("w_rob") is not None else 1.0)
        self.l1 = float(get("l1") or 0.0)
        self.fast_reg = float(get("fast_reg") or 0.0)
        self.min_eps_reg = float(get("min_eps_reg") or 1e-6)
        self.train_eps = float(get("train_eps") or 0.0)
        self.attack_steps = int(get("attack_steps") if get("attack_steps") is not None else 10)
        self.attack_restarts = int(get("attack_restarts") or 1)
        self.attack_step_size = get("attack_step_size")
        self.ramp_active = False
        self._bounds: list[Bounds] | None = None
        self._warned_full_batch = False

    # ------------------------------------------------------------------ hooks
    def robust_loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        lower: torch.Tensor,
        upper: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """THE hook: ``(mean robust loss (scalar), robust_correct (b,) bool)``; see the module docstring."""
        raise NotImplementedError(f"{type(self).__name__} must implement robust_loss")

    def intermediate_bounds(self) -> list[Bounds] | None:
        """IBP bounds of the last ``robust_loss`` call for the warm-up regularizer: ``[input box after
        Normalization, pre-activation (l, u) of every ReLU …]`` (``ibp_bounds(..., store_intermediate=True)``
        format), or None (the base then computes IBP bounds of the ε-box itself)."""
        return self._bounds

    def pre_step(self, model, x, y, eps, lower, upper, optimizer) -> None:
        """Optional hook before the step's clean forward (EDAC's extra optimizer step). Must leave the
        model unfrozen and its running statistics unchanged."""

    # ------------------------------------------------------------------ helpers for subclasses
    def store_bounds(self, bounds: list[Bounds] | None) -> None:
        """Keep the per-layer IBP bounds of this ``robust_loss`` call for :meth:`intermediate_bounds`."""
        self._bounds = bounds

    def attack(self, model, x, y, lower, upper, *, steps=None, loss="ce") -> torch.Tensor:
        """PGD with the config's strength (``attack_steps``, ``attack_restarts``, ``attack_step_size``)."""
        return pgd_attack(
            model,
            x,
            y,
            lower,
            upper,
            steps=self.attack_steps if steps is None else steps,
            restarts=self.attack_restarts,
            step_size=self.attack_step_size,
            loss=loss,
        )

    # ------------------------------------------------------------------ the shared step
    def step(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        warmup: bool = False,
        accumulation_batch: int | None = None,
    ) -> StepOutput:
        """Forward + backward of one training step; gradients are *added* to ``p.grad``.

        ``warmup``: ε is still ramping (enables the warm-up regularizer for certified methods).
        ``accumulation_batch``: chunk size for gradient accumulation with full-batch BN statistics.
        The caller zeroes gradients before and clips / steps the optimizer after.
        """
        model.train()
        self.ramp_active = warmup
        batch = x.shape[0]
        lower, upper = input_box(x, eps)
        self.pre_step(model, x, y, eps, lower, upper, optimizer)
        reg_w = (
            warmup_weight(self.fast_reg, eps, self.train_eps, self.min_eps_reg)
            if warmup and self.certified
            else 0.0
        )
        try:
            logits = clean_forward_and_freeze_bn(model, x)
            nat_loss = F.cross_entropy(logits, y)
            nat_correct = int((logits.argmax(1) == y).sum())
            l1_term = self.l1 * l1_penalty(model) if self.l1 > 0 else logits.new_zeros(())
            if eps <= 0 and reg_w == 0:
                total = nat_loss + l1_term
                total.backward()
                nat = float(nat_loss.detach())
                return StepOutput(
                    float(total.detach()), nat, nat, float(l1_term.detach()), nat_correct, nat_correct, batch
                )
            w_rob = self.w_rob if eps > 0 else 0.0
            chunk = accumulation_batch if accumulation_batch and accumulation_batch < batch else batch
            if chunk < batch and not self.separable:
                if not self._warned_full_batch:
                    logger.warning("%s: the robust loss is not a per-sample mean; computed on the full batch of "
                                   "%d, not in chunks of grad_accu_batch=%d (methods/base.py)", self.name, batch, chunk)
                    self._warned_full_batch = True
                chunk = batch
            rob_sum, reg_sum, rob_correct = 0.0, 0.0, 0
            chunk_losses = []
            for start in range(0, batch, chunk):
                sl = slice(start, start + chunk)
                frac = (min(start + chunk, batch) - start) / batch
                rob, reg, correct = self._chunk_loss(model, x[sl], y[sl], eps, lower[sl], upper[sl], reg_w)
                rob_correct += int(correct.sum()) if correct is not None else 0
                rob_sum += float(rob.detach()) * frac
                reg_sum += float(reg.detach()) * frac
                part = frac * (w_rob * rob + reg)
                if chunk < batch:
                    if part.requires_grad:
                        part.backward(retain_graph=True)
                else:
                    chunk_losses.append(part)
            nat, l1_value = float(nat_loss.detach()), float(l1_term.detach())
            if eps <= 0:
                rob_sum, rob_correct = nat, nat_correct
            rest = (1 - w_rob) * nat_loss + l1_term
            (rest + sum(chunk_losses)).backward()
            total = (1 - w_rob) * nat + w_rob * rob_sum + reg_sum + l1_value
            return StepOutput(total, nat, rob_sum, reg_sum + l1_value, nat_correct, rob_correct, batch)
        finally:
            self._bounds = None
            unfreeze_bn(model)

    def _chunk_loss(self, model, x, y, eps, lower, upper, reg_w):
        """(robust loss or 0, weighted warm-up regularizer or 0, robust_correct or None) of one chunk."""
        self._bounds = None
        zero = x.new_zeros(())
        rob, correct = zero, None
        if eps > 0:
            rob, correct = self.robust_loss(model, x, y, eps, lower, upper)
        reg = zero
        if reg_w > 0:
            bounds = self.intermediate_bounds() if eps >= self.min_eps_reg else None
            if bounds is None:
                reg_lower, reg_upper = input_box(x, max(eps, self.min_eps_reg))
                bounds = ibp_bounds(model, reg_lower, reg_upper, store_intermediate=True)[2]
            reg = reg_w * warmup_regularizer(bounds)
        self._bounds = None
        return rob, reg, correct

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
        """Sums over the batch of ``nat_loss``, ``rob_loss``, ``nat_correct``, ``rob_correct`` with the
        model in its current mode (the training loop puts it in eval mode: population statistics)."""
        self._bounds = None
        logits = model(x)
        nat_loss = F.cross_entropy(logits, y, reduction="sum")
        nat_correct = (logits.argmax(1) == y).sum()
        if eps > 0:
            lower, upper = input_box(x, eps)
            rob, correct = self.robust_loss(model, x, y, eps, lower, upper)
            rob_loss, rob_correct = rob * x.shape[0], correct.sum()
        else:
            rob_loss, rob_correct = nat_loss, nat_correct
        self._bounds = None
        return {
            "nat_loss": float(nat_loss),
            "rob_loss": float(rob_loss),
            "nat_correct": int(nat_correct),
            "rob_correct": int(rob_correct),
            "n": int(x.shape[0]),
        }
