"""Certified training methods (ibp, crown_ibp, sabr, taps, staps, mtl_ibp):
short training runs through ``TrainingMethod.step``, the methods' defining invariants, bounds on the
clean loss, and gradient accumulation in configurations whose randomness cannot change the result."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ctbench.bounds import (
    clean_forward_and_freeze_bn,
    ibp_bounds,
    loss_fusion_crown_ibp,
    margin_spec,
    robust_ce_from_margin_bounds,
    unfreeze_bn,
)
from ctbench.bounds.ibp import ibp_forward
from ctbench.bounds.layers import parse_model
from ctbench.bounds.linear import backsub_lower
from ctbench.bounds.spec import loss_fusion_terms
from ctbench.config import resolve
from ctbench.data import load_dataset, make_loader
from ctbench.errors import CTBenchError
from ctbench.methods import create_method, get_method, input_box, method_names
from ctbench.methods.sabr import small_box
from ctbench.methods.taps import GradScale, RectifiedLinearLink, latent_pivots, margins, split_classifier
from ctbench.models import create_model

CERTIFIED = ["ibp", "crown_ibp", "sabr", "taps", "staps", "mtl_ibp"]
FAST = {"attack_steps": 3, "attack_restarts": 1}


@pytest.fixture(scope="module")
def batches():
    ds = load_dataset("mnist_mini", "train")
    it = iter(make_loader(ds, 16, shuffle=True, seed=0))
    return [next(it) for _ in range(3)]


def _setup(method, overrides=None, dtype=torch.float32, seed=0):
    cfg = resolve(("mnist_mini", "0.1"), method, {**FAST, **(overrides or {})}, seed=seed)
    model = create_model("cnn_small", "mnist_mini", init=cfg["init"], seed=seed).to(dtype)
    return cfg, model, create_method(cfg)


def _grads(model):
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _loss_and_grads(method, model, x, y, eps, seed=0):
    """robust_loss as in a training step (frozen clean-batch BN): value, robust_correct, parameter grads."""
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        clean_forward_and_freeze_bn(model, x)
        lower, upper = input_box(x, eps)
        torch.manual_seed(seed)
        loss, correct = method.robust_loss(model, x, y, eps, lower, upper)
        loss.backward()
    finally:
        unfreeze_bn(model)
    return float(loss.detach()), correct, _grads(model)


def _assert_grads_close(a, b, rtol=1e-7, atol=1e-9):
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol)


def test_registered_and_certified():
    names = method_names()
    for name in CERTIFIED:
        assert name in names and get_method(name).certified
        assert get_method(name).separable == (name not in ("taps", "staps"))  # their batch-mean product


# ---------------------------------------------------------------------------------------------------
# short training runs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CERTIFIED)
def test_short_run_finite_and_robust_loss_decreases(batches, name):
    """Three passes over 3 fixed batches of 16 at ε = 0.03 (after the ramp): every loss and gradient is finite
    and the mean robust loss of the last pass is below that of the first (all losses start far above
    their minimum with the IBP initialization + BatchNorm, so this is a large, non-flaky effect)."""
    cfg, model, method = _setup(name, {"classifier_size": 2} if name == "taps" else None)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(3):
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            out = method.step(model, x, y, 0.03, optimizer=opt, warmup=False)
            assert all(math.isfinite(v) for v in (out.loss, out.nat_loss, out.rob_loss, out.reg_loss)), out
            assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            losses.append(out.rob_loss)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.9 * first, losses


@pytest.mark.parametrize("name", CERTIFIED)
def test_warmup_step_adds_finite_regularizer(batches, name):
    """During the ε ramp (ε = 0.05 of train ε 0.2) certified methods add Shi et al.'s regularizer, from the
    bounds the method stored (or the base's own IBP pass): positive and finite."""
    x, y = batches[0]
    cfg, model, method = _setup(name)
    torch.manual_seed(0)
    out = method.step(model, x, y, 0.05, warmup=True)
    assert math.isfinite(out.reg_loss) and out.reg_loss > 0 and math.isfinite(out.rob_loss)


# ---------------------------------------------------------------------------------------------------
# IBP / CROWN-IBP
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ibp", "crown_ibp"])
@pytest.mark.parametrize("train_mode", [True, False])
def test_bound_losses_upper_bound_clean_ce(batches, name, train_mode):
    """IBP's and CROWN-IBP's robust losses are upper bounds of the worst-case CE over the box, which is
    at least the clean CE (x is in the box); at ε = 0 (a point box) both bounds are exact = clean CE."""
    x, y = batches[0]
    x = x.double()
    cfg, model, method = _setup(name, dtype=torch.float64)
    model.train(train_mode)
    try:
        clean = F.cross_entropy(clean_forward_and_freeze_bn(model, x) if train_mode else model(x), y).detach()
        for eps in (0.0, 1e-4, 0.02):
            lower, upper = input_box(x, eps)
            with torch.no_grad():
                rob, _ = method.robust_loss(model, x, y, max(eps, 1e-12), lower, upper)
            if eps == 0:
                torch.testing.assert_close(rob, clean.detach(), rtol=1e-9, atol=1e-9)
            assert float(rob) >= float(clean) - 1e-9
    finally:
        unfreeze_bn(model)


def _naive_loss_fusion(model, lower, upper, y):
    """The textbook formula without rescaling (Xu et al. 2020; original-implementation.md §2), as reference."""
    layers = parse_model(model)
    c_in, r_in = (upper + lower) * 0.5, (upper - lower) * 0.5
    C = margin_spec(y, 10, dtype=lower.dtype)
    c, r, relu_bounds, _ = ibp_forward(layers, c_in, r_in, C)
    l, u = c - r, c + r
    el, eu = torch.exp(-l), torch.exp(-u)
    slope = (eu - el) / (u - l + 1e-10)
    offset = 1.0 + (el - slope * l).sum(1)
    C_lf = -(slope.unsqueeze(-1) * C).sum(1, keepdim=True)
    lb = backsub_lower(layers, len(layers), C_lf, relu_bounds, c_in, r_in).squeeze(1)
    return torch.log(torch.clamp(offset - lb, min=1e-5))


def test_stable_loss_fusion_equals_bounds_module_and_never_overflows(batches):
    """The rescaled loss fusion equals the textbook formula (value and gradient, float64, where the latter
    is finite), ``loss_fusion_crown_ibp`` is it, and it stays finite where ``e^{−l}`` overflows in float32."""
    x, y = batches[0]
    _, model, _ = _setup("crown_ibp", dtype=torch.float64)
    clean_forward_and_freeze_bn(model, x.double())
    try:
        lower, upper = input_box(x.double(), 0.005)
        ref = _naive_loss_fusion(model, lower, upper, y)
        ours, lb_ibp, bounds = loss_fusion_terms(model, lower, upper, y)
        torch.testing.assert_close(loss_fusion_crown_ibp(model, lower, upper, y, reduction="none"), ours)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
        g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()), retain_graph=True)
        g_ours = torch.autograd.grad(ours.sum(), list(model.parameters()), retain_graph=True)
        _assert_grads_close(g_ours, g_ref, rtol=1e-8, atol=1e-10)
        C = margin_spec(y, 10, dtype=torch.float64)
        torch.testing.assert_close(lb_ibp, ibp_bounds(model, lower, upper, C)[0])
        assert len(bounds) == 1 + 3  # input box + 3 ReLU layers of cnn_small
    finally:
        unfreeze_bn(model)
    _, model32, _ = _setup("crown_ibp")
    clean_forward_and_freeze_bn(model32, x)
    try:
        lower, upper = input_box(x, 0.1)
        with torch.no_grad():
            ours, lb_ibp, _ = loss_fusion_terms(model32, lower, upper, y)
            assert float(lb_ibp.min()) < -89  # e^{-l} overflows float32 here
            clean = F.cross_entropy(model32(x), y, reduction="none")
        assert torch.isfinite(ours).all() and (ours >= clean).all()
    finally:
        unfreeze_bn(model32)


