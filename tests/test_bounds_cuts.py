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
