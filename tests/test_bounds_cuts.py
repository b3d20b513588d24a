"""CTBench's CROWN-IBP "cut points" (``backward_deeppoly(use_intermediate=True)``): the partially
back-substituted expression is also concretized on every layer's IBP box and the tightest value kept.

Checked on random conv/dense nets (BatchNorm in eval and frozen-train regimes): the result is sound
(below every sampled value), never looser than IBP or than plain CROWN-IBP, and strictly tighter than
both on a good share of the nets; the same for the loss-fusion loss."""

import pytest
import torch
import torch.nn.functional as F
from _bounds_helpers import outputs_at, prepare, random_box, random_net, random_spec, sample_points

from ctbench.bounds import compute_bounds, loss_fusion_crown_ibp, unfreeze_bn

SEEDS = range(60)


def _case(seed):
    model, in_shape, K, bn = random_net(seed)
    model = prepare(model, in_shape, bn, seed)
    lo, hi = random_box(seed, in_shape)
    return model, lo, hi, K


def test_cut_points_are_sound_and_never_looser():
    strictly_tighter = 0
    for seed in SEEDS:
        model, lo, hi, K = _case(seed)
        try:
            C = random_spec(seed, lo.shape[0], K, "margin" if seed % 2 else "random")
            with torch.no_grad():
                ibp = compute_bounds(model, lo, hi, "IBP", C)[0]
                plain = compute_bounds(model, lo, hi, "CROWN-IBP", C, cut_points=False)[0]
                cut, cut_ub = compute_bounds(model, lo, hi, "CROWN-IBP", C)
                vals = outputs_at(model, C, sample_points(lo, hi, seed=seed))
        finally:
            unfreeze_bn(model)
        best = torch.maximum(ibp, plain)
        assert bool((cut >= best - 1e-9 * (1 + best.abs())).all()), seed
        assert bool((cut.unsqueeze(0) <= vals + 1e-9 * (1 + vals.abs())).all()), seed  # sound lower bound
        assert bool((cut_ub.unsqueeze(0) >= vals - 1e-9 * (1 + vals.abs())).all()), seed  # and upper bound
        strictly_tighter += bool((cut > best + 1e-6).any())
    assert strictly_tighter >= 5, strictly_tighter


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_loss_fusion_with_cut_points_is_a_tighter_upper_bound_of_the_ce(seed):
    model, lo, hi, K = _case(seed)
    try:
        y = torch.randint(0, K, (lo.shape[0],), generator=torch.Generator().manual_seed(seed))
        with_cuts = loss_fusion_crown_ibp(model, lo, hi, y, reduction="none")
        plain = loss_fusion_crown_ibp(model, lo, hi, y, reduction="none", cut_points=False)
        pts = sample_points(lo, hi, seed=seed)
        with torch.no_grad():
            z = outputs_at(model, None, pts)  # (N, B, K)
            ce = F.cross_entropy(z.flatten(0, 1), y.repeat(z.shape[0]), reduction="none").reshape(z.shape[:2])
        assert bool((with_cuts <= plain + 1e-9 * (1 + plain.abs())).all())
        assert bool((with_cuts >= ce.max(0).values - 1e-9).all())  # still bounds the worst-case CE
        with_cuts.mean().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    finally:
        unfreeze_bn(model)


def _all_layer_cuts(model, lo, hi, C):
    """Reference: concretize at the input box of *every* layer (as the original code), plain loop."""
    from ctbench.bounds.layers import ReLULayer, batch_dot, parse_model
    from ctbench.bounds.linear import relu_back

    layers = parse_model(model)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    boxes, relu_bounds = [], {}  # the IBP box of every layer's input; pre-activation bounds of each ReLU
    for i, layer in enumerate(layers):
        boxes.append((c, r))
        if isinstance(layer, ReLULayer):
            relu_bounds[i] = (c - r, c + r)
            lo_i, hi_i = torch.relu(c - r), torch.relu(c + r)
            c, r = (hi_i + lo_i) / 2, (hi_i - lo_i) / 2
        else:
            c, r = layer.ibp(c, r)
    A, d_total, best = C, torch.zeros(C.shape[:2], dtype=C.dtype), None
    for i in range(len(layers) - 1, -1, -1):
        if isinstance(layers[i], ReLULayer):
            A, d = relu_back(A, *relu_bounds[i])
        else:
            A, d = layers[i].back(A)
        d_total = d_total if d is None else d_total + d
        c, r = boxes[i]
        cut = batch_dot(A, c) - batch_dot(A.abs(), r) + d_total
        best = cut if best is None else torch.maximum(best, cut)
    return best


def test_relu_output_cuts_equal_cuts_at_every_layer():
    """Cuts only at ReLU outputs (the implementation) give the same bound as cuts at every layer."""
    for seed in range(0, 120, 2):
        model, lo, hi, K = _case(seed)
        try:
            C = random_spec(seed, lo.shape[0], K, "margin")
            with torch.no_grad():
                ours = compute_bounds(model, lo, hi, "CROWN-IBP", C, bound_upper=False)[0]
                ref = _all_layer_cuts(model, lo, hi, C)
        finally:
            unfreeze_bn(model)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12, msg=f"seed {seed}")


def test_cut_points_refuse_alpha_slopes():
    """Cut points belong to CROWN-IBP's adaptive relaxation; asking for them with alpha slopes is an error."""
    from ctbench.bounds.layers import parse_model
    from ctbench.bounds.linear import backsub_lower, intermediate_bounds

    model, lo, hi, K = _case(1)
    try:
        layers = parse_model(model)
        c, r = (hi + lo) / 2, (hi - lo) / 2
        relu_bounds, _ = intermediate_bounds(layers, c, r)
        with pytest.raises(ValueError, match="alpha slopes"):
            backsub_lower(layers, len(layers), random_spec(1, lo.shape[0], K, "margin"), relu_bounds, c, r,
                          alphas={}, cut_points=True)
    finally:
        unfreeze_bn(model)
