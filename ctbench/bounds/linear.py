"""Linear-relaxation back-substitution: CROWN (Zhang et al. 2018) and CROWN-IBP (Zhang et al. 2020).

A linear function ``A·z_k`` of a layer's output (A: (B, S, *shape_k)) is substituted backwards through
every layer down to the input (``layers.py`` ``back``), relaxing each ReLU with the pre-activation
bounds ``[l, u]`` of its input:

* stable neurons exactly (``l ≥ 0``: identity, ``u ≤ 0``: zero);
* unstable neurons (``l < 0 < u``): upper line = chord ``u/(u−l)·(x − l)``; lower line ``α·x`` with
  ``α = 1 if u ≥ −l else 0`` (adaptive CROWN / DeepPoly slope) or, for alpha-CROWN (``alpha.py``,
  Xu et al. 2021), an optimized ``α ∈ [0, 1]`` per neuron and per specification row.

For a lower bound, positive coefficients take the lower line and negative ones the upper line; the
upper bound of ``A·z`` is minus the lower bound of ``−A·z`` (both are computed in one pass with the
rows stacked as ``[A; −A]``). At the input the expression is concretized over the box
``c ± r``: ``min = A·c − |A|·r + d``.

Intermediate (pre-ReLU) bounds: ``"IBP"`` → CROWN-IBP (IBP for every ReLU, back-substitution only for
the final specification; the CTBench / Zhang et al. 2020 training bound); ``"CROWN"`` → each ReLU's
pre-activation is itself bounded by back-substitution to the input, for the neurons that are unstable
under the interval bound propagated from the previous (already tightened) layer, and intersected
with that interval bound (both are sound, so the intersection is). Stable neurons keep the interval
bound: their relaxation is exact either way.

A specification ``C`` (B, S, K) starts the back-substitution at the output, so the first step
through the last Linear computes ``C·W`` (the margin specification folded into the last layer).
"""

from __future__ import annotations

import torch

from ctbench.bounds.ibp import _relu_box, ibp_forward
from ctbench.bounds.layers import ReLULayer, _bdot, check_box, check_spec, parse_model

#: Upper limit on the number of elements of one back-substitution coefficient tensor when
#: bounding intermediate neurons by CROWN (rows are processed in chunks below this).
MAX_CHUNK_ELEMENTS = 2**24


def relu_relaxation(l, u):
    """Upper line and adaptive lower slope of the ReLU relaxation. l, u: (B, *shape).

    Returns ``(up_slope, up_icpt, adaptive_lower_slope)``, each (B, *shape). With ``l⁻ = min(l, 0)``
    and ``u⁺ = max(u, 0)`` the upper line ``u⁺/(u⁺ − l⁻)·(x − l⁻)`` is the chord for unstable neurons,
    the identity for active ones (l ≥ 0) and zero for inactive ones (u ≤ 0), in a few fused passes.
    The adaptive lower slope ``1[u + l ≥ 0]`` is CROWN's choice for unstable neurons (1 if u ≥ −l) and
    exact for stable ones (for l = u = 0 any slope is exact).
    """
    lc = l.clamp(max=0)
    uc = u.clamp(min=0)
    denom = (uc - lc).clamp(min=torch.finfo(u.dtype).tiny)  # 0 only if l = u = 0: slope 0 is exact
    up_slope = uc / denom
    up_icpt = -(lc * up_slope)
    adaptive = (u + l >= 0).to(u.dtype)
    return up_slope, up_icpt, adaptive


def unstable_mask(l, u):
    """(B, *shape) bool: neurons with l < 0 < u (the only ones whose relaxation is not exact)."""
    return (l < 0) & (u > 0)


