"""CROWN-IBP training with loss fusion (Zhang et al., "Towards Stable and Efficient Training of
Verifiably Robust Neural Networks", ICLR 2020; loss fusion: Xu et al., "Automatic Perturbation
Analysis for Scalable Certified Robustness and Beyond", NeurIPS 2020). CTBench's
``DeepPolyModelWrapper(use_dp_box=True, loss_fusion=True)``; paper §3.2 ("we refer to this variant as
CROWN-IBP").

Robust loss in training (:func:`ctbench.bounds.spec.loss_fusion_terms`, overflow-free): IBP pre-activation bounds for
every ReLU, IBP bounds ``[l_j, u_j]`` of the margins, the chord of ``exp(−m)`` gives one linear
specification row ``C_lf`` whose CROWN lower bound ``lb`` yields ``L_rob = log(offset − lb)`` ≥ the
worst-case cross-entropy — one back-substitution instead of K−1. As in the original code the
back-substitution keeps the tightest of its "cut points" (the partial expression concretized on every
layer's IBP box; ``backward_deeppoly(use_intermediate=True)``), and there is no IBP/CROWN-IBP mixing
(no β schedule).

Robust-accuracy estimate: the fused bound certifies nothing by itself (the original reports 0 during
fused training). Here: in **training** the IBP-certified flag of the IBP margin bounds that the
fused loss computes anyway (its IBP layer bounds also feed the warm-up regularizer: no extra pass);
in **evaluation** (model selection) the non-fused CROWN-IBP margin bounds with cut points (original
``deeppoly_box`` at test time; the last cut is the IBP bound of the margins, so they are never looser
than IBP): certified iff ``lb > 0`` and the reported loss is ``CE([0, −lb])`` of that bound.

Hyperparameters (``config/hparams.yaml``): ``train_eps``, ``w_rob``, ``l1``, ``fast_reg``,
``grad_accu_batch`` (TinyImageNet 64). ``relu_shrink`` is not supported (not used by the paper).

Shapes: ``x``, ``lower``, ``upper`` (b, *input); ``y`` (b,); margin bounds (b, K−1).
"""

from __future__ import annotations

from ctbench.bounds import (
    certified_from_margin_bounds,
    compute_bounds,
    margin_spec,
    robust_ce_from_margin_bounds,
)
from ctbench.bounds.spec import loss_fusion_terms
from ctbench.methods import METHODS
from ctbench.methods.base import TrainingMethod
from ctbench.methods.ibp import num_classes


@METHODS.register("crown_ibp")
class CrownIBP(TrainingMethod):
    name = "crown_ibp"
    certified = True

    def robust_loss(self, model, x, y, eps, lower, upper):
        if not model.training:
            return self.eval_loss(model, lower, upper, y)
        loss, lb_ibp, bounds = loss_fusion_terms(model, lower, upper, y)
        self.store_bounds(bounds)
        return loss.mean(), certified_from_margin_bounds(lb_ibp.detach())

    @staticmethod
    def eval_loss(model, lower, upper, y):
        """Non-fused CROWN-IBP margin bounds with cut points: (mean robust CE, certified (b,) bool)."""
        C = margin_spec(y, num_classes(model), dtype=lower.dtype)
        lb, _ = compute_bounds(model, lower, upper, "CROWN-IBP", C, bound_upper=False, cut_points=True)
        return robust_ce_from_margin_bounds(lb), certified_from_margin_bounds(lb)
