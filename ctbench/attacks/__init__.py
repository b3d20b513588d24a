"""Adversarial attacks used in training and model selection.

* :func:`pgd_attack` — PGD (Madry et al. 2018) as CTBench's ``attacks.adv_whitebox``: random start,
  per-sample best point over iterations and restarts, sign steps scaled by the box half-width,
  internal step-size decay, losses ``"ce"`` and ``"margin"``.
"""

from ctbench.attacks.pgd import ATTACK_LOSSES, default_step_size, pgd_attack, step_size_multiplier

__all__ = ["ATTACK_LOSSES", "default_step_size", "pgd_attack", "step_size_multiplier"]