class _ReluBackCROWN(torch.autograd.Function):
    """``relu_back`` with the adaptive lower slope, with a hand-written backward (CROWN-IBP training).

    Forward: ``A' = A⁺·a + A⁻·s``, ``d = Σ A⁻·t`` with ``s = u⁺/(u⁺ − l⁻)``, ``t = −l⁻·s``,
    ``a = 1[u + l ≥ 0]``. Backward: exact derivatives of these formulas (``a`` is piecewise constant),
    fewer passes over the (B, S, *shape) tensors than autograd's.
    """

    @staticmethod
    def forward(ctx, A, l, u):
        lc = l.clamp(max=0)
        uc = u.clamp(min=0)
        den = (uc - lc).clamp_(min=torch.finfo(u.dtype).tiny)
        s = uc / den
        t = -(lc * s)
        a = (u + l >= 0).to(u.dtype)
        pos = A >= 0
        slope = torch.where(pos, a.unsqueeze(1), s.unsqueeze(1))
        A_new = A * slope
        A_neg = A.clamp(max=0)
        d = _bdot(A_neg, t)
        ctx.save_for_backward(A_neg, slope, lc, uc, den, s, t)
        return A_new, d

    @staticmethod
    def backward(ctx, G, g_d):
        A_neg, slope, lc, uc, den, s, t = ctx.saved_tensors
        dA = dl = du = None
        gd = g_d.reshape(g_d.shape + (1,) * (A_neg.dim() - 2))
        if ctx.needs_input_grad[0]:
            # ∂A'/∂A = slope; ∂d/∂A = t where A < 0
            dA = G * slope + (A_neg < 0) * (gd * t.unsqueeze(1))
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            ds = (G * A_neg).sum(1)  # A' depends on s through A⁻ (where A < 0, slope = s)
            dt = (gd * A_neg).sum(1)
            g_s = ds - lc * dt
            # ∂s/∂l⁻ = u⁺/den² = s/den, ∂s/∂u⁺ = −l⁻/den² (written without den², which underflows)
            g_lc = (g_s * s) / den - s * dt
            g_uc = -(g_s * (lc / den)) / den
            dl = g_lc * (lc < 0) if ctx.needs_input_grad[1] else None
            du = g_uc * (uc > 0) if ctx.needs_input_grad[2] else None
        return dA, dl, du


def relu_back(A, l, u, alpha=None):
    """Back-substitute the *lower* bound of ``A·relu(x)`` (A: (B, S, *shape)) for x in [l, u].

    ``alpha`` (B, S, *shape) or None: lower slopes of unstable neurons (None = adaptive CROWN).
    Returns ``(A', d)`` with ``A·relu(x) ≥ A'·x + d``; d: (B, S).
    """
    if alpha is None:
        return _ReluBackCROWN.apply(A, l, u)
    up_slope, up_icpt, adaptive = relu_relaxation(l, u)
    lo_slope = torch.where(unstable_mask(l, u).unsqueeze(1), alpha, adaptive.unsqueeze(1))
    A_neg = A.clamp(max=0)
    A_new = (A - A_neg) * lo_slope + A_neg * up_slope.unsqueeze(1)
    d = _bdot(A_neg, up_icpt)
    return A_new, d


def backsub_lower(layers, upto, A, relu_bounds, c_in, r_in, alphas=None, cut_boxes=None):
    """Lower bound (B, S) of ``A·z`` where z is the output of ``layers[upto-1]`` (input if upto = 0).

    ``relu_bounds[i] = (l, u)``: pre-activation bounds of the ReLU at layer index i (< upto);
    ``alphas[i]`` (optional): lower slopes for that ReLU (B, S, *shape). ``c_in``/``r_in``: input box.

    ``cut_boxes`` (optional; CTBench's CROWN-IBP, ``backward_deeppoly(use_intermediate=True)``):
    ``cut_boxes[i] = (c, r)``, the IBP box of the input of layer i. The partial expression is also
    concretized on the box of every ReLU's *output* — a valid lower bound too — and the largest of
    these "cut points" is returned, so the result is never looser than the interval bound at any
    layer. Cuts at the other layer boundaries add nothing: between two ReLUs the layers are affine
    (Conv, Linear, BatchNorm, Normalization, Flatten) and IBP maps a box through ``W`` with radius
    ``|W|·r``, so concretizing ``A`` after the affine map loses against concretizing ``A·W`` before
    it (``|A·W| ≤ |A|·|W|``). The original concretizes at every layer; the maximum is the same.
    """
    d_total = None
    best = None
    for i in range(upto - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, ReLULayer):
            if cut_boxes is not None and i + 1 < len(cut_boxes):
                c, r = cut_boxes[i + 1]  # the ReLU's output box
                cut = _bdot(A, c) - _bdot(A.abs(), r)
                cut = cut if d_total is None else cut + d_total
                best = cut if best is None else torch.maximum(best, cut)
            l, u = relu_bounds[i]
            A, d = relu_back(A, l, u, None if alphas is None else alphas.get(i))
        else:
            A, d = layer.back(A)
        if d is not None:
            d_total = d if d_total is None else d_total + d
    lb = _bdot(A, c_in) - _bdot(A.abs(), r_in)
    lb = lb if d_total is None else lb + d_total
    return lb if best is None else torch.maximum(lb, best)


