"""EDAC: PGD adversarial training plus an extra-gradient step that lowers the certainty of the model at
adversarial points (Zhang, Wang, Tang & Liu et al., "Improving Adversarial Training via Extra-gradient
Based Adversarial Certainty", 2023); CTBench's ``_EDACMixin`` (``--use-pgd-training --use-EDAC-step``).

Per training step, before the ordinary PGD step (reference §2 "EDAC"):

1. clean-batch BN statistics from ``x``; ``x_adv = PGD(x)``;
2. ``L_ac = edac_step_size · mean_i std_k f(x_adv)_{i,k}`` (standard deviation of the logits);
3. one step of the **same** optimizer on ``L_ac`` (``zero_grad``, ``backward``, ``step``).

Then the base's ordinary step runs (new clean forward with the updated weights, PGD loss as
:class:`~ctbench.methods.pgd.PGD`). Running BN statistics are restored after step 3 so that they are
updated exactly once per training step, by the main clean forward. With gradient accumulation the
EDAC step uses the full batch.

Hyperparameters: ``edac_step_size`` (0.3; TinyImageNet 0.1, original scripts), plus PGD's.
"""

from __future__ import annotations

import torch

from ctbench.bounds import clean_forward_and_freeze_bn, unfreeze_bn
from ctbench.methods import METHODS
from ctbench.methods.pgd import PGD


def _bn_buffers(model):
    return {k: v.detach().clone() for k, v in model.named_buffers() if "running_" in k or "num_batches" in k}


@METHODS.register("edac")
class EDAC(PGD):
    name = "edac"

    def __init__(self, config):
        super().__init__(config)
        self.edac_step_size = float(self.config.get("edac_step_size") or 0.0)

    def pre_step(self, model, x, y, eps, lower, upper, optimizer):
        if eps <= 0 or optimizer is None or self.edac_step_size <= 0:
            return
        saved = _bn_buffers(model)
        try:
            clean_forward_and_freeze_bn(model, x)
            x_adv = self.attack(model, x, y, lower, upper)
            certainty = model(x_adv).std(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            (self.edac_step_size * certainty).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finally:
            unfreeze_bn(model)
            with torch.no_grad():
                buffers = dict(model.named_buffers())
                for k, v in saved.items():
                    buffers[k].copy_(v)
