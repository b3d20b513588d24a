"""Soundness property tests of the native bound engine.

Random Sequential nets (conv and dense; BatchNorm absent, in eval mode with random running
statistics, or in training mode with frozen clean-batch statistics) × random boxes (per-coordinate
widths, some zero) × specifications (none, margin, random Gaussian C) × all four methods: every
sampled point, random vertex and the two extreme corners must map inside [lb, ub].

Tolerance: float64 nets, ``|violation| <= 1e-9·(1 + |bound|)`` (the bounds are exact arithmetic
up to rounding; any real relaxation bug shows up orders of magnitude above this). A float32 variant
uses ``1e-4·(1 + |bound|)``.

Default suite: 250 seeds × 4 boxes = 1,000 (net, box) cases, each checked for the 4 methods.
``-m slow``: 1,500 more seeds and larger boxes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _bounds_helpers import (
    METHODS,
    assert_contains,
    outputs_at,
    prepare,
    random_box,
    random_net,
    random_spec,
    sample_points,
    single_thread_fixture,
)

from ctbench.bounds import (
    compute_bounds,
    ibp_bounds,
    loss_fusion_crown_ibp,
    margin_spec,
    robust_ce_from_margin_bounds,
    unfreeze_bn,
)
from ctbench.errors import CTBenchError

TOL64 = 1e-9
TOL32 = 1e-4
SPEC_KINDS = ("none", "margin", "random")
_single_thread = single_thread_fixture()


def _check_case(seed, dtype=torch.float64, tol=TOL64, B=4, n_uniform=200, n_corners=100, iterations=10):
    model, in_shape, K, bn = random_net(seed, dtype=dtype)
    prepare(model, in_shape, bn, seed, dtype)
    try:
        lo, hi = random_box(seed, in_shape, B=B, dtype=dtype)
        C = random_spec(seed, B, K, SPEC_KINDS[seed % 3], dtype)
        vals = outputs_at(model, C, sample_points(lo, hi, n_uniform, n_corners, seed))
        widths = {}
        for method in METHODS:
            opts = {"iterations": iterations} if method == "alpha-CROWN" else {}
            lb, ub = compute_bounds(model, lo, hi, method, C, **opts)
            assert lb.shape == vals.shape[1:] and ub.shape == vals.shape[1:]
            assert lb.dtype == dtype
            assert_contains(lb, ub, vals, tol, f"seed {seed} {method} bn={bn}")
            widths[method] = ub - lb
        # CROWN intermediate bounds are intersected with interval bounds: never looser than CROWN-IBP
        # on the first ReLU layer, and alpha-CROWN is never looser than CROWN.
        slack = tol * (1 + widths["CROWN"].abs())
        assert bool((widths["alpha-CROWN"] <= widths["CROWN"] + 2 * slack).all())
    finally:
        unfreeze_bn(model)


@pytest.mark.parametrize("seed", range(250))
def test_sound_random_nets(seed):
    _check_case(seed)


@pytest.mark.parametrize("seed", range(20))
def test_sound_random_nets_float32(seed):
    _check_case(1000 + seed, dtype=torch.float32, tol=TOL32)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2000, 3500))
def test_sound_random_nets_slow(seed):
    _check_case(seed, B=6, n_uniform=500, n_corners=300, iterations=20)


@pytest.mark.parametrize("seed", range(30))
def test_intermediate_bounds_contain_preactivations(seed):
    """ibp_bounds(store_intermediate=True): element 0 = box after Normalization; then every ReLU input."""
    model, in_shape, K, bn = random_net(seed, dtype=torch.float64)
    prepare(model, in_shape, bn, seed)
    try:
        lo, hi = random_box(seed, in_shape)
        lb, ub, inter = ibp_bounds(model, lo, hi, store_intermediate=True)
        pts = sample_points(lo, hi, 100, 50, seed)
        x = pts.reshape(-1, *in_shape)
        acts = []
        h = x
        for m in model:
            if isinstance(m, torch.nn.ReLU):
                acts.append(h)
            h = m(h)
            if len(acts) == 0 and m is model[0] and type(m).__name__ == "Normalization":
                acts.insert(0, h)
        n_relu = sum(isinstance(m, torch.nn.ReLU) for m in model)
        assert len(inter) == n_relu + 1
        if type(model[0]).__name__ != "Normalization":
            acts.insert(0, x)
        for (l, u), a in zip(inter, acts, strict=True):
            a = a.reshape(pts.shape[0], pts.shape[1], *a.shape[1:])
            assert bool((a >= l - 1e-9).all()) and bool((a <= u + 1e-9).all())
    finally:
        unfreeze_bn(model)


@pytest.mark.parametrize("seed", range(40))
def test_robust_losses_upper_bound_ce(seed):
    """IBP robust CE and loss-fusion CROWN-IBP are ≥ the CE at every sampled point and ≥ the clean CE."""
    model, in_shape, K, bn = random_net(seed, dtype=torch.float64)
    prepare(model, in_shape, bn, seed)
    try:
        lo, hi = random_box(seed, in_shape)
        B = lo.shape[0]
        y = torch.randint(0, K, (B,), generator=torch.Generator().manual_seed(seed))
        pts = sample_points(lo, hi, 200, 100, seed)
        with torch.no_grad():
            z = model(pts.reshape(-1, *in_shape)).reshape(pts.shape[0], B, K)
            ce = F.cross_entropy(z.reshape(-1, K), y.repeat(pts.shape[0]), reduction="none").reshape(-1, B)
            clean = F.cross_entropy(model((lo + hi) / 2), y, reduction="none")
            worst = torch.maximum(ce.max(0).values, clean)
            lf = loss_fusion_crown_ibp(model, lo, hi, y, reduction="none")
            lb, _ = ibp_bounds(model, lo, hi, margin_spec(y, K, torch.float64))
            ibp_ce = robust_ce_from_margin_bounds(lb, reduction="none")
        assert lf.shape == (B,)
        assert bool((lf >= worst - 1e-9).all()), (lf, worst)
        assert bool((ibp_ce >= worst - 1e-9).all()), (ibp_ce, worst)
    finally:
        unfreeze_bn(model)


def test_relu_shrinkage():
    """relu_shrinkage=1 is plain IBP; s < 1 only lowers upper bounds of unstable neurons (SABR; not sound)."""
    model, in_shape, K, bn = random_net(3, kind="conv", bn="eval")
    model.eval()
    lo, hi = random_box(3, in_shape)
    lb, ub = ibp_bounds(model, lo, hi)
    lb1, ub1 = ibp_bounds(model, lo, hi, relu_shrinkage=1.0)
    torch.testing.assert_close(lb, lb1)
    torch.testing.assert_close(ub, ub1)
    _, _, inter = ibp_bounds(model, lo, hi, store_intermediate=True)
    _, _, inter_s = ibp_bounds(model, lo, hi, store_intermediate=True, relu_shrinkage=0.5)
    torch.testing.assert_close(inter[1][0], inter_s[1][0])  # first ReLU input unaffected
    for (l, u), (ls, us) in zip(inter[2:], inter_s[2:], strict=True):
        assert bool(((us - ls) <= (u - l) + 1e-12).all())


@pytest.mark.parametrize("method", METHODS)
def test_input_validation(method):
    model, in_shape, K, _ = random_net(1, kind="dense", bn="none")
    lo, hi = random_box(1, in_shape)
    with pytest.raises(CTBenchError, match="lower > upper"):
        compute_bounds(model, hi + 1, lo, method)
    with pytest.raises(CTBenchError, match="shape"):
        compute_bounds(model, lo, hi[:, :-1], method)
    with pytest.raises(CTBenchError, match="C must have shape"):
        compute_bounds(model, lo, hi, method, torch.zeros(lo.shape[0] + 1, 1, K, dtype=lo.dtype))
    with pytest.raises(CTBenchError, match="unknown bound method"):
        compute_bounds(model, lo, hi, method + "x")


def test_unsupported_layer_and_unfrozen_bn():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    lo = torch.zeros(2, 3)
    with pytest.raises(CTBenchError, match="Tanh"):
        compute_bounds(net, lo, lo + 1, "IBP")
    bn_net = torch.nn.Sequential(
        torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
    )
    bn_net.train()
    with pytest.raises(CTBenchError, match="clean_forward_and_freeze_bn"):
        compute_bounds(bn_net, lo, lo + 1, "CROWN-IBP")
    with pytest.raises(CTBenchError, match="backend"):
        compute_bounds(bn_net.eval(), lo, lo + 1, "IBP", backend="nope")


def test_conv_back_substitution_matches_autograd():
    """ConvLayer.back (conv_transpose2d, computed output_padding) equals the exact vector-Jacobian product."""
    from ctbench.bounds.layers import ConvLayer

    g = torch.Generator().manual_seed(0)
    configs = [
        dict(k=3, s=1, p=1, d=1, gr=1, h=7),
        dict(k=3, s=2, p=1, d=1, gr=1, h=8),
        dict(k=3, s=2, p=1, d=1, gr=1, h=7),
        dict(k=4, s=3, p=0, d=1, gr=1, h=11),
        dict(k=3, s=2, p=2, d=2, gr=2, h=9),
        dict(k=2, s=2, p=0, d=1, gr=1, h=5),
        dict(k=1, s=2, p=0, d=1, gr=1, h=6),
        dict(k=5, s=2, p=2, d=1, gr=1, h=10),
    ]
    for cfg in configs:
        conv = torch.nn.Conv2d(4, 6, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["gr"]).double()
        layer = ConvLayer(conv)
        x = torch.randn(2, 4, cfg["h"], cfg["h"] + 1, generator=g, dtype=torch.float64, requires_grad=True)
        out = layer.forward(x)
        A = torch.randn(2, 3, *out.shape[1:], generator=g, dtype=torch.float64)
        Ain, d = layer.back(A)
        # A·conv(x) = Ain·x + d for every x
        lhs = torch.einsum("bs...,b...->bs", A, out)
        rhs = torch.einsum("bs...,b...->bs", Ain, x) + d
        torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    valid = torch.nn.Conv2d(2, 3, 3, padding="valid").double()
    layer = ConvLayer(valid)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    out = layer.forward(x)
    A = torch.randn(1, 2, *out.shape[1:], dtype=torch.float64)
    Ain, d = layer.back(A)
    torch.testing.assert_close(
        torch.einsum("bs...,b...->bs", A, out), torch.einsum("bs...,b...->bs", Ain, x) + d
    )