def test_crown_ibp_eval_certifies_at_least_ibp(batches):
    """Evaluation certifies with max(CROWN-IBP, IBP) margin bounds: a superset of the IBP-certified
    samples and a subset of the correctly classified ones (soundness at the centre)."""
    x, y = batches[0]
    cfg, model, method = _setup("crown_ibp", dtype=torch.float64)
    model.eval()
    x = x.double()
    lower, upper = input_box(x, 1e-3)
    with torch.no_grad():
        _, cert = method.robust_loss(model, x, y, 1e-3, lower, upper)
        lb_ibp, _ = ibp_bounds(model, lower, upper, margin_spec(y, 10, dtype=torch.float64))
        correct = model(x).argmax(1) == y
    assert bool((cert >= (lb_ibp > 0).all(1)).all()) and bool((cert <= correct).all())


# ---------------------------------------------------------------------------------------------------
# SABR
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lam=st.floats(0.0, 1.0), eps=st.floats(0.0, 0.5))
def test_small_box_properties(seed, lam, eps):
    """SABR's small box lies inside the ε-box, has radius λ·(u − l)/2 and contains x_adv whenever it can;
    λ = 1 gives the ε-box (up to rounding), λ = 0 the single point x_adv."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    lower, upper = input_box(x, eps)
    x_adv = lower + (upper - lower) * torch.rand(x.shape, generator=g, dtype=torch.float64)
    lo, hi = small_box(x_adv, lower, upper, lam)
    assert bool((lo >= lower).all() and (hi <= upper).all() and (lo <= hi).all())
    torch.testing.assert_close(hi - lo, lam * (upper - lower), rtol=1e-9, atol=1e-12)
    half = (upper - lower) * (0.5 * lam)
    fits = (x_adv - lower >= half) & (upper - x_adv >= half)
    assert bool(((lo <= x_adv) & (x_adv <= hi) | ~fits).all())
    lo1, hi1 = small_box(x_adv, lower, upper, 1.0)
    torch.testing.assert_close(lo1, lower, rtol=0, atol=1e-12)
    torch.testing.assert_close(hi1, upper, rtol=0, atol=1e-12)
    lo0, hi0 = small_box(x_adv, lower, upper, 0.0)
    assert torch.equal(lo0, x_adv) and torch.equal(hi0, x_adv)


def test_small_box_rejects_bad_lambda():
    x = torch.zeros(1, 2)
    with pytest.raises(CTBenchError):
        small_box(x, x, x, 1.5)


def test_sabr_lambda_one_is_ibp_and_lambda_zero_is_pgd(batches):
    """λ = 1: the small box is the ε-box, so SABR's loss and gradients are IBP's. λ = 0: IBP of a point
    box is the forward pass at the adversarial point, i.e. PGD training with the same attack (seeded)."""
    x, y = batches[0]
    x = x[:16].double()
    y = y[:16]
    extra = {"attack_step_size": 0.3}
    _, model, sabr1 = _setup("sabr", {**extra, "eps_shrink": 1.0}, dtype=torch.float64)
    _, _, ibp = _setup("ibp", extra, dtype=torch.float64)
    l_s, c_s, g_s = _loss_and_grads(sabr1, model, x, y, 0.05)
    l_i, c_i, g_i = _loss_and_grads(ibp, model, x, y, 0.05)
    assert l_s == pytest.approx(l_i, rel=1e-12) and torch.equal(c_s, c_i)
    _assert_grads_close(g_s, g_i)
    _, _, sabr0 = _setup("sabr", extra, dtype=torch.float64)
    sabr0.eps_shrink = 0.0  # the config schema requires λ > 0; the degenerate case is set directly
    _, _, pgd = _setup("pgd", extra, dtype=torch.float64)
    l_0, c_0, g_0 = _loss_and_grads(sabr0, model, x, y, 0.05, seed=7)
    l_p, c_p, g_p = _loss_and_grads(pgd, model, x, y, 0.05, seed=7)
    assert l_0 == pytest.approx(l_p, rel=1e-10) and torch.equal(c_0, c_p)
    _assert_grads_close(g_0, g_p, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# TAPS / STAPS
# ---------------------------------------------------------------------------------------------------


def test_split_classifier_matches_original_block_sizes():
    """CNN7 has 21 layers; the original's block splits "17 4", "10 11", "4 17" are classifier sizes 1, 3, 5
    (Flatten stays in the IBP part); size 0 leaves only the last Linear to the PGD part."""
    model = create_model("cnn7", "mnist")
    for size, n_features in ((0, 20), (1, 17), (3, 10), (5, 4), (6, 0)):
        features, classifier = split_classifier(model, size)
        assert (len(features), len(features) + len(classifier)) == (n_features, 21)
        assert sum(isinstance(m, torch.nn.ReLU) for m in classifier) == size
    with pytest.raises(CTBenchError):
        split_classifier(model, 7)


def test_gradient_link_and_grad_scale():
    """The link is the identity forward; backward sends the full gradient to the bound a pivot sits on,
    a linear ramp within c·(u − l) of it, nothing from the middle; summed over pivots. GradScale × w."""
    lower, upper = torch.zeros(1, 3, requires_grad=True), torch.ones(1, 3, requires_grad=True)
    pts = torch.tensor([[[1.0, 0.75, 0.5], [0.0, 0.25, 0.9]]])  # (b=1, S=2, 3)
    out = RectifiedLinearLink.apply(lower, upper, pts, 0.5, 1e-5)
    assert torch.equal(out, pts)
    out.sum().backward()
    torch.testing.assert_close(upper.grad, torch.tensor([[1.0, 0.5, 0.0 + 0.8]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(lower.grad, torch.tensor([[1.0, 0.5, 0.0]]), atol=1e-4, rtol=0)
    v = torch.tensor([2.0], requires_grad=True)
    y = GradScale.apply(v * v, 3.0)
    assert float(y.detach()) == 4.0
    y.backward()
    assert float(v.grad) == 12.0


def _taps(name="taps", overrides=None, size=None):
    _, model, method = _setup(name, overrides, dtype=torch.float64)
    if size is not None:
        method.classifier_size = size
    return model, method


def test_taps_with_empty_pgd_part_equals_ibp(batches):
    """Classifier size 0: the PGD part is the last Linear layer alone, where PGD reaches the exact
    minimizing vertex and the gradient link routes the whole gradient to the bound it sits on, so the TAPS
    estimate is IBP's bound. Without the IBP multiplier and w = 1, loss and gradients are IBP's; with
    it, the default loss is the original's product of batch means (mean_i L_IBP,i)², loss and gradients
    as a hand-written one, and taps_loss: per_sample gives mean_i L_IBP,i² — different on any batch whose
    samples' losses differ (Jensen)."""
    x, y = batches[0]
    x, y = x[:16].double(), y[:16]
    model, taps = _taps(overrides={"taps_grad_scale": 1.0}, size=0)
    taps.ibp_multiplier = False
    _, _, ibp = _setup("ibp", dtype=torch.float64)
    l_t, c_t, g_t = _loss_and_grads(taps, model, x, y, 0.05)
    l_i, c_i, g_i = _loss_and_grads(ibp, model, x, y, 0.05)
    assert l_t == pytest.approx(l_i, rel=1e-9) and torch.equal(c_t, c_i)
    _assert_grads_close(g_t, g_i, rtol=1e-6, atol=1e-8)
    taps.ibp_multiplier = True
    assert taps.loss_form == "batch_mean" and not taps.separable
    l_m, _, g_m = _loss_and_grads(taps, model, x, y, 0.05)
    model.train()
    model.zero_grad(set_to_none=True)
    clean_forward_and_freeze_bn(model, x)
    lower, upper = input_box(x, 0.05)
    ce = robust_ce_from_margin_bounds(ibp_bounds(model, lower, upper, margin_spec(y, 10, torch.float64))[0], "none")
    (ce.mean() * ce.mean()).backward()  # the original: _GradExpander(CE_taps) * CE_box on batch means, w = 1
    unfreeze_bn(model)
    assert l_m == pytest.approx(float(ce.detach().mean() ** 2), rel=1e-9)
    _assert_grads_close(g_m, _grads(model), rtol=1e-6, atol=1e-8)
    _, per_sample = _taps(overrides={"taps_grad_scale": 1.0, "taps_loss": "per_sample"}, size=0)
    assert per_sample.separable
    l_p, _, _ = _loss_and_grads(per_sample, model, x, y, 0.05)
    assert l_p == pytest.approx(float((ce.detach() ** 2).mean()), rel=1e-9)
    assert l_p > l_m * (1 + 1e-3)  # the two forms differ on this batch


