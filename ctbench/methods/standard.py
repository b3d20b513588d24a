"""Standard training: cross-entropy on clean inputs only.

Paper: CTBench (Mao et al., ICML 2025) Table 1 "Std. Nat." column; original ``BasicModelWrapper`` with
``--train-eps 0 --start/end-value-robust-weight 0``.

Loss: ``L = L_nat + l1·Σ|W|`` (config ``w_rob = 0``, ``train_eps = 0``, so the base skips the robust
part). The robust hook exists for completeness: it returns the clean cross-entropy and clean
correctness, so "robust accuracy" at ε > 0 is simply natural accuracy (no attack).

Hyperparameters: ``l1`` (CIFAR-10 2/255: 5e-5, original script); init ``kaiming_uniform``.
"""

from __future__ import annotations

import torch.nn.functional as F

from ctbench.methods import METHODS
from ctbench.methods.base import TrainingMethod


@METHODS.register("standard")
class Standard(TrainingMethod):
    name = "standard"

    def robust_loss(self, model, x, y, eps, lower, upper):
        logits = model(x)
        return F.cross_entropy(logits, y), logits.argmax(1) == y
