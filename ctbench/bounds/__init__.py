"""Bound propagation for certified training and certification (native PyTorch engine).

One entry point, :func:`compute_bounds`; methods by auto_LiRPA's names, in the registry
:data:`BOUND_METHODS`:

=============  ==========================================================================  ==============
``IBP``        interval bound propagation (Gowal et al. 2018), centre/radius form           differentiable
``CROWN-IBP``  IBP intermediate bounds + back-substituted final bound (Zhang et al. 2020),  differentiable
               with CTBench's cut points (option ``cut_points``, default True: the partial
               expression is also concretized on every layer's IBP box, the tightest kept;
               ``False`` = auto_LiRPA's CROWN-IBP)
``CROWN``      back-substitution for every ReLU's pre-activation too (Zhang et al. 2018)    differentiable
``alpha-CROWN`` CROWN with optimized lower ReLU slopes (Xu et al. 2021)                      detached
=============  ==========================================================================  ==============

Models: ``nn.Sequential`` of ``Normalization``, ``Conv2d``, ``Linear``, ``BatchNorm1d/2d``, ``ReLU``,
``Flatten``. BatchNorm uses running statistics in eval mode, and in training mode the clean-batch
statistics recorded by :func:`clean_forward_and_freeze_bn` / :func:`bn_stats_from` (paper §4.1;
``batchnorm.py``). Training helpers: :func:`ibp_bounds` (with stored intermediate bounds for Shi et
al. 2021's warm-up regularizer and SABR's ``relu_shrinkage``), :func:`margin_spec`,
:func:`robust_ce_from_margin_bounds`, :func:`loss_fusion_crown_ibp` (Xu et al. 2020).

``CTBENCH_COMPILE`` (or :func:`ctbench.bounds.fused.set_compile`) decides whether the CROWN ReLU
relaxation — most of a CROWN-IBP step's elementwise work — runs through ``torch.compile`` (``fused.py``;
default ``auto``: large training calls compiled, certification eager).

Primitives for branch and bound (``ctbench.certify.bab``), public: :func:`~ctbench.bounds.layers.parse_model`,
:func:`~ctbench.bounds.layers.batch_dot`, :func:`~ctbench.bounds.ibp.relu_box`,
:func:`~ctbench.bounds.linear.intermediate_bounds`, :func:`~ctbench.bounds.linear.relu_back`,
:func:`~ctbench.bounds.linear.crown_tighten`.

Shapes: input box ``lower``/``upper`` (B, *input); specification ``C`` (B, S, K); bounds (B, S),
or (B, K) for the logits when ``C`` is None. Works in float32 and float64 (dtype of inputs and model).
"""

from __future__ import annotations

import importlib

import torch

from ctbench.bounds.alpha import alpha_crown_bounds
from ctbench.bounds.batchnorm import (
    bn_affine,
    bn_stats_from,
    clean_forward_and_freeze_bn,
    frozen_stats,
    is_frozen,
    unfreeze_bn,
)
from ctbench.bounds.ibp import ibp_bounds
from ctbench.bounds.layers import check_box, check_spec
from ctbench.bounds.linear import linear_bounds
from ctbench.bounds.spec import (
    certified_from_margin_bounds,
    loss_fusion_crown_ibp,
    margin_spec,
    pseudo_logits_from_margin_bounds,
    robust_ce_from_margin_bounds,
)
from ctbench.errors import CTBenchError
from ctbench.registry import Registry

#: Bound methods by auto_LiRPA's names. Each: ``fn(model, lower, upper, C, **options) -> (lb, ub)``.
BOUND_METHODS: Registry = Registry("bound method")


@BOUND_METHODS.register("IBP")
def _ibp(model, lower, upper, C=None, bound_upper=True):
    lb, ub = ibp_bounds(model, lower, upper, C)
    return lb, (ub if bound_upper else None)


@BOUND_METHODS.register("CROWN-IBP")
def _crown_ibp(model, lower, upper, C=None, bound_upper=True, cut_points=True):
    return linear_bounds(model, lower, upper, C, intermediate="IBP", bound_upper=bound_upper, cut_points=cut_points)


@BOUND_METHODS.register("CROWN")
def _crown(model, lower, upper, C=None, bound_upper=True):
    return linear_bounds(model, lower, upper, C, intermediate="CROWN", bound_upper=bound_upper)


@BOUND_METHODS.register("alpha-CROWN")
def _alpha_crown(model, lower, upper, C=None, bound_upper=True, iterations=20, lr=0.5):
    return alpha_crown_bounds(model, lower, upper, C, iterations=iterations, lr=lr, bound_upper=bound_upper)


BACKENDS = ("native", "auto_lirpa")


def compute_bounds(
    model: torch.nn.Module,
    lower: torch.Tensor,
    upper: torch.Tensor,
    method: str,
    C: torch.Tensor | None = None,
    *,
    backend: str = "native",
    bound_upper: bool = True,
    **options,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lower and upper bounds of ``C @ model(x)`` over the box ``lower <= x <= upper``.

    Args:
        model: ``nn.Sequential`` of supported layers (see module docstring).
        lower, upper: (B, *input), ``lower <= upper`` elementwise (CTBenchError otherwise).
        method: ``"IBP"``, ``"CROWN-IBP"``, ``"CROWN"`` or ``"alpha-CROWN"`` (:data:`BOUND_METHODS`).
        C: optional specification (B, S, K); without it the bounds are of the K logits.
        backend: ``"native"`` (this package) or ``"auto_lirpa"``
            (``ctbench.bounds.lirpa.compute_bounds_lirpa``; imported lazily).
        bound_upper: if False, ``ub`` is returned as None and not computed where that saves work
            (CROWN-type methods, e.g. certification needs only margin lower bounds).
        **options: method options, e.g. ``iterations=20, lr=0.5`` for alpha-CROWN.

    Returns:
        ``(lb, ub)``, each (B, S) (or (B, K)); differentiable except for alpha-CROWN.
    """
    if backend not in BACKENDS:
        raise CTBenchError(f"unknown bound backend {backend!r}; known: {', '.join(BACKENDS)}")
    impl = BOUND_METHODS.get(method)
    check_box(lower, upper)
    if C is not None:
        check_spec(C, lower.shape[0])
        C = C.to(lower.dtype)
    if backend == "auto_lirpa":
        try:
            lirpa = importlib.import_module("ctbench.bounds.lirpa")
        except ImportError as e:
            raise CTBenchError(f"auto_LiRPA backend unavailable: {e}") from None
        lb, ub = lirpa.compute_bounds_lirpa(
            model, lower, upper, method, C, bound_upper=bound_upper, **options
        )
        return lb, (ub if bound_upper else None)
    return impl(model, lower, upper, C, bound_upper=bound_upper, **options)


__all__ = [
    "BOUND_METHODS",
    "alpha_crown_bounds",
    "bn_affine",
    "bn_stats_from",
    "certified_from_margin_bounds",
    "clean_forward_and_freeze_bn",
    "compute_bounds",
    "frozen_stats",
    "ibp_bounds",
    "is_frozen",
    "linear_bounds",
    "loss_fusion_crown_ibp",
    "margin_spec",
    "pseudo_logits_from_margin_bounds",
    "robust_ce_from_margin_bounds",
    "unfreeze_bn",
]