def test_taps_during_ramp_is_ibp(batches):
    """While ε ramps up TAPS (and STAPS on its small box) trains with plain IBP (original disable_TAPS)."""
    x, y = batches[0]
    x, y = x[:16].double(), y[:16]
    model, taps = _taps()
    taps.ramp_active = True
    _, _, ibp = _setup("ibp", dtype=torch.float64)
    l_t, c_t, g_t = _loss_and_grads(taps, model, x, y, 0.05)
    l_i, c_i, g_i = _loss_and_grads(ibp, model, x, y, 0.05)
    assert l_t == pytest.approx(l_i, rel=1e-12) and torch.equal(c_t, c_i)
    _assert_grads_close(g_t, g_i)


def test_taps_estimate_is_between_ibp_bound_and_sampled_margins(batches):
    """The TAPS margin estimate comes from real points of the latent box: never below IBP's sound lower
    bound and never above the margin at the pivots' own random starts; the gradient scale w multiplies
    the TAPS gradient exactly (without the IBP multiplier)."""
    x, y = batches[0]
    x, y = x[:16].double(), y[:16]
    model, taps = _taps(size=1)
    model.train()
    clean_forward_and_freeze_bn(model, x)
    try:
        features, classifier = split_classifier(model, 1)
        lower, upper = input_box(x, 0.05)
        with torch.no_grad():
            lat_l, lat_u = ibp_bounds(features, lower, upper)
            C = margin_spec(y, 10, dtype=torch.float64)
            lb = ibp_bounds(classifier, lat_l, lat_u, C)[0]
            torch.manual_seed(3)
            est = margins(classifier, latent_pivots(classifier, lat_l, lat_u, C, steps=3, restarts=1), C)
            torch.manual_seed(3)
            start = lat_l.unsqueeze(1) + (lat_u - lat_l).unsqueeze(1) * torch.rand(
                16, 9, *lat_l.shape[1:], dtype=torch.float64
            )
            start_m = margins(classifier, start, C)
        assert bool((est >= lb - 1e-9).all()) and bool((est <= start_m + 1e-9).all())
        assert bool((est < start_m - 1e-6).any())  # the search does improve on the random start
    finally:
        unfreeze_bn(model)
    taps.ibp_multiplier = False
    grads = {}
    for w in (1.0, 2.5):
        taps.grad_scale = w
        grads[w] = _loss_and_grads(taps, model, x, y, 0.05, seed=5)
    assert grads[1.0][0] == pytest.approx(grads[2.5][0], rel=1e-12)
    _assert_grads_close([2.5 * g for g in grads[1.0][2]], grads[2.5][2], rtol=1e-9, atol=1e-12)