def _crown_tighten(layers, i, l, u, relu_bounds, c_in, r_in):
    """CROWN bounds of the ReLU-input neurons at layer i that are unstable under [l, u], intersected."""
    B = l.shape[0]
    shape = l.shape[1:]
    lf, uf = l.flatten(1), u.flatten(1)
    unstable = (lf < 0) & (uf > 0)
    n = int(unstable.sum(1).max())
    if n == 0:
        return l, u
    order = torch.argsort(unstable.to(torch.int8), dim=1, descending=True, stable=True)[:, :n]
    biggest = max(
        int(r_in[0].numel()), max(int(b[0][0].numel()) for b in relu_bounds.values()) if relu_bounds else 0
    )
    chunk = max(1, MAX_CHUNK_ELEMENTS // max(1, 2 * B * max(biggest, lf.shape[1])))
    for j in range(0, n, chunk):
        idx = order[:, j : j + chunk]  # (B, m); padded rows are stable neurons: their bounds are sound too
        m = idx.shape[1]
        E = torch.zeros(B, m, lf.shape[1], dtype=l.dtype, device=l.device)
        E.scatter_(2, idx.unsqueeze(-1), 1.0)
        E = E.reshape(B, m, *shape)
        lb = backsub_lower(layers, i, torch.cat([E, -E], 1), relu_bounds, c_in, r_in)
        lo, hi = lb[:, :m], -lb[:, m:]
        lf = lf.scatter(1, idx, torch.maximum(lf.gather(1, idx), lo))
        uf = uf.scatter(1, idx, torch.minimum(uf.gather(1, idx), hi))
    return lf.reshape(l.shape), uf.reshape(u.shape)


def intermediate_bounds(layers, c_in, r_in, mode="IBP", relu_shrinkage=None, boxes=None):
    """Pre-activation bounds of every ReLU: {layer index: (l, u)}; ``mode`` "IBP" or "CROWN".

    Also returns the IBP box (c, r) at the network output (used by loss fusion); with "CROWN" the
    box is propagated from the tightened bounds. ``boxes`` (IBP mode): see :func:`ibp_forward`.
    """
    if mode == "IBP":
        c, r, relu_bounds, _ = ibp_forward(layers, c_in, r_in, None, relu_shrinkage, boxes=boxes)
        return relu_bounds, (c, r)
    relu_bounds = {}
    c, r = c_in, r_in
    for i, layer in enumerate(layers):
        if isinstance(layer, ReLULayer):
            l, u = _crown_tighten(layers, i, c - r, c + r, relu_bounds, c_in, r_in)
            relu_bounds[i] = (l, u)
            c, r = (u + l) * 0.5, (u - l) * 0.5
            c, r = _relu_box(c, r)
        else:
            c, r = layer.ibp(c, r)
    return relu_bounds, (c, r)


def spec_rows(C, out_c):
    """Specification (B, S, K), or the identity over the K outputs when C is None."""
    if C is not None:
        check_spec(C, out_c.shape[0], out_c.shape[1])
        return C.to(out_c.dtype)
    B, K = out_c.shape
    return torch.eye(K, dtype=out_c.dtype, device=out_c.device).expand(B, K, K)


def linear_bounds(model, lower, upper, C=None, intermediate="IBP", bound_upper=True, cut_points=False):
    """CROWN-IBP (``intermediate="IBP"``) or CROWN (``"CROWN"``) bounds of ``C @ model(x)``.

    lower, upper: (B, *input). C: (B, S, K) or None (bounds of the K logits). Returns ``(lb, ub)``,
    each (B, S); ``ub`` is None if ``bound_upper`` is False (halves the cost). Differentiable.
    ``cut_points`` (CROWN-IBP only): also concretize on the IBP box of every ReLU output and keep the
    tightest — the same bound as CTBench's ``deeppoly_box`` cuts at every layer (:func:`backsub_lower`).
    """
    check_box(lower, upper)
    layers = parse_model(model)
    c_in, r_in = (upper + lower) * 0.5, (upper - lower) * 0.5
    boxes = [] if cut_points and intermediate == "IBP" else None
    relu_bounds, (c_out, _) = intermediate_bounds(layers, c_in, r_in, intermediate, boxes=boxes)
    Cs = spec_rows(C, c_out)
    S = Cs.shape[1]
    A = torch.cat([Cs, -Cs], 1) if bound_upper else Cs
    lb = backsub_lower(layers, len(layers), A, relu_bounds, c_in, r_in, cut_boxes=boxes)
    if not bound_upper:
        return lb, None
    return lb[:, :S], -lb[:, S:]
