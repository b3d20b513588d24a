"""EXP-IBP (De Palma et al., "Expressive Losses for Verified Robustness via Convex Combinations", ICLR
2024); CTBench's ``MTLIBPModelWrapper`` subclass. Not part of the paper's benchmark tables.

**Not registered yet** (``METHODS``): ``config/hparams.yaml`` has no entries for it, and every
registered method must resolve in every setting. To enable: decorate the class with
``@METHODS.register("exp_ibp")`` and add hyperparameters (e.g. MTL-IBP's) to ``config/hparams.yaml``.

Robust loss per sample: ``L_rob = L_IBP^α · L_PGD^(1 − α)`` (geometric instead of arithmetic
interpolation), computed as ``exp(α·log L_IBP + (1 − α)·log L_PGD)`` with both losses clamped at
1e-12 against ``log 0``; averaged over the chunk. Everything else — the IBP bound over the ε-box,
PGD in the attack box ``clamp(x ∓ s·ε)``, robust accuracy = accuracy at ``x_adv`` — is
:class:`~ctbench.methods.mtl_ibp.MTLIBP`'s.

Hyperparameters: as MTL-IBP (``ibp_coef`` = α, ``attack_eps_scale``, ``attack_steps``, ...).
Shapes: IBP margin bounds (b, K−1), adversarial logits (b, K), loss per sample (b,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctbench.methods.mtl_ibp import MTLIBP


class ExpIBP(MTLIBP):
    name = "exp_ibp"

    def combine(self, margin_lb, adv_logits, y):
        ibp = F.cross_entropy(F.pad(-margin_lb, (1, 0)), torch.zeros_like(y), reduction="none")
        adv = F.cross_entropy(adv_logits, y, reduction="none")
        a = self.ibp_coef
        return torch.exp(a * ibp.clamp(min=1e-12).log() + (1.0 - a) * adv.clamp(min=1e-12).log())
