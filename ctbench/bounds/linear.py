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

from ctbench.bounds import fused, patches
from ctbench.bounds.ibp import ibp_forward, relu_box
from ctbench.bounds.layers import ReLULayer, batch_dot, check_box, check_spec, parse_model

#: Upper limit on the number of elements of one back-substitution coefficient tensor when
#: bounding intermediate neurons by CROWN (rows are processed in chunks below this).
MAX_CHUNK_ELEMENTS = 2**24
#: Upper limit on the elements of the final back-substitution's coefficient tensor (B, rows, *shape) at
#: the widest layer (2^28: 1 GiB in float32). Specifications with more rows are bounded in chunks of
#: rows — exact, since every row is back-substituted on its own. It matters for many classes: all
#: K−1 = 199 TinyImageNet margins of CNN7 at batch 32 would need 32·199·64·64·64 ≈ 1.7e9 elements
#: (6.7 GB) per tensor; the 9 CIFAR-10 / MNIST margins' lower bounds stay in one chunk at batch 256
#: (CNN7 on CIFAR-10: 256·9·64·32·32 ≈ 1.5e8 elements).
MAX_SPEC_ELEMENTS = 2**28


def row_chunks(B: int, rows: int, widest: int, limit: int | None = None) -> list[slice]:
    """Slices of the ``rows`` specification rows such that ``B · len(chunk) · widest <= limit``
    (default :data:`MAX_SPEC_ELEMENTS`; at least one row per chunk)."""
    limit = MAX_SPEC_ELEMENTS if limit is None else limit
    step = max(1, limit // max(1, B * widest))
    return [slice(j, min(j + step, rows)) for j in range(0, rows, step)]


def widest_layer(relu_bounds: dict, c_in: torch.Tensor) -> int:
    """Largest per-sample size among the input and the ReLU layers (the widest coefficient tensor)."""
    return max([int(c_in[0].numel())] + [int(lu[0][0].numel()) for lu in relu_bounds.values()])


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

    ``with_cut``: also return CTBench's cut point at this ReLU's output (:func:`backsub_lower`), the
    minimum of ``A·z`` over the output box ``[relu(l), relu(u)]``:
    ``cut = Σ A⁺·relu(l) + A⁻·relu(u) = Σ A·relu(l) + A⁻·(relu(u) − relu(l))`` — two reductions over
    tensors the relaxation already has, no extra (B, S, *shape) tensor; its backward is folded into
    the relaxation's (``∂/∂A = relu(l) + 1[A < 0]·(relu(u) − relu(l))``, ``∂/∂l = Σ_S A⁺·1[l > 0]``,
    ``∂/∂u = Σ_S A⁻·1[u > 0]``). Without it the third output is an empty placeholder.

    ``compiled`` (chosen by :func:`_relu_back_crown` from ``CTBENCH_COMPILE``, :mod:`ctbench.bounds.fused`):
    both directions run the same formulas through ``torch.compile`` instead, saving only ``A, l, u``.
    """

    @staticmethod
    def forward(ctx, A, l, u, with_cut, compiled=False):
        ctx.with_cut = with_cut
        ctx.fused = compiled
        if ctx.fused:
            ctx.save_for_backward(A, l, u)
            return fused.fused_forward(A, l, u, with_cut)
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
        d = batch_dot(A_neg, t)
        if with_cut:
            lo = l.clamp(min=0)  # relu(l)
            w = uc - lo  # relu(u) − relu(l)
            cut = batch_dot(A, lo) + batch_dot(A_neg, w)
            ctx.save_for_backward(A_neg, slope, lc, uc, den, s, t, A, lo, w)
        else:
            cut = d.new_empty(0)
            ctx.save_for_backward(A_neg, slope, lc, uc, den, s, t)
        return A_new, d, cut

    @staticmethod
    def backward(ctx, G, g_d, g_cut):
        # the cut's gradient is zero unless it is the largest bound of some row: then skip its terms
        use_cut = ctx.with_cut and bool(g_cut.any())
        if ctx.fused:
            A, l, u = ctx.saved_tensors
            dA, dl, du = fused.fused_backward(A, l, u, G, g_d, g_cut, use_cut)
            need = ctx.needs_input_grad
            return dA if need[0] else None, dl if need[1] else None, du if need[2] else None, None, None
        A_neg, slope, lc, uc, den, s, t = ctx.saved_tensors[:7]
        dA = dl = du = None
        if use_cut:
            A, lo, w = ctx.saved_tensors[7:]
        neg = A_neg < 0
        if ctx.needs_input_grad[0]:
            # ∂A'/∂A = slope; ∂d/∂A = t where A < 0; ∂cut/∂A = relu(u) where A < 0, else relu(l)
            dA = G * slope
            dA.add_(torch.where(neg, _outer(g_d, t), 0.0))
            if use_cut:
                dA.add_(torch.where(neg, (lo + w).unsqueeze(1), lo.unsqueeze(1)).mul_(_expand(g_cut, A_neg)))
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            ds = (G * A_neg).sum(1)  # A' depends on s through A⁻ (where A < 0, slope = s)
            dt = _sum_rows(g_d, A_neg)
            g_s = ds - lc * dt
            # ∂s/∂l⁻ = u⁺/den² = s/den, ∂s/∂u⁺ = −l⁻/den² (written without den², which underflows)
            g_lc = (g_s * s) / den - s * dt
            g_uc = -(g_s * (lc / den)) / den
            if use_cut:
                cut_neg = _sum_rows(g_cut, A_neg)  # Σ_S g·A⁻: the cut's derivative by relu(u)
                cut_pos = _sum_rows(g_cut, A) - cut_neg  # Σ_S g·A⁺: by relu(l)
            if ctx.needs_input_grad[1]:
                dl = g_lc * (lc < 0)
                if use_cut:
                    dl = dl + cut_pos * (lo > 0)
            if ctx.needs_input_grad[2]:
                du = (g_uc + cut_neg if use_cut else g_uc) * (uc > 0)
        return dA, dl, du, None, None


def _relu_back_crown(A, l, u, with_cut):
    """``_ReluBackCROWN`` compiled or eager as ``CTBENCH_COMPILE`` says (training: gradients flow)."""
    training = torch.is_grad_enabled() and (A.requires_grad or l.requires_grad or u.requires_grad)
    return _ReluBackCROWN.apply(A, l, u, with_cut, fused.use_compiled(training, A.numel()))


def _expand(g, A):
    """(B, S) → (B, S, 1, …) broadcastable against A (B, S, *shape)."""
    return g.reshape(g.shape + (1,) * (A.dim() - 2))


def _outer(g, v):
    """(B, S) ⊗ (B, *shape) → (B, S, *shape)."""
    return g.reshape(g.shape + (1,) * (v.dim() - 1)) * v.unsqueeze(1)


def _sum_rows(g, X):
    """``Σ_S g[b, s]·X[b, s]``: (B, S), (B, S, *shape) → (B, *shape), one read of X (no (B, S, …) temporary)."""
    if X.shape[1] == 1:
        return X[:, 0] * _expand(g, X)[:, 0]
    return torch.bmm(g.unsqueeze(1), X.flatten(2)).reshape(X.shape[:1] + X.shape[2:])


def relu_back(A, l, u, alpha=None):
    """Back-substitute the *lower* bound of ``A·relu(x)`` (A: (B, S, *shape)) for x in [l, u].

    ``alpha`` (B, S, *shape) or None: lower slopes of unstable neurons (None = adaptive CROWN).
    Returns ``(A', d)`` with ``A·relu(x) ≥ A'·x + d``; d: (B, S).
    """
    if alpha is None:
        return _relu_back_crown(A, l, u, False)[:2]
    up_slope, up_icpt, adaptive = relu_relaxation(l, u)
    lo_slope = torch.where(unstable_mask(l, u).unsqueeze(1), alpha, adaptive.unsqueeze(1))
    A_neg = A.clamp(max=0)
    A_new = (A - A_neg) * lo_slope + A_neg * up_slope.unsqueeze(1)
    d = batch_dot(A_neg, up_icpt)
    return A_new, d


class _BoxMin(torch.autograd.Function):
    """``min over z in [c − r, c + r] of A·z = A·c − |A|·r`` with a hand-written backward.

    A: (B, S, *shape); c, r: (B, *shape); returns (B, S). Forward: two batched dot products. Backward:
    ``∂/∂A = g·(c − sgn(A)·r)`` (autograd's subgradient of ``|A|``, sgn(0) = 0), ``∂/∂c = Σ_S g·A``,
    ``∂/∂r = −Σ_S g·|A|`` as broadcast products: autograd's backward of the dot products is a
    batched matrix product with an inner dimension of 1, several times slower on CPU.
    """

    @staticmethod
    def forward(ctx, A, c, r):
        Af = A.flatten(2)
        lb = torch.bmm(Af, c.flatten(1).unsqueeze(-1)) - torch.bmm(Af.abs(), r.flatten(1).unsqueeze(-1))
        ctx.save_for_backward(A, c, r)
        return lb.squeeze(-1)

    @staticmethod
    def backward(ctx, g):
        A, c, r = ctx.saved_tensors
        Af = A.flatten(2)
        gg = g.unsqueeze(-1)  # (B, S, 1)
        cf, rf = c.flatten(1).unsqueeze(1), r.flatten(1).unsqueeze(1)  # (B, 1, N)
        dA = dc = dr = None
        if ctx.needs_input_grad[0]:
            dA = (gg * cf).sub_(gg * rf * Af.sign()).reshape(A.shape)
        if ctx.needs_input_grad[1]:
            dc = (gg * Af).sum(1).reshape(c.shape)
        if ctx.needs_input_grad[2]:
            dr = (gg * Af.abs()).sum(1).neg_().reshape(r.shape)
        return dA, dc, dr


def box_min(A, c, r):
    """Lower bound (B, S) of ``A·z`` (A: (B, S, *shape)) over the box ``c ± r`` (B, *shape); differentiable."""
    return _BoxMin.apply(A, c, r)


def backsub_lower(layers, upto, A, relu_bounds, c_in, r_in, alphas=None, cut_points=False):
    """Lower bound (B, S) of ``A·z`` where z is the output of ``layers[upto-1]`` (input if upto = 0).

    ``relu_bounds[i] = (l, u)``: pre-activation bounds of the ReLU at layer index i (< upto);
    ``alphas[i]`` (optional): lower slopes for that ReLU (B, S, *shape). ``c_in``/``r_in``: input box.

    ``cut_points`` (CTBench's CROWN-IBP, ``backward_deeppoly(use_intermediate=True)``): the partial
    expression is also concretized on the box ``[relu(l), relu(u)]`` of every ReLU's *output* (with
    IBP pre-activation bounds, exactly the IBP box there) — a valid lower bound too — and the largest of
    these "cut points" is returned, so the result is never looser than the interval bound at any
    layer. Cuts at the other layer boundaries add nothing: between two ReLUs the layers are affine
    (Conv, Linear, BatchNorm, Normalization, Flatten) and IBP maps a box through ``W`` with radius
    ``|W|·r``, so concretizing ``A`` after the affine map loses against concretizing ``A·W`` before
    it (``|A·W| ≤ |A|·|W|``). The original concretizes at every layer; the maximum is the same. The
    cut is computed inside the ReLU relaxation (:class:`_ReluBackCROWN`), from tensors it has anyway.
    """
    if cut_points and alphas is not None:
        raise ValueError("cut_points are part of CROWN-IBP (adaptive slopes); alpha slopes take none")
    d_total = None
    best = None
    for i in range(upto - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, ReLULayer):
            l, u = relu_bounds[i]
            if cut_points and i + 1 < len(layers):
                A, d, cut = _relu_back_crown(A, l, u, True)
                cut = cut if d_total is None else cut + d_total  # constants of the layers above
                best = cut if best is None else torch.maximum(best, cut)
            else:
                A, d = relu_back(A, l, u, None if alphas is None else alphas.get(i))
        else:
            A, d = layer.back(A)
        if d is not None:
            d_total = d if d_total is None else d_total + d
    lb = box_min(A, c_in, r_in)
    lb = lb if d_total is None else lb + d_total
    return lb if best is None else torch.maximum(lb, best)


def crown_tighten(layers, i, l, u, relu_bounds, c_in, r_in):
    """CROWN bounds of the ReLU-input neurons at layer i that are unstable under [l, u], intersected.
    A primitive of the bound engine, also used by branch and bound (``ctbench.certify.bab``)."""
    B = l.shape[0]
    shape = l.shape[1:]
    lf, uf = l.flatten(1), u.flatten(1)
    unstable = (lf < 0) & (uf > 0)
    n = int(unstable.sum(1).max())
    if n == 0:
        return l, u
    order = torch.argsort(unstable.to(torch.int8), dim=1, descending=True, stable=True)[:, :n]
    local = patches.supported(layers, i, tuple(shape))  # convolution-local rows (crops): same bounds, cheaper
    widest = patches.crop_elements(layers, i) if local else max(widest_layer(relu_bounds, r_in), lf.shape[1])
    cache: dict = {}
    for sl in row_chunks(2 * B, n, widest, MAX_CHUNK_ELEMENTS):
        idx = order[:, sl]  # (B, m); padded rows are stable neurons: their bounds are sound too
        m = idx.shape[1]
        if local:
            signs = torch.cat([torch.ones(m, device=l.device), -torch.ones(m, device=l.device)])
            lb = patches.lower_bounds(layers, i, torch.cat([idx, idx], 1), signs, relu_bounds, c_in, r_in,
                                      tuple(shape), cache)
        else:
            E = torch.zeros(B, m, lf.shape[1], dtype=l.dtype, device=l.device)
            E.scatter_(2, idx.unsqueeze(-1), 1.0)
            E = E.reshape(B, m, *shape)
            lb = backsub_lower(layers, i, torch.cat([E, -E], 1), relu_bounds, c_in, r_in)
        lo, hi = lb[:, :m], -lb[:, m:]
        lf = lf.scatter(1, idx, torch.maximum(lf.gather(1, idx), lo))
        uf = uf.scatter(1, idx, torch.minimum(uf.gather(1, idx), hi))
    return lf.reshape(l.shape), uf.reshape(u.shape)


def intermediate_bounds(layers, c_in, r_in, mode="IBP", relu_shrinkage=None):
    """Pre-activation bounds of every ReLU: {layer index: (l, u)}; ``mode`` "IBP" or "CROWN".

    Also returns the IBP box (c, r) at the network output (used by loss fusion); with "CROWN" the
    box is propagated from the tightened bounds.
    """
    if mode == "IBP":
        c, r, relu_bounds, _ = ibp_forward(layers, c_in, r_in, None, relu_shrinkage)
        return relu_bounds, (c, r)
    relu_bounds = {}
    c, r = c_in, r_in
    for i, layer in enumerate(layers):
        if isinstance(layer, ReLULayer):
            l, u = crown_tighten(layers, i, c - r, c + r, relu_bounds, c_in, r_in)
            relu_bounds[i] = (l, u)
            c, r = (u + l) * 0.5, (u - l) * 0.5
            c, r = relu_box(c, r)
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
    each (B, S); ``ub`` is None if ``bound_upper`` is False (halves the cost). Differentiable. Rows are
    bounded in chunks when the coefficient tensor would exceed :data:`MAX_SPEC_ELEMENTS` (same bounds).
    ``cut_points`` (CROWN-IBP only): also concretize on the IBP box of every ReLU output and keep the
    tightest — the same bound as CTBench's ``deeppoly_box`` cuts at every layer (:func:`backsub_lower`).
    """
    check_box(lower, upper)
    layers = parse_model(model)
    c_in, r_in = (upper + lower) * 0.5, (upper - lower) * 0.5
    relu_bounds, (c_out, _) = intermediate_bounds(layers, c_in, r_in, intermediate)
    Cs = spec_rows(C, c_out)
    S = Cs.shape[1]
    A = torch.cat([Cs, -Cs], 1) if bound_upper else Cs
    cuts = cut_points and intermediate == "IBP"
    chunks = row_chunks(A.shape[0], A.shape[1], widest_layer(relu_bounds, c_in))
    lb = torch.cat(
        [backsub_lower(layers, len(layers), A[:, sl], relu_bounds, c_in, r_in, cut_points=cuts) for sl in chunks], 1
    )
    if not bound_upper:
        return lb, None
    return lb[:, :S], -lb[:, S:]
