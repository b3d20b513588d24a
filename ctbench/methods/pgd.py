"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018), as CTBench's ``PGDModelWrapper``.

Robust loss: ``L_rob = CE(f(x_adv), y)`` with ``x_adv = PGD(x)`` inside ``clamp(x ± ε, 0, 1)``
(:func:`ctbench.attacks.pgd_attack`, cross-entropy objective, random start, best point over
iterations and restarts). The attack and ``f(x_adv)`` use the frozen clean-batch BatchNorm statistics
(paper §4.1). Robust-accuracy estimate: accuracy on ``x_adv``.

Hyperparameters (Tables 6-10, App. C.4): ``attack_steps`` (10 / 5 / 8 / 10 / 1 per setting),
``attack_restarts`` (3), ``attack_step_size`` (default ``max(0.25, 2/steps)`` of the half-width),
``w_rob`` (1.0), ``l1``, ``train_eps``; Kaiming-uniform init; no warm-up regularizer.
"""

from __future__ import annotations

import torch.nn.functional as F

from ctbench.methods import METHODS
from ctbench.methods.base import TrainingMethod


@METHODS.register("pgd")
class PGD(TrainingMethod):
    name = "pgd"

    def robust_loss(self, model, x, y, eps, lower, upper):
        x_adv = self.attack(model, x, y, lower, upper)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits.argmax(1) == y
