"""IBP training (Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training
Verifiably Robust Models", 2018) with Shi et al.'s improvements ("Fast Certified Robust Training with
Short Warmup", NeurIPS 2021): IBP initialization and the warm-up regularizer (both handled by the
base class because ``certified = True``). CTBench's ``BoxModelWrapper``; paper §3.2.

Robust loss (per sample, averaged over the chunk): the margins ``m_i = z_y − z_i`` (i ≠ y) are bounded
from below by IBP with the margin specification folded into the last layer
(``ibp_bounds(model, l, u, margin_spec(y, K))`` → ``lb`` (b, K−1)); the pseudo-logits
``[0, −lb_i]`` with label 0 give ``L_rob = CE([0, −lb], 0)``, an upper bound of the worst-case
cross-entropy over the box. Robust-accuracy estimate: IBP-certified (``lb > 0`` for all i), sound.

The per-layer IBP bounds of the same pass are kept (:meth:`store_bounds`) for the warm-up regularizer.

Hyperparameters (config keys, ``config/hparams.yaml``; Tables 6-10): ``train_eps``, ``w_rob``,
``l1``, ``fast_reg``; optional ``relu_shrink`` (ReLU shrink ratio s: upper bounds of unstable neurons
multiplied by s before the ReLU; SABR's device, accepted by every IBP-based method as in the original
``--relu-shrinkage``). Deviation from the original: the shrinkage is applied in **training only**;
evaluation (model selection) uses ordinary, sound IBP, so the reported robust accuracy stays a
certified accuracy.

Shapes: ``x``, ``lower``, ``upper`` (b, *input); ``y`` (b,); margin bounds (b, K−1).
"""

from __future__ import annotations

import torch
from torch import nn

from ctbench.bounds import certified_from_margin_bounds, ibp_bounds, margin_spec, robust_ce_from_margin_bounds
from ctbench.errors import CTBenchError
from ctbench.methods import METHODS
from ctbench.methods.base import TrainingMethod


def num_classes(model: nn.Module) -> int:
    """K, the number of outputs of the model's last ``nn.Linear`` layer."""
    for m in reversed(list(model.modules())):
        if isinstance(m, nn.Linear):
            return m.out_features
    raise CTBenchError("certified training needs a model whose last affine layer is nn.Linear")


def optional_float(config: dict, key: str) -> float | None:
    value = config.get(key)
    return None if value is None else float(value)


@METHODS.register("ibp")
class IBP(TrainingMethod):
    name = "ibp"
    certified = True

    def __init__(self, config: dict):
        super().__init__(config)
        self.relu_shrink = optional_float(self.config, "relu_shrink")

    def shrink(self, model: nn.Module) -> float | None:
        """The ReLU shrink ratio to use now (training only; None = ordinary IBP)."""
        return self.relu_shrink if model.training else None

    def ibp_margin_bounds(self, model, lower, upper, y, *, store: bool = True) -> torch.Tensor:
        """(b, K−1) IBP lower bounds of ``z_y − z_i`` over ``[lower, upper]``; stores the layer bounds
        for the warm-up regularizer when training and ``store``."""
        C = margin_spec(y, num_classes(model), dtype=lower.dtype)
        keep = store and model.training
        out = ibp_bounds(model, lower, upper, C, store_intermediate=keep, relu_shrinkage=self.shrink(model))
        if keep:
            self.store_bounds(out[2])
        return out[0]

    def ibp_loss(self, model, lower, upper, y, *, store: bool = True):
        """(mean IBP robust CE, IBP-certified (b,) bool) over the box ``[lower, upper]``."""
        lb = self.ibp_margin_bounds(model, lower, upper, y, store=store)
        return robust_ce_from_margin_bounds(lb), certified_from_margin_bounds(lb)

    def robust_loss(self, model, x, y, eps, lower, upper):
        return self.ibp_loss(model, lower, upper, y)
