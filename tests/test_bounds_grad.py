"""Gradients flow through the training bounds (IBP, CROWN-IBP, loss-fusion CROWN-IBP, CROWN) into every
parameter, including BatchNorm affine parameters, with BatchNorm in eval mode and with frozen
clean-batch statistics (where the gradient also flows through the batch statistics)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _bounds_helpers import single_thread_fixture
from torch import nn

from ctbench.bounds import (
    bn_stats_from,
    compute_bounds,
    ibp_bounds,
    loss_fusion_crown_ibp,
    margin_spec,
    robust_ce_from_margin_bounds,
)
from ctbench.nn import Normalization

_single_thread = single_thread_fixture()


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(
        Normalization([0.5, 0.4], [0.3, 0.25]),
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ).to(dtype)


def _ibp_loss(model, lo, hi, y):
    lb, _ = ibp_bounds(model, lo, hi, margin_spec(y, 5, lo.dtype))
    return robust_ce_from_margin_bounds(lb)


def _crown_ibp_loss(model, lo, hi, y):
    lb, _ = compute_bounds(model, lo, hi, "CROWN-IBP", margin_spec(y, 5, lo.dtype), bound_upper=False)
    return robust_ce_from_margin_bounds(lb)


def _crown_loss(model, lo, hi, y):
    lb, ub = compute_bounds(model, lo, hi, "CROWN", margin_spec(y, 5, lo.dtype))
    return robust_ce_from_margin_bounds(lb) + 0.1 * ub.mean()


LOSSES = {
    "IBP": _ibp_loss,
    "CROWN-IBP": _crown_ibp_loss,
    "loss-fusion": loss_fusion_crown_ibp,
    "CROWN": _crown_loss,
}


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_reach_every_parameter(name, bn_mode):
    model = _net()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 2, 8, 8, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    eps = 0.03
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    if bn_mode == "eval":
        model.train()
        model(x)  # non-trivial running statistics
        model.eval()
        loss = LOSSES[name](model, lo, hi, y)
    else:
        model.train()
        with bn_stats_from(model, x):
            loss = LOSSES[name](model, lo, hi, y)
    assert torch.isfinite(loss)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    for pname, gr in zip(params, grads, strict=True):
        assert gr is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(gr).all(), pname
        assert gr.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_gradient_through_clean_batch_statistics():
    """With frozen clean-batch stats the bound's gradient w.r.t. the clean input is non-zero (stats path)."""
    model = _net(torch.float64).train()
    x = torch.rand(6, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.arange(6) % 5
    box = torch.rand(6, 2, 8, 8, dtype=torch.float64)
    with bn_stats_from(model, x):
        loss = _ibp_loss(model, box - 0.01, box + 0.01, y)
    (gx,) = torch.autograd.grad(loss, [x])
    assert gx.abs().sum() > 0


@pytest.mark.parametrize("name", ["IBP", "CROWN-IBP", "loss-fusion"])
def test_gradcheck_float64(name):
    """Finite-difference check of the bound losses w.r.t. a weight and the BN scale (float64, eval BN)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)).double()
    model.train()
    model(torch.randn(16, 3, dtype=torch.float64))
    model.eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    y = torch.tensor([0, 2])
    lo, hi = x - 0.3, x + 0.3
    lin, bn = model[0], model[1]
    w0, g0 = lin.weight.detach().clone(), bn.weight.detach().clone()

    def f(weight, gamma):
        saved = lin.weight, bn.weight
        del lin.weight, bn.weight
        lin.weight, bn.weight = weight, gamma  # plain tensor attributes, read by the bound engine
        try:
            if name == "loss-fusion":
                return loss_fusion_crown_ibp(model, lo, hi, y)
            lb, _ = compute_bounds(model, lo, hi, name, margin_spec(y, 3, torch.float64))
            return F.cross_entropy(F.pad(-lb, (1, 0)), torch.zeros_like(y))
        finally:
            del lin.weight, bn.weight
            lin.weight, bn.weight = saved

    assert torch.autograd.gradcheck(
        f, (w0.requires_grad_(True), g0.requires_grad_(True)), eps=1e-6, atol=1e-5
    )


def _relu_back_case(g, S):
    """Pre-activation bounds (2, 4, 3) with a degenerate (l = u = 0) and an l = 0 neuron (the kinks at
    [0, 0, 0] and [1, 0, 0]), coefficients A and an output gradient for A', each (2, S, 4, 3); float64."""
    l = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    u = l + 2 * torch.rand(2, 4, 3, generator=g, dtype=torch.float64)
    l[0, 0, 0] = u[0, 0, 0] = 0.0  # degenerate neuron
    l[1, 0, 0], u[1, 0, 0] = 0.0, 0.5  # active with l = 0
    A = torch.randn(2, S, 4, 3, generator=g, dtype=torch.float64)
    GA = torch.randn(2, S, 4, 3, generator=g, dtype=torch.float64)
    return A, l, u, GA


def test_relu_back_custom_gradient_matches_autograd():
    """Hand-written backward of the CROWN ReLU step = autograd on the plain formulas; finite at l = u = 0."""
    from ctbench.bounds.layers import batch_dot
    from ctbench.bounds.linear import _ReluBackCROWN, relu_relaxation

    g = torch.Generator().manual_seed(0)
    for S in (1, 3):
        A, l, u, GA = _relu_back_case(g, S)
        Gd = torch.randn(2, S, generator=g, dtype=torch.float64)
        ins = [t.clone().requires_grad_(True) for t in (A, l, u)]
        out, d = _ReluBackCROWN.apply(*ins, False)[:2]
        got = torch.autograd.grad((out * GA).sum() + (d * Gd).sum(), ins)
        ref_ins = [t.clone().requires_grad_(True) for t in (A, l, u)]
        up, icpt, ad = relu_relaxation(ref_ins[1], ref_ins[2])
        An = ref_ins[0].clamp(max=0)
        ref_out = (ref_ins[0] - An) * ad.unsqueeze(1) + An * up.unsqueeze(1)
        ref_d = batch_dot(An, icpt)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(d, ref_d)
        ref = torch.autograd.grad((ref_out * GA).sum() + (ref_d * Gd).sum(), ref_ins)
        for a, b in zip(got, ref, strict=True):
            assert torch.isfinite(a).all()
            mask = torch.ones_like(a, dtype=torch.bool)
            if a.dim() == 3:  # l/u: skip the kinks (l = 0 / u = 0), where subgradients may differ
                mask[0, 0, 0] = mask[1, 0, 0] = False
            torch.testing.assert_close(a[mask], b[mask])


def test_relu_back_cut_point_value_and_gradient_match_autograd():
    """The cut point computed inside the CROWN ReLU step (``with_cut``) = the plain concretization
    ``A·c − |A|·r`` on the ReLU's output box, with autograd's gradients; with a zero cut gradient (the
    cut is not the largest bound of any row) the gradients are those of the step without the cut."""
    from ctbench.bounds.layers import batch_dot
    from ctbench.bounds.linear import _ReluBackCROWN

    g = torch.Generator().manual_seed(1)
    for S in (1, 3):
        A, l, u, GA = _relu_back_case(g, S)
        Gd, Gc = torch.randn(2, 2, S, generator=g, dtype=torch.float64)
        for gc in (Gc, torch.zeros_like(Gc)):
            ins = [t.clone().requires_grad_(True) for t in (A, l, u)]
            out, d, cut = _ReluBackCROWN.apply(*ins, True)
            got = torch.autograd.grad((out * GA).sum() + (d * Gd).sum() + (cut * gc).sum(), ins)
            ref_ins = [t.clone().requires_grad_(True) for t in (A, l, u)]
            ref_out, ref_d = _ReluBackCROWN.apply(*ref_ins, False)[:2]
            lo, hi = ref_ins[1].clamp(min=0), ref_ins[2].clamp(min=0)
            c, r = (hi + lo) / 2, (hi - lo) / 2
            ref_cut = batch_dot(ref_ins[0], c) - batch_dot(ref_ins[0].abs(), r)
            torch.testing.assert_close(cut, ref_cut, rtol=1e-12, atol=1e-12)
            ref = torch.autograd.grad((ref_out * GA).sum() + (ref_d * Gd).sum() + (ref_cut * gc).sum(), ref_ins)
            for a, b in zip(got, ref, strict=True):
                mask = torch.ones_like(a, dtype=torch.bool)
                if a.dim() == 3:  # l/u: skip the kinks (l = 0 / u = 0), where subgradients may differ
                    mask[0, 0, 0] = mask[1, 0, 0] = False
                torch.testing.assert_close(a[mask], b[mask], rtol=1e-12, atol=1e-12)
