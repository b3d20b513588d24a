"""CC-IBP (De Palma et al., "Expressive Losses for Verified Robustness via Convex Combinations", ICLR
2024); CTBench's ``MTLIBPModelWrapper`` subclass. Not part of the paper's benchmark tables.

**Not registered yet** (``METHODS``): ``config/hparams.yaml`` has no entries for it, and every
registered method must resolve in every setting. To enable: decorate the class with
``@METHODS.register("cc_ibp")`` and add hyperparameters (e.g. MTL-IBP's) to ``config/hparams.yaml``.

Robust loss per sample: the convex combination is taken on the **margins** before the loss:
``m̃_i = α·lb_IBP(z_y − z_i) + (1 − α)·(z_y(x_adv) − z_i(x_adv))`` for i ≠ y, then
``L_rob = CE([0, −m̃], 0)`` (original: ``CE(α·IBP_bound + (1 − α)·(pred_adv − pred_adv[y]), 0)``);
averaged over the chunk. α = 1 is IBP, α = 0 is PGD training (the same CE, written on the
pseudo-logits). IBP bound over the ε-box, PGD in the attack box ``clamp(x ∓ s·ε)``, robust accuracy =
accuracy at ``x_adv``: as :class:`~ctbench.methods.mtl_ibp.MTLIBP`.

Hyperparameters: as MTL-IBP (``ibp_coef`` = α, ``attack_eps_scale``, ``attack_steps``, ...).
Shapes: IBP margin bounds (b, K−1), adversarial logits (b, K), loss per sample (b,).
"""

from __future__ import annotations

from ctbench.bounds import margin_spec, robust_ce_from_margin_bounds
from ctbench.methods.mtl_ibp import MTLIBP


class CCIBP(MTLIBP):
    name = "cc_ibp"

    def combine(self, margin_lb, adv_logits, y):
        C = margin_spec(y, adv_logits.shape[1], dtype=adv_logits.dtype)
        adv_margins = (C * adv_logits.unsqueeze(1)).sum(-1)  # (b, K-1): z_y - z_i at x_adv
        mixed = self.ibp_coef * margin_lb + (1.0 - self.ibp_coef) * adv_margins
        return robust_ce_from_margin_bounds(mixed, reduction="none")
