"""auto_LiRPA adapter (``ctbench.bounds.lirpa``): cross-checks of the native engine against auto_LiRPA.

auto_LiRPA (Xu et al. 2020) is the independent reference: on CNN-shaped nets (Normalization, convs,
BatchNorm, Linear) the native IBP / CROWN-IBP / CROWN bounds and loss-fusion CROWN-IBP loss must equal
auto_LiRPA's up to floating-point rounding. Tolerances: float32 ``atol = 1e-4 * scale, rtol = 1e-4``
(scale = 1 + max |bound|), float64 ``1e-9 * scale``. Observed max |differences| (2026-11, torch 2.14.1,
3 seeds x {no C, random C, margin C}): float32 IBP 9.5e-7, CROWN-IBP 8.3e-7, CROWN 3.4e-7 (relative to
the bound scale <= 2.4e-7); float64 <= 2.7e-15; train-mode BN with frozen clean-batch statistics
1.5e-5 (float32) / 2.1e-14 (float64); loss fusion without autograd 4.8e-7 (float32) / 2.9e-11 (float64,
the chord denominators' 1e-10 vs 1e-20 guards). With autograd, auto_LiRPA's loss-fusion bound is
8e-5 to 3.3e-4 nats looser (its exp chord slope is clamped to >= 1e-6 when it requires grad).

Everything except the missing-package test is skipped when auto_LiRPA is not installed.
"""

from __future__ import annotations

import functools
import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctbench.bounds import (
    clean_forward_and_freeze_bn,
    compute_bounds,
    lirpa,
    lirpa_compat,
    loss_fusion_crown_ibp,
    margin_spec,
    unfreeze_bn,
)
from ctbench.errors import CTBenchError
from ctbench.nn import Normalization

HAVE_LIRPA = importlib.util.find_spec("auto_LiRPA") is not None
needs_lirpa = pytest.mark.skipif(
    not HAVE_LIRPA,
    reason="auto_LiRPA not installed (pip install --no-deps auto-lirpa==0.3 && pip install appdirs packaging)",
)
K = 10
METHODS = ["IBP", "CROWN-IBP", "CROWN"]
#: auto_LiRPA's CROWN-IBP has no cut points: compare with them off (they are tested in test_bounds_cuts.py).
PLAIN = {"CROWN-IBP": {"cut_points": False}}
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def make_cnn(seed: int, dtype=torch.float32) -> nn.Sequential:
    """Small CNN in ctbench's layer vocabulary with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        Normalization([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]),
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, K),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.to(dtype).eval()


@functools.cache
def shared_cnn(seed: int, dtype=torch.float32) -> nn.Sequential:
    """``make_cnn`` shared by read-only tests, so the adapter's cached BoundedModules are reused."""
    return make_cnn(seed, dtype)


def make_box(seed: int, dtype=torch.float32, batch: int = 4, eps: float = 4 / 255):
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(batch, 3, 8, 8, generator=gen).to(dtype)
    y = torch.randint(0, K, (batch,), generator=gen)
    return x, y, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def assert_close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    scale = 1.0 + max(a.abs().max().item(), b.abs().max().item())
    torch.testing.assert_close(a, b, atol=TOL[dtype] * scale, rtol=TOL[dtype])