def test_staps_lambda_one_is_taps(batches):
    """STAPS = TAPS on SABR's small box; with λ = 1 the small box is the ε-box, so STAPS is TAPS
    (same seed for the latent search: the input search consumes random numbers first, hence re-seeding)."""
    x, y = batches[0]
    x, y = x[:16].double(), y[:16]
    model, staps = _taps("staps", {"eps_shrink": 1.0}, size=1)
    _, taps = _taps("taps", {"taps_grad_scale": staps.grad_scale}, size=1)
    lower, upper = input_box(x, 0.05)
    clean_forward_and_freeze_bn(model, x)
    try:
        torch.manual_seed(0)
        box = staps.adversarial_small_box(model, x, y, lower, upper)
        torch.manual_seed(1)
        l_s, c_s = staps.taps_loss(model, *box, y)
        torch.manual_seed(1)
        l_t, c_t = taps.taps_loss(model, lower, upper, y)
    finally:
        unfreeze_bn(model)
    torch.testing.assert_close(l_s, l_t, rtol=1e-12, atol=0)
    assert torch.equal(c_s, c_t)


@pytest.mark.parametrize("name", ["staps", "taps", "sabr"])
def test_grad_accumulation_equals_full_batch_in_deterministic_configs(batches, name):
    """Accumulated chunks with full-batch BN statistics reproduce the full-batch step. STAPS has two random
    stages (input and latent search) whose draws interleave differently when chunked, so the check uses
    λ = 1 (the box does not depend on the attack) and classifier size 0 (the latent search always ends at
    the same vertex) with 3 restarts; likewise TAPS and SABR."""
    x, y = batches[0]
    x, y = x[:12].double(), y[:12]
    extra = {"fast_reg": 0.0, "attack_restarts": 3, "attack_steps": 4}
    if name != "taps":
        extra["eps_shrink"] = 1.0
    model, method = _taps(name, extra, size=0 if name != "sabr" else None)
    twin = copy.deepcopy(model)
    results = []
    for m, accu in ((model, None), (twin, 5)):
        torch.manual_seed(123)
        out = method.step(m, x, y, 0.1, accumulation_batch=accu)
        results.append((out, _grads(m)))
    (full, g_full), (acc, g_acc) = results
    assert acc.rob_loss == pytest.approx(full.rob_loss, rel=1e-9) and acc.rob_correct == full.rob_correct
    _assert_grads_close(g_acc, g_full, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------------
# MTL-IBP
# ---------------------------------------------------------------------------------------------------


def _variant(alpha, overrides=None):
    _, model, method = _setup("mtl_ibp", {"ibp_coef": alpha, **(overrides or {})}, dtype=torch.float64)
    return model, method


def test_alpha_one_is_ibp_and_alpha_zero_is_pgd(batches):
    """α = 1 leaves only the IBP term (loss and gradients equal IBP's); α = 0 only the PGD term, equal to
    PGD training under the same seed (the IBP pass draws no random numbers)."""
    x, y = batches[0]
    x, y = x[:16].double(), y[:16]
    model, one = _variant(1.0)
    _, _, ibp = _setup("ibp", dtype=torch.float64)
    l_m, _, g_m = _loss_and_grads(one, model, x, y, 0.05)
    l_i, _, g_i = _loss_and_grads(ibp, model, x, y, 0.05)
    assert l_m == pytest.approx(l_i, rel=1e-10)
    _assert_grads_close(g_m, g_i, rtol=1e-7, atol=1e-9)
    _, zero = _variant(0.0)
    _, _, pgd = _setup("pgd", {"attack_steps": zero.attack_steps}, dtype=torch.float64)
    l_z, c_z, g_z = _loss_and_grads(zero, model, x, y, 0.05, seed=11)
    l_p, c_p, g_p = _loss_and_grads(pgd, model, x, y, 0.05, seed=11)
    assert l_z == pytest.approx(l_p, rel=1e-10) and torch.equal(c_z, c_p)
    _assert_grads_close(g_z, g_p, rtol=1e-7, atol=1e-9)


def test_mtl_ibp_attack_box_is_scaled(batches, monkeypatch):
    """The PGD part attacks inside clamp(x ∓ s·ε, 0, 1) (attack range scale s); IBP uses the ε-box."""
    x, y = batches[0]
    x, y = x[:8].double(), y[:8]
    model, method = _variant(0.5, {"attack_eps_scale": 2.0})
    seen = {}

    def fake_attack(model_, x_, y_, lower, upper, **kw):
        seen["box"] = (lower, upper)
        return x_

    monkeypatch.setattr(method, "attack", fake_attack)
    _loss_and_grads(method, model, x, y, 0.05)
    for got, want in zip(seen["box"], input_box(x, 0.1), strict=True):
        assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------------
# the training loop end to end
# ---------------------------------------------------------------------------------------------------

TINY = {
    "epochs": 3,
    "eps_end_epoch": 1,
    "lr_milestones": [2],
    "batch_size": 32,
    "test_batch_size": 64,
    "attack_steps": 1,
    "attack_restarts": 1,
    "model": "cnn_small",
}


def _train_tiny(tmp_path, name):
    from ctbench.training import TrainOptions, train

    extra = {"classifier_size": 1} if name == "taps" else {}
    cfg = resolve(("mnist_mini", "0.1"), name, {**TINY, **extra}, seed=0)
    summary = train(cfg, tmp_path, TrainOptions(max_steps=2, subset=64, show_progress=False))
    assert summary["status"] == "done" and (tmp_path / "model.pt").is_file()
    for row in summary["history"]:
        assert all(
            math.isfinite(row[k]) for k in ("train_rob_loss", "train_reg_loss", "val_loss", "val_rob_acc")
        )
    return summary


def test_taps_through_the_training_loop(tmp_path):
    """The loop runs TAPS through the ε ramp (IBP fallback, warm-up regularizer) and after it (TAPS loss,
    TAPS-estimated validation accuracy in eval mode with population statistics)."""
    _train_tiny(tmp_path, "taps")


@pytest.mark.slow
@pytest.mark.parametrize("name", CERTIFIED)
def test_every_certified_method_through_the_training_loop(tmp_path, name):
    _train_tiny(tmp_path, name)


@pytest.mark.parametrize("form", ["batch_mean", "per_sample"])
def test_taps_under_gradient_accumulation(batches, form, caplog, monkeypatch):
    """The batch-mean product is not a per-sample mean: with grad_accu_batch the base computes it on the
    full batch (a warning says so), so loss and gradients equal the unchunked step; the per-sample form
    accumulates chunk by chunk and is exact as well."""
    # latent-search starts at the box centre: chunks would draw random starts in another order
    monkeypatch.setattr(torch, "rand_like", lambda t, **kw: torch.full_like(t, 0.5, **kw))
    x, y = batches[0]
    x, y = x[:12].double(), y[:12]
    results = []
    for accu in (None, 5):
        model, taps = _taps(overrides={"taps_loss": form}, size=1)
        torch.manual_seed(11)
        model.zero_grad(set_to_none=True)
        out = taps.step(model, x, y, 0.05, accumulation_batch=accu)
        results.append((out.rob_loss, _grads(model)))
    (l_full, g_full), (l_acc, g_acc) = results
    if form == "batch_mean":
        assert "computed on the full batch of 12" in caplog.text
        assert l_acc == l_full
        _assert_grads_close(g_full, g_acc, rtol=0, atol=0)
    else:
        assert "full batch" not in caplog.text
        assert l_acc == pytest.approx(l_full, rel=1e-9)
        _assert_grads_close(g_full, g_acc, rtol=1e-6, atol=1e-9)


def test_unknown_taps_loss_form_is_an_error():
    with pytest.raises(Exception, match="taps_loss"):
        _setup("taps", {"taps_loss": "sum"})


def test_taps_warns_once_when_the_classifier_is_the_whole_network(batches, caplog):
    """classifier_size = the model's number of ReLU layers (Table 6's 3 on a 3-ReLU cnn_small) leaves no IBP
    part: the estimate is a PGD attack on the input box. Sound, but rarely meant: one warning says so."""
    x, y = batches[0]
    x, y = x[:8].double(), y[:8]
    model, taps = _taps(size=3)
    with caplog.at_level("WARNING", logger="ctbench.methods.taps"):
        for _ in range(2):
            _loss_and_grads(taps, model, x, y, 0.05)
    warned = [r for r in caplog.records if "every ReLU layer" in r.getMessage()]
    assert len(warned) == 1
    caplog.clear()
    model, taps = _taps(size=1)
    with caplog.at_level("WARNING", logger="ctbench.methods.taps"):
        _loss_and_grads(taps, model, x, y, 0.05)
    assert not [r for r in caplog.records if "every ReLU layer" in r.getMessage()]
