"""Interval bound propagation (IBP; Gowal et al. 2018) in centre/radius form, as CTBench's box domain.

The box [l, u] is carried as centre ``c = (u + l)/2`` and radius ``r = (u − l)/2``: affine layers map
``c`` through ``W`` (with bias) and ``r`` through ``|W|`` (Linear, Conv2d), per-channel affine layers
(Normalization, BatchNorm with clean-batch or running statistics) scale ``r`` by ``|scale|``; ReLU maps
[l, u] to [relu(l), relu(u)]. A specification ``C`` (B, S, K) is folded into the last Linear layer
(``W' = C·W``, ``b' = C·b``, CTBench's final-layer elision; Gowal et al. 2018 §3), so the bound of
``C·z`` is tighter than ``C`` applied to the box of ``z`` and costs (B, S) instead of (B, K).

Everything is differentiable (training). Shapes: ``lower``/``upper`` (B, *input); result (B, S)
with ``C``, else (B, K).
"""

from __future__ import annotations

import torch

from ctbench.bounds.layers import (
    ChannelAffine,
    LinearLayer,
    ReLULayer,
    check_box,
    check_spec,
    parse_model,
)
from ctbench.errors import CTBenchError
from ctbench.nn import Normalization


class _ReluBox(torch.autograd.Function):
    """ReLU on a box in centre/radius form with a hand-written backward (fewer passes than autograd).

    lo = relu(c − r), hi = relu(c + r); returns c' = (hi + lo)/2, r' = (hi − lo)/2.
    """

    @staticmethod
    def forward(ctx, c, r):
        lo = torch.sub(c, r).clamp_(min=0)
        hi = torch.add(c, r).clamp_(min=0)
        ctx.save_for_backward(lo > 0, hi > 0)
        c2 = torch.add(hi, lo).mul_(0.5)
        r2 = hi.sub_(lo).mul_(0.5)
        return c2, r2

    @staticmethod
    def backward(ctx, gc, gr):
        m_lo, m_hi = ctx.saved_tensors
        g_hi = torch.add(gc, gr).mul_(m_hi)  # 2·∂/∂hi
        g_lo = torch.sub(gc, gr).mul_(m_lo)  # 2·∂/∂lo
        dc = torch.add(g_hi, g_lo).mul_(0.5)
        dr = g_hi.sub_(g_lo).mul_(0.5)
        return dc, dr


class _ReluBoxLU(torch.autograd.Function):
    """As :class:`_ReluBox` but from (l, u): c' = (relu(u) + relu(l))/2, r' = (relu(u) − relu(l))/2."""

    @staticmethod
    def forward(ctx, l, u):
        lo = l.clamp(min=0)
        hi = u.clamp(min=0)
        ctx.save_for_backward(lo > 0, hi > 0)
        c2 = torch.add(hi, lo).mul_(0.5)
        r2 = hi.sub_(lo).mul_(0.5)
        return c2, r2

    @staticmethod
    def backward(ctx, gc, gr):
        m_lo, m_hi = ctx.saved_tensors
        g_u = torch.add(gc, gr).mul_(m_hi).mul_(0.5)
        g_l = torch.sub(gc, gr).mul_(m_lo).mul_(0.5)
        return g_l, g_u


def relu_box(c, r, shrink=None):
    """The box (centre, radius) of ReLU over the box ``(c, r)``; ``shrink``: SABR's ``relu_shrinkage``.
    A primitive of the bound engine, also used by branch and bound (``ctbench.certify.bab``)."""
    if shrink is None:
        return _ReluBox.apply(c, r)
    l, u = c - r, c + r
    # SABR / CTBench relu_shrinkage: upper bound of unstable neurons multiplied by s before relu.
    u = torch.where((l < 0) & (u > 0), u * shrink, u)
    lo, hi = torch.relu(l), torch.relu(u)
    return (hi + lo) * 0.5, (hi - lo) * 0.5


def _apply_spec_box(c, r, C):
    """Interval bound of C·z for z in the box (c, r): (B, K) → (B, S)."""
    cc = torch.bmm(C, c.unsqueeze(-1)).squeeze(-1)
    rr = torch.bmm(C.abs(), r.unsqueeze(-1)).squeeze(-1)
    return cc, rr


