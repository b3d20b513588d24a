"""SABR (Müller, Eckert, Fischer & Vechev, "Certified Training: Small Boxes are All You Need", ICLR
2023); CTBench's ``SmallBoxModelWrapper`` (``--use-ibp-training --use-small-box``), paper §3.2.

Per sample, under ``torch.no_grad`` (no gradient flows through the box selection):

1. ``x_adv = PGD(x)`` inside the ε-box ``[l, u] = clamp(x ∓ ε, 0, 1)`` (cross-entropy, random start,
   ``attack_steps`` steps, ``attack_restarts`` restarts);
2. per-pixel radius ``ρ = λ·(u − l)/2`` and centre ``x' = clamp(x_adv, l + ρ, u − ρ)`` — the
   adversarial point moved just enough for the small box to fit inside the ε-box;
3. the small box ``[x' − ρ, x' + ρ]`` (intersected with ``[l, u]`` against rounding).

Robust loss: the IBP loss (:class:`~ctbench.methods.ibp.IBP`) on the small box, optionally with
ReLU shrinkage (training only). Robust-accuracy estimate: IBP-certified on the small box (as the
original's validation; not a certificate for the ε-box). The warm-up regularizer uses the small
box's IBP bounds (as in the original).

Invariants (tests): small box ⊆ ε-box; λ = 1 → the ε-box; λ = 0 → the single point ``x'`` = ``x_adv``.

Hyperparameters (``config/hparams.yaml``): ``eps_shrink`` (λ; Tables 6-10 "ε shrink ratio"),
``relu_shrink`` (CIFAR-10 2/255: 0.8), ``attack_steps``, ``attack_restarts``, ``attack_step_size``
(null → 0.2 of the half-width, the original ``adv_whitebox`` default used by SABR's search),
``train_eps``, ``w_rob``, ``l1``, ``fast_reg``.

Shapes: ``x``, ``lower``, ``upper``, the small box (b, *input); ``y`` (b,).
"""

from __future__ import annotations

import torch

from ctbench.attacks import pgd_attack
from ctbench.errors import CTBenchError
from ctbench.methods import METHODS
from ctbench.methods.ibp import IBP

#: Initial PGD step (fraction of the box half-width) of SABR's input search when ``attack_step_size``
#: is null: the original ``adv_whitebox`` default (reference §2 "SABR").
SABR_DEFAULT_STEP_SIZE = 0.2


def small_box(x_adv: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, shrink: float):
    """SABR's box of radius ``shrink·(upper − lower)/2`` around ``x_adv``, shifted inside ``[lower, upper]``.

    x_adv, lower, upper: (b, *input) with ``lower <= x_adv <= upper``; shrink λ ∈ [0, 1].
    Returns ``(small_lower, small_upper)`` (b, *input), contained in ``[lower, upper]``.
    """
    if not 0.0 <= shrink <= 1.0:
        raise CTBenchError(f"SABR's eps_shrink must lie in [0, 1], got {shrink}")
    radius = (upper - lower) * (0.5 * shrink)
    centre = torch.minimum(torch.maximum(x_adv, lower + radius), upper - radius)
    return torch.maximum(centre - radius, lower), torch.minimum(centre + radius, upper)


class SmallBoxMixin:
    """The SABR input search, shared by SABR and STAPS (needs ``self.config`` and the attack settings)."""

    def init_small_box(self) -> None:
        shrink = self.config.get("eps_shrink")
        if shrink is None:
            raise CTBenchError(f"method {self.name!r} needs eps_shrink (lambda) in its config")
        self.eps_shrink = float(shrink)
        if not 0.0 <= self.eps_shrink <= 1.0:
            raise CTBenchError(f"eps_shrink must lie in [0, 1], got {self.eps_shrink}")

    def adversarial_small_box(self, model, x, y, lower, upper):
        """(small_lower, small_upper), detached: PGD in the ε-box, then :func:`small_box`."""
        step = self.attack_step_size if self.attack_step_size is not None else SABR_DEFAULT_STEP_SIZE
        opts = {"steps": self.attack_steps, "restarts": self.attack_restarts, "step_size": step, "loss": "ce"}
        with torch.no_grad():
            x_adv = pgd_attack(model, x, y, lower, upper, **opts)
            return small_box(x_adv, lower.detach(), upper.detach(), self.eps_shrink)


@METHODS.register("sabr")
class SABR(SmallBoxMixin, IBP):
    name = "sabr"

    def __init__(self, config: dict):
        super().__init__(config)
        self.init_small_box()

    def robust_loss(self, model, x, y, eps, lower, upper):
        small_lower, small_upper = self.adversarial_small_box(model, x, y, lower, upper)
        return self.ibp_loss(model, small_lower, small_upper, y)
