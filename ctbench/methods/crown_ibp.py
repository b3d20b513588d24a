"""CROWN-IBP training with loss fusion (Zhang et al., "Towards Stable and Efficient Training of
Verifiably Robust Neural Networks", ICLR 2020; loss fusion: Xu et al., "Automatic Perturbation
Analysis for Scalable Certified Robustness and Beyond", NeurIPS 2020). CTBench's
``DeepPolyModelWrapper(use_dp_box=True, loss_fusion=True)``; paper §3.2 ("we refer to this variant as
CROWN-IBP").

Robust loss in training (:func:`stable_loss_fusion`, the value of
:func:`ctbench.bounds.loss_fusion_crown_ibp` computed without overflow): IBP pre-activation bounds for
every ReLU, IBP bounds ``[l_j, u_j]`` of the margins, the chord of ``exp(−m)`` gives one linear
specification row ``C_lf`` whose CROWN lower bound ``lb`` yields ``L_rob = log(offset − lb)`` ≥ the
worst-case cross-entropy — one back-substitution instead of K−1. No IBP/CROWN-IBP mixing (no β
schedule), as in the original code.

Robust-accuracy estimate: the fused bound certifies nothing by itself (the original reports 0 during
fused training). Here: in **training** the IBP-certified flag of the IBP margin bounds that the
fused loss computes anyway (its IBP layer bounds also feed the warm-up regularizer: no extra pass);
in **evaluation** (model selection) the non-fused CROWN-IBP margin bounds (original
``deeppoly_box`` at test time), intersected with the IBP ones (both sound; the original keeps the
tighter of the two through its "cut points"): certified iff ``max(lb_CROWN-IBP, lb_IBP) > 0`` and the
reported loss is ``CE([0, −lb])`` of that bound.

Hyperparameters (``config/hparams.yaml``): ``train_eps``, ``w_rob``, ``l1``, ``fast_reg``,
``grad_accu_batch`` (TinyImageNet 64). ``relu_shrink`` is not supported (not used by the paper).

Shapes: ``x``, ``lower``, ``upper`` (b, *input); ``y`` (b,); margin bounds (b, K−1).
"""

from __future__ import annotations

import torch

from ctbench.bounds import (
    certified_from_margin_bounds,
    compute_bounds,
    ibp_bounds,
    margin_spec,
    robust_ce_from_margin_bounds,
)
from ctbench.bounds.ibp import ibp_forward
from ctbench.bounds.layers import check_box, parse_model
from ctbench.bounds.linear import backsub_lower
from ctbench.methods import METHODS
from ctbench.methods.base import TrainingMethod
from ctbench.methods.ibp import num_classes


def stable_loss_fusion(model, lower, upper, y):
    """Loss-fusion CROWN-IBP, per sample (b,), plus the IBP margin bounds (b, K−1) and the IBP layer
    bounds of the same pass (warm-up regularizer format).

    Same value as :func:`ctbench.bounds.loss_fusion_crown_ibp` (mathematically; tested), but computed
    with the exponentials rescaled by ``e^{−M}``, ``M = max(0, max_j −l_j)`` (a constant): the chord
    slopes, the offset and — the CROWN lower bound being positively homogeneous in the specification
    row — the back-substituted bound all scale by ``e^{−M}``, so ``log(offset − lb) = M + log(õ − lb̃)``
    without overflowing ``e^{−l_j}`` when the IBP margin bounds are below about −88 (float32), which
    happens at initialisation with BatchNorm already at ε ≈ 0.02 on MNIST.
    """
    check_box(lower, upper)
    layers = parse_model(model)
    c_in, r_in = (upper + lower) * 0.5, (upper - lower) * 0.5
    C = margin_spec(y, num_classes(model), dtype=lower.dtype)
    c, r, relu_bounds, input_bounds = ibp_forward(layers, c_in, r_in, C, store=True)
    l, u = c - r, c + r  # (b, K-1) IBP bounds of the margins
    M = (-l).amax(1, keepdim=True).clamp(min=0).detach()  # (b, 1)
    el, eu = torch.exp(-l - M), torch.exp(-u - M)
    slope = (eu - el) / (u - l + 1e-10)  # original chord slopes times e^{-M}
    offset = torch.exp(-M.squeeze(1)) + (el - slope * l).sum(1)
    C_lf = -(slope.unsqueeze(-1) * C).sum(1, keepdim=True)  # (b, 1, K)
    lb = backsub_lower(layers, len(layers), C_lf, relu_bounds, c_in, r_in).squeeze(1)
    floor = (1e-5 * torch.exp(-M.squeeze(1))).clamp(min=torch.finfo(lower.dtype).tiny)
    loss = M.squeeze(1) + torch.log(torch.maximum(offset - lb, floor))
    bounds = [input_bounds if input_bounds is not None else (lower, upper)]
    bounds += [relu_bounds[i] for i in sorted(relu_bounds)]
    return loss, l, bounds


@METHODS.register("crown_ibp")
class CrownIBP(TrainingMethod):
    name = "crown_ibp"
    certified = True

    def robust_loss(self, model, x, y, eps, lower, upper):
        if not model.training:
            return self.eval_loss(model, lower, upper, y)
        loss, lb_ibp, bounds = stable_loss_fusion(model, lower, upper, y)
        self.store_bounds(bounds)
        return loss.mean(), certified_from_margin_bounds(lb_ibp.detach())

    @staticmethod
    def eval_loss(model, lower, upper, y):
        """Non-fused CROWN-IBP (∩ IBP) margin bounds: (mean robust CE, certified (b,) bool)."""
        C = margin_spec(y, num_classes(model), dtype=lower.dtype)
        lb, _ = compute_bounds(model, lower, upper, "CROWN-IBP", C, bound_upper=False)
        lb_ibp, _ = ibp_bounds(model, lower, upper, C)
        lb = torch.maximum(lb, lb_ibp)
        return robust_ce_from_margin_bounds(lb), certified_from_margin_bounds(lb)