def ibp_forward(layers, c, r, C=None, relu_shrinkage=None, store=False, keep_bounds=True):
    """Run IBP through parsed ``layers`` from the box (c, r).

    Returns ``(c_out, r_out, relu_bounds, input_bounds)`` where ``relu_bounds`` maps the index of each
    ReLU layer to its pre-activation bounds ``(l, u)`` (B, *shape) — always filled, used by CROWN-IBP —
    and ``input_bounds`` is the box after a leading Normalization (only if ``store``). With
    ``keep_bounds=False`` (plain IBP training) ``relu_bounds`` stays empty, saving two passes per ReLU.
    """
    relu_bounds = {}
    input_bounds = None
    n = len(layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, ReLULayer):
            if not keep_bounds:
                c, r = relu_box(c, r, relu_shrinkage)
                continue
            l, u = c - r, c + r
            relu_bounds[i] = (l, u)
            c, r = _ReluBoxLU.apply(l, u) if relu_shrinkage is None else relu_box(c, r, relu_shrinkage)
        elif i == n - 1 and C is not None and isinstance(layer, LinearLayer):
            W, b = layer.folded(C)  # (B, S, in), (B, S)
            c2 = torch.bmm(W, c.unsqueeze(-1)).squeeze(-1)
            if b is not None:
                c2 = c2 + b
            r = torch.bmm(W.abs(), r.unsqueeze(-1)).squeeze(-1)
            c = c2
            C = None
        else:
            c, r = layer.ibp(c, r)
            if (
                store
                and i == 0
                and isinstance(layer, ChannelAffine)
                and isinstance(layer.module, Normalization)
            ):
                input_bounds = (c - r, c + r)
    if C is not None:
        if c.dim() != 2:
            raise CTBenchError(
                f"a specification C needs a model with (B, K) output, got (B, {tuple(c.shape[1:])})"
            )
        check_spec(C, c.shape[0], c.shape[1])
        c, r = _apply_spec_box(c, r, C)
    return c, r, relu_bounds, input_bounds


def ibp_bounds(model, lower, upper, C=None, *, store_intermediate=False, relu_shrinkage=None):
    """IBP bounds of the logits (B, K), or of ``C @ logits`` (B, S) with a specification ``C`` (B, S, K).

    Args:
        model: ``nn.Sequential`` of supported layers; BatchNorm in eval mode (running statistics) or
            with frozen clean-batch statistics (:func:`ctbench.bounds.clean_forward_and_freeze_bn`).
        lower, upper: input box (B, *input), ``lower <= upper``.
        C: optional specification (B, S, K), folded into the last Linear layer.
        store_intermediate: also return the list of bounds for Shi et al. (2021)'s warm-up
            regularizer: element 0 is the input box after the leading Normalization layer (the raw
            input box if there is none), then the pre-activation bounds ``(l, u)`` of every ReLU in
            order, each (B, *shape) and differentiable.
        relu_shrinkage: SABR / CTBench option (Müller et al. 2023; original ``--relu-shrinkage s``,
            ``HybridZonotope.relu``): for unstable neurons (l < 0 < u) the upper bound is multiplied by
            ``s`` before the ReLU. With ``s < 1`` the result is **not a sound bound** — it is a training
            device (CIFAR-10 2/255 uses s = 0.8). ``None`` (default) = ordinary IBP.

    Returns:
        ``(lb, ub)``, or ``(lb, ub, bounds_list)`` when ``store_intermediate``.
    """
    check_box(lower, upper)
    layers = parse_model(model)
    if C is not None:
        check_spec(C, lower.shape[0])
    c = (upper + lower) * 0.5
    r = (upper - lower) * 0.5
    c, r, relu_bounds, input_bounds = ibp_forward(
        layers, c, r, C, relu_shrinkage, store=store_intermediate, keep_bounds=store_intermediate
    )
    lb, ub = c - r, c + r
    if not store_intermediate:
        return lb, ub
    if input_bounds is None:
        input_bounds = (lower, upper)
    return lb, ub, [input_bounds] + [relu_bounds[i] for i in sorted(relu_bounds)]