def sample_points(lower: torch.Tensor, upper: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """(2n, B, *input): n uniform points and n random box corners."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *lower.shape, generator=gen).to(lower.dtype)
    corners = (torch.rand(n, *lower.shape, generator=gen) > 0.5).to(lower.dtype)
    return torch.cat([lower + u * (upper - lower), lower + corners * (upper - lower)])


def outputs_at(net: nn.Module, points: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(points.flatten(0, 1)).reshape(points.shape[0], points.shape[1], -1)


# ------------------------------------------------------------------------------------------------
# Missing package (always runs)
# ------------------------------------------------------------------------------------------------
def test_missing_auto_lirpa_gives_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "auto_LiRPA", None)  # makes `import auto_LiRPA` fail
    lirpa._reset_for_tests()
    try:
        assert lirpa.lirpa_available() is False
        reason = lirpa.lirpa_unavailable_reason()
        assert "pip install --no-deps auto-lirpa==0.3" in reason and "\n" not in reason
        net = make_cnn(0)
        _, _, lo, up = make_box(0)
        with pytest.raises(CTBenchError, match=r"^auto_LiRPA backend unavailable: install it with") as info:
            lirpa.compute_bounds_lirpa(net, lo, up, "IBP")
        assert "\n" not in str(info.value)
        with pytest.raises(CTBenchError, match="auto_LiRPA backend unavailable"):
            compute_bounds(net, lo, up, "IBP", backend="auto_lirpa")
    finally:
        monkeypatch.undo()
        lirpa._reset_for_tests()


# ------------------------------------------------------------------------------------------------
# Import fixes and self-check
# ------------------------------------------------------------------------------------------------
@needs_lirpa
def test_fixes_detected_and_idempotent():
    lirpa._ensure_imported()
    fixes = lirpa.applied_fixes()
    assert set(fixes) <= set("abcdef")
    # torch >= 2.9 registers ONNX symbolics lazily: the soundness fix (e) must be active there.
    from torch.onnx import utils as onnx_utils

    if hasattr(onnx_utils, "_trigger_symbolic_function_registration"):
        assert "e" in fixes
    # Applying again detects nothing left to fix.
    assert not lirpa_compat.fix_numpy_arraysetops()
    assert not lirpa_compat.fix_set_opset_version()
    assert not lirpa_compat.fix_node_getitem()
    import auto_LiRPA

    assert not lirpa_compat.fix_named_members(auto_LiRPA.BoundedModule)
    from auto_LiRPA.operators.activation import BoundRelu

    # Fix (f) is needed exactly when torch's clamp has no gradient at its bounds (torch 2.x).
    assert ("f" in fixes) == lirpa_compat.clamp_gradient_vanishes_at_bounds()
    assert not lirpa_compat.fix_relu_alpha_clamp(BoundRelu)
    # The patches outlive a reset (CI imports auto_LiRPA in earlier files): still listed after one.
    lirpa._reset_for_tests()
    lirpa._ensure_imported()
    assert lirpa.applied_fixes() == fixes


def test_closed_clamp_passes_the_gradient_at_its_bounds():
    """Fix (f)'s clamp: the values of ``clamp``, gradient 1 on [lo, hi] inclusive, 0 outside."""
    t = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    out = lirpa_compat._clamp_closed(t, 0.0, 1.0)
    out.sum().backward()
    assert torch.equal(out.detach(), t.detach().clamp(0.0, 1.0))
    assert t.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@needs_lirpa
def test_self_check_passes():
    lirpa.self_check(force=True)


@needs_lirpa
def test_self_check_detects_unsound_bounds(monkeypatch):
    real = lirpa.compute_bounds_lirpa

    def shrunk(model, lower, upper, method, C=None, **kw):
        lb, ub = real(model, lower, upper, method, C, **kw)
        mid = (lb + ub) / 2
        return mid - 1e-3, mid + 1e-3

    lirpa.self_check(force=True)
    monkeypatch.setattr(lirpa, "compute_bounds_lirpa", shrunk)
    try:
        with pytest.raises(CTBenchError, match="unsound"):
            lirpa.self_check(force=True)
    finally:
        monkeypatch.undo()
        lirpa.self_check(force=True)


# ------------------------------------------------------------------------------------------------
# Native vs auto_LiRPA
# ------------------------------------------------------------------------------------------------
def _spec(kind: str, y: torch.Tensor, dtype) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "margin":
        return margin_spec(y, K, dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    return torch.randn(y.shape[0], 3, K, generator=gen).to(dtype)


@needs_lirpa
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("spec", ["none", "random", "margin"])
@pytest.mark.parametrize("method", METHODS)
def test_native_matches_auto_lirpa_eval_bn(method, spec, seed, dtype):
    net = shared_cnn(seed, dtype)
    _, y, lo, up = make_box(seed, dtype)
    C = _spec(spec, y, dtype)
    lb_n, ub_n = compute_bounds(net, lo, up, method, C, **PLAIN.get(method, {}))
    lb_a, ub_a = lirpa.compute_bounds_lirpa(net, lo, up, method, C)
    S = K if C is None else C.shape[1]
    assert lb_a.shape == ub_a.shape == lb_n.shape == (lo.shape[0], S)
    assert_close(lb_n, lb_a, dtype)
    assert_close(ub_n, ub_a, dtype)


@needs_lirpa
@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP"])
def test_native_matches_auto_lirpa_frozen_train_bn(method):
    """Train-mode BatchNorm: the adapter hands auto_LiRPA ctbench's frozen clean-batch statistics."""
    dtype = torch.float64
    net = make_cnn(3, dtype).train()
    x, y, lo, up = make_box(3, dtype, batch=6)
    clean_forward_and_freeze_bn(net, x)
    try:
        C = margin_spec(y, K, dtype=dtype)
        lb_n, ub_n = compute_bounds(net, lo, up, method, C, **PLAIN.get(method, {}))
        lb_a, ub_a = lirpa.compute_bounds_lirpa(net, lo, up, method, C)
        assert_close(lb_n, lb_a, dtype)
        assert_close(ub_n, ub_a, dtype)
        assert net.training  # adapter restores the training flags
    finally:
        unfreeze_bn(net)


@needs_lirpa
def test_backend_dispatch_and_cache_follows_running_stats():
    net = make_cnn(4)
    _, y, lo, up = make_box(4)
    C = margin_spec(y, K)
    lb1, _ = compute_bounds(net, lo, up, "CROWN-IBP", C, backend="auto_lirpa")
    torch.testing.assert_close(lb1, lirpa.compute_bounds_lirpa(net, lo, up, "CROWN-IBP", C)[0])
    with torch.no_grad():  # in-place update of buffers: the cached BoundedModule must see it
        net[2].running_mean.add_(0.5)
    lb2, _ = lirpa.compute_bounds_lirpa(net, lo, up, "CROWN-IBP", C)
    assert_close(lb2, compute_bounds(net, lo, up, "CROWN-IBP", C, cut_points=False)[0], torch.float32)
    assert not torch.allclose(lb1, lb2)
    # auto_LiRPA's eval-mode forward sets requires_grad=False on shared parameters; the adapter restores it.
    assert all(p.requires_grad for p in net.parameters())
    # A different batch size builds another graph.
    lb3, _ = lirpa.compute_bounds_lirpa(net, lo[:2], up[:2], "IBP", C[:2])
    assert lb3.shape == (2, K - 1)


@needs_lirpa
@pytest.mark.parametrize("method", METHODS)
def test_adapter_bounds_contain_samples_and_corners(method):
    dtype = torch.float64
    net = make_cnn(5, dtype)
    _, y, lo, up = make_box(5, dtype, eps=8 / 255)
    C = _spec("random", y, dtype)
    lb, ub = lirpa.compute_bounds_lirpa(net, lo, up, method, C)
    vals = torch.einsum("bsk,nbk->nbs", C, outputs_at(net, sample_points(lo, up, 256)))
    assert torch.all(vals >= lb - 1e-9) and torch.all(vals <= ub + 1e-9)


# ------------------------------------------------------------------------------------------------
# Loss fusion
# ------------------------------------------------------------------------------------------------
@needs_lirpa
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_fusion_matches_and_bounds_ce(seed, dtype):
    net = shared_cnn(seed, dtype)
    x, y, lo, up = make_box(seed, dtype)
    with torch.no_grad():
        native = loss_fusion_crown_ibp(net, lo, up, y, reduction="none", cut_points=False)
        ref = lirpa.lirpa_loss_fusion(net, lo, up, y, reduction="none")
        ce = F.cross_entropy(net(x), y, reduction="none")
        pts = sample_points(lo, up, 128)
        ce_pts = F.cross_entropy(outputs_at(net, pts).flatten(0, 1), y.repeat(pts.shape[0]),
                                 reduction="none").reshape(pts.shape[0], -1)
    assert ref.shape == (x.shape[0],)
    assert_close(native, ref, dtype)
    assert torch.all(ref >= ce) and torch.all(ref >= ce_pts.max(0).values)
    mean = lirpa.lirpa_loss_fusion(net, lo, up, y)
    assert mean.dim() == 0 and torch.isclose(mean, ref.mean(), rtol=1e-5)


@needs_lirpa
def test_loss_fusion_with_grad_differs_only_by_exp_slope_clamp():
    """With autograd on, auto_LiRPA clamps the exp chord slope to >= 1e-6 (BoundExp.bound_backward,
    ``if k.requires_grad: k = k.clamp(min=1e-6)``): still sound, a little looser than the native bound.
    Without autograd the two are the same bound (previous test)."""
    dtype = torch.float64
    net = make_cnn(6, dtype).train()
    x, y, lo, up = make_box(6, dtype, batch=6)
    clean_forward_and_freeze_bn(net, x)
    try:
        native = loss_fusion_crown_ibp(net, lo, up, y, reduction="none", cut_points=False)
        ref = lirpa.lirpa_loss_fusion(net, lo, up, y, reduction="none")
        with torch.no_grad():
            ref_nograd = lirpa.lirpa_loss_fusion(net, lo, up, y, reduction="none")
        assert_close(native.detach(), ref_nograd, dtype)
        assert torch.all(ref >= native - 1e-9)
        assert torch.all(ref - native <= 1e-2)
        ref.mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    finally:
        unfreeze_bn(net)


@needs_lirpa
@pytest.mark.slow
def test_alpha_crown_sound_and_not_looser_than_crown():
    net = make_cnn(7)
    _, y, lo, up = make_box(7, batch=2)
    C = margin_spec(y, K)
    lb_c, _ = lirpa.compute_bounds_lirpa(net, lo, up, "CROWN", C)
    lb_a, ub_a = lirpa.compute_bounds_lirpa(net, lo, up, "alpha-CROWN", C, iterations=5)
    vals = torch.einsum("bsk,nbk->nbs", C, outputs_at(net, sample_points(lo, up, 128)))
    assert torch.all(vals >= lb_a - 1e-4) and torch.all(vals <= ub_a + 1e-4)
    assert torch.all(lb_a >= lb_c - 1e-4)


@needs_lirpa
def test_lirpa_alpha_crown_optimizes_the_slopes():
    """auto_LiRPA's alpha-CROWN is tighter than its CROWN somewhere (the slopes move).

    Without compatibility fix (f), torch 2's zero clamp gradient at 0 and 1 froze the slopes at
    their initial (CROWN) values and every bound equalled CROWN's.
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 4)).eval()
    x = torch.rand(3, 1, 8)
    lo, up = x - 0.3, x + 0.3
    with torch.no_grad():
        lb_c, _ = lirpa.compute_bounds_lirpa(net, lo, up, "CROWN", bound_upper=False)
    lb_a, _ = lirpa.compute_bounds_lirpa(net, lo, up, "alpha-CROWN", iterations=20, bound_upper=False)
    assert torch.all(lb_a >= lb_c - 1e-5)
    assert float((lb_a - lb_c).max()) > 1e-2
    vals = outputs_at(net, sample_points(lo, up, 256))
    assert torch.all(vals >= lb_a - 1e-4)
