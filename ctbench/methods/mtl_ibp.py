"""MTL-IBP (De Palma, Bunel, Dvijotham, Kumar, Stanforth & Lomuscio, "Expressive Losses for Verified
Robustness via Convex Combinations", ICLR 2024); CTBench's ``MTLIBPModelWrapper``, paper §3.2.

Robust loss: ``L_rob = α·L_IBP + (1 − α)·L_PGD`` (α = IBP coefficient), per sample, averaged:

* ``L_IBP`` = CE of the IBP pseudo-logits ``[0, −lb(z_y − z_i)]`` over the ε-box ``[l, u]``
  (:class:`~ctbench.methods.ibp.IBP`, whose layer bounds also feed the warm-up regularizer);
* ``L_PGD = CE(f(x_adv), y)`` with ``x_adv`` = PGD (cross-entropy, ``attack_steps`` × ``attack_restarts``,
  step ``attack_step_size`` or ``max(0.25, 2/steps)``) inside the **attack box**
  ``clamp(x ∓ s·ε, 0, 1)``, s = attack range scale (CIFAR-10 2/255: 2).

Both parts are always computed (also for α ∈ {0, 1}; the IBP pass draws no random numbers, so the PGD
part is identical to :class:`~ctbench.methods.pgd.PGD` under the same seed). Robust-accuracy estimate:
accuracy at ``x_adv`` (as the original; MTL-IBP is selected by SWA / last epoch, ``model_selection:
last``). The combination is :meth:`MTLIBP.combine` (the original's EXP-IBP and CC-IBP subclasses change only
that; they are not part of the benchmark and not implemented here).

Hyperparameters (``config/hparams.yaml``): ``ibp_coef`` (α; Tables 6-10 "IBP coefficient"),
``attack_eps_scale`` (s), ``attack_steps`` (1 except CIFAR-10 2/255), ``attack_restarts``,
``attack_step_size``, ``relu_shrink`` (IBP part, training only), ``train_eps``, ``w_rob``, ``l1``,
``fast_reg``, ``swa_start``.

Shapes: ``x``, ``lower``, ``upper``, ``x_adv`` (b, *input); ``y`` (b,); IBP margin bounds (b, K−1);
adversarial logits (b, K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctbench.errors import CTBenchError
from ctbench.methods import METHODS
from ctbench.methods.base import input_box
from ctbench.methods.ibp import IBP


@METHODS.register("mtl_ibp")
class MTLIBP(IBP):
    name = "mtl_ibp"

    def __init__(self, config: dict):
        super().__init__(config)
        coef = self.config.get("ibp_coef")
        if coef is None:
            raise CTBenchError(f"method {self.name!r} needs ibp_coef (alpha) in its config")
        self.ibp_coef = float(coef)
        if not 0.0 <= self.ibp_coef <= 1.0:
            raise CTBenchError(f"ibp_coef must lie in [0, 1], got {self.ibp_coef}")
        scale = self.config.get("attack_eps_scale")
        self.attack_eps_scale = 1.0 if scale is None else float(scale)

    def adversarial_logits(self, model, x, y, eps):
        """Logits (b, K) at the PGD point of the attack box ``clamp(x ∓ s·ε, 0, 1)``."""
        att_lower, att_upper = input_box(x, eps * self.attack_eps_scale)
        x_adv = self.attack(model, x, y, att_lower, att_upper)
        return model(x_adv)

    def combine(self, margin_lb: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample robust loss (b,) from the IBP margin bounds (b, K−1) and adversarial logits (b, K)."""
        ibp = F.cross_entropy(F.pad(-margin_lb, (1, 0)), torch.zeros_like(y), reduction="none")
        adv = F.cross_entropy(adv_logits, y, reduction="none")
        return self.ibp_coef * ibp + (1.0 - self.ibp_coef) * adv

    def robust_loss(self, model, x, y, eps, lower, upper):
        margin_lb = self.ibp_margin_bounds(model, lower, upper, y)
        adv_logits = self.adversarial_logits(model, x, y, eps)
        loss = self.combine(margin_lb, adv_logits, y).mean()
        return loss, adv_logits.argmax(1) == y
