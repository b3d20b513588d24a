"""The compiled CROWN relaxation (``CTBENCH_COMPILE``, ``ctbench/bounds/fused.py``; issue 16).

Its formulas equal the eager relaxation's (values and autograd gradients, including stable, dead and
degenerate neurons and the cut points); compiled through ``torch.compile`` they give the same CROWN-IBP
bounds (with cut points), loss-fusion losses and parameter gradients as the eager engine, and the
bounds hold at sampled points. The switch reads the environment and refuses unknown values; by default
(``auto``) training steps run compiled and no-grad certification eagerly, and a compile failure falls
back to the eager engine with one warning (an error under ``CTBENCH_COMPILE=1``).
"""

from __future__ import annotations

import logging

import pytest
import torch

from ctbench.bounds import (
    clean_forward_and_freeze_bn,
    compute_bounds,
    fused,
    loss_fusion_crown_ibp,
    margin_spec,
    unfreeze_bn,
)
from ctbench.bounds.linear import _ReluBackCROWN
from ctbench.errors import CTBenchError
from ctbench.models import InputSpec, cnn7

SPEC = InputSpec((3, 16, 16), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), name="small")


@pytest.fixture(autouse=True)
def _follow_environment(monkeypatch):
    monkeypatch.setattr(fused, "_failure", None)  # a failure recorded by a test stays in that test
    yield
    fused.set_compile(None)


def _case(S, shape, dtype=torch.float64, seed=0):
    """A, l, u with unstable, active, dead and l = u = 0 neurons; output gradients G, g_d, g_cut."""
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(2, *shape, generator=g, dtype=dtype) - 0.2
    u = l + torch.rand(2, *shape, generator=g, dtype=dtype)
    l.view(-1)[:3] = 0.0  # degenerate box at 0
    u.view(-1)[:3] = 0.0
    A = torch.randn(2, S, *shape, generator=g, dtype=dtype)
    A.view(-1)[5] = 0.0
    G = torch.randn(2, S, *shape, generator=g, dtype=dtype)
    g_d, g_cut = torch.randn(2, S, generator=g, dtype=dtype), torch.randn(2, S, generator=g, dtype=dtype)
    return A, l, u, G, g_d, g_cut


@pytest.mark.parametrize("S", [1, 3])
@pytest.mark.parametrize("with_cut", [False, True])
def test_formulas_equal_eager_relaxation(S, with_cut):
    A, l, u, G, g_d, g_cut = _case(S, (3, 4, 4))
    Ar, lr, ur = (t.clone().requires_grad_() for t in (A, l, u))
    out = _ReluBackCROWN.apply(Ar, lr, ur, with_cut)
    cots = [G, g_d] + ([g_cut] if with_cut else [])
    ref_grads = torch.autograd.grad(list(out[: len(cots)]), [Ar, lr, ur], cots)
    mine = fused.relax_forward(A, l, u, with_cut)
    for a, b in zip(out, mine, strict=True):
        torch.testing.assert_close(b, a.detach(), rtol=1e-12, atol=1e-12)
    grads = fused.relax_backward(A, l, u, G, g_d, g_cut if with_cut else None, True, True, True, with_cut)
    for a, b in zip(ref_grads, grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_relaxation_equals_formulas_across_shapes(dtype):
    fused.set_compile(True)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for S, shape in ((1, (3, 4, 4)), (4, (5, 2, 2)), (2, (7,))):  # one compile serves every shape
        A, l, u, G, g_d, g_cut = _case(S, shape, dtype)
        for with_cut in (False, True):
            want = fused.relax_forward(A, l, u, with_cut)
            got = fused.fused_forward(A, l, u, with_cut)
            for a, b in zip(want, got, strict=True):
                torch.testing.assert_close(b, a, rtol=tol, atol=tol)
            want = fused.relax_backward(A, l, u, G, g_d, g_cut if with_cut else None, True, True, True, with_cut)
            got = fused.fused_backward(A, l, u, G, g_d, g_cut, with_cut)
            for a, b in zip(want, got, strict=True):
                torch.testing.assert_close(b, a, rtol=tol, atol=tol)


def _net_and_box(seed=0):
    torch.manual_seed(seed)
    model = cnn7(SPEC, width=8, linear=32).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(6, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    return model, x, y, (x - 0.02).clamp(0, 1), (x + 0.02).clamp(0, 1)


def _train_step(model, x, y, lower, upper, kind, compiled):
    """A CROWN-IBP training step's bound and parameter gradients (train-mode BN, clean statistics)."""
    fused.set_compile(compiled)
    model.zero_grad(set_to_none=True)
    model.train()
    clean_forward_and_freeze_bn(model, x)
    try:
        if kind == "loss fusion":
            out = loss_fusion_crown_ibp(model, lower, upper, y)
            loss = out
        else:
            out, _ = compute_bounds(model, lower, upper, "CROWN-IBP", margin_spec(y, 10, dtype=x.dtype),
                                    bound_upper=False, cut_points=True)
            loss = torch.nn.functional.softplus(-out).mean()
        loss.backward()
    finally:
        unfreeze_bn(model)
        fused.set_compile(None)
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def _spy(monkeypatch):
    """Count the calls of the compiled forward / backward (proof that the compiled path ran)."""
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        real = getattr(fused, f"fused_{name}")

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(fused, f"fused_{name}", counted)
    return calls


@pytest.mark.parametrize("kind", ["loss fusion", "all margins with cut points"])
def test_compiled_training_step_equals_eager(kind, monkeypatch):
    model, x, y, lower, upper = _net_and_box()
    calls = _spy(monkeypatch)
    b_eager, g_eager = _train_step(model, x, y, lower, upper, kind, compiled=False)
    assert calls == {"forward": 0, "backward": 0}
    b_comp, g_comp = _train_step(model, x, y, lower, upper, kind, compiled=True)
    assert calls["forward"] == calls["backward"] == 6  # CNN7: one per ReLU in each direction
    torch.testing.assert_close(b_comp, b_eager, rtol=1e-10, atol=1e-10)
    scale = max(float(g.abs().max()) for g in g_eager)
    for a, b in zip(g_eager, g_comp, strict=True):  # conv biases before BN have ~0 gradients: absolute scale
        assert float((a - b).abs().max()) <= 1e-9 * scale


@pytest.mark.parametrize("method", ["CROWN-IBP", "CROWN"])
def test_compiled_certification_bounds_equal_eager_and_hold(method, monkeypatch):
    model, x, y, lower, upper = _net_and_box(seed=3)
    calls = _spy(monkeypatch)
    model.eval()
    C = margin_spec(y, 10, dtype=x.dtype)
    with torch.no_grad():
        lb_eager, ub_eager = compute_bounds(model, lower, upper, method, C)
        fused.set_compile(True)
        lb, ub = compute_bounds(model, lower, upper, method, C)
        fused.set_compile(None)
        assert calls["forward"] >= 6 and calls["backward"] == 0
        torch.testing.assert_close(lb, lb_eager, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ub, ub_eager, rtol=1e-10, atol=1e-10)
        g = torch.Generator().manual_seed(7)  # sampled points and box corners lie inside the bounds
        t = torch.rand(64, *lower.shape, generator=g, dtype=x.dtype)
        t[:8] = t[:8].round()
        pts = lower + (upper - lower) * t
        m = torch.einsum("bsk,pbk->pbs", C, model(pts.reshape(-1, *lower.shape[1:])).reshape(64, *C.shape[:1], 10))
    assert bool((m >= lb - 1e-9).all()) and bool((m <= ub + 1e-9).all())


def test_switch_follows_environment_and_override(monkeypatch):
    monkeypatch.delenv(fused.ENV, raising=False)
    assert fused.mode() == "auto"
    big, small = fused.AUTO_MIN_ELEMENTS, fused.AUTO_MIN_ELEMENTS - 1
    assert fused.use_compiled(True, big) and not fused.use_compiled(False, big)
    assert not fused.use_compiled(True, small)
    for value, want in (("auto", "auto"), ("1", "on"), ("on", "on"), ("0", "off"), (" OFF ", "off")):
        monkeypatch.setenv(fused.ENV, value)
        assert fused.mode() == want
    monkeypatch.setenv(fused.ENV, "1")
    assert fused.use_compiled(False, 1)  # "1" compiles certification and small calls too
    monkeypatch.setenv(fused.ENV, "0")
    assert not fused.use_compiled(True, big)
    fused.set_compile(True)
    assert fused.mode() == "on"
    fused.set_compile(None)
    monkeypatch.setenv(fused.ENV, "maybe")
    with pytest.raises(CTBenchError, match="CTBENCH_COMPILE='maybe': expected auto"):
        fused.mode()


def test_default_compiles_large_training_calls_only(monkeypatch):
    monkeypatch.delenv(fused.ENV, raising=False)
    model, x, y, lower, upper = _net_and_box()
    calls = _spy(monkeypatch)
    _train_step(model, x, y, lower, upper, "loss fusion", compiled=None)
    assert calls == {"forward": 0, "backward": 0}  # a small network: below AUTO_MIN_ELEMENTS
    monkeypatch.setattr(fused, "AUTO_MIN_ELEMENTS", 6 * 8 * 16 * 16)  # A (B=6, S=1, 8, 16, 16) qualifies
    _train_step(model, x, y, lower, upper, "loss fusion", compiled=None)
    assert calls["forward"] == calls["backward"] == 2  # the two full-resolution conv ReLUs, not the rest
    calls.update(forward=0, backward=0)
    model.eval()
    with torch.no_grad():
        compute_bounds(model, lower, upper, "CROWN-IBP", margin_spec(y, 10, dtype=x.dtype))
    assert calls == {"forward": 0, "backward": 0}


def _broken_compiler(monkeypatch):
    def compile_fails(fn):
        def run(*args):
            raise RuntimeError("Cannot find a working triton installation\n(more lines)")
        return run

    monkeypatch.setattr(fused, "_compiled", compile_fails)


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv(fused.ENV, raising=False)
    monkeypatch.setattr(fused, "AUTO_MIN_ELEMENTS", 1)
    model, x, y, lower, upper = _net_and_box()
    b_eager, g_eager = _train_step(model, x, y, lower, upper, "all margins with cut points", compiled=False)
    _broken_compiler(monkeypatch)
    calls = _spy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="ctbench.bounds.fused"):
        for _ in range(2):
            b, g = _train_step(model, x, y, lower, upper, "all margins with cut points", compiled=None)
            torch.testing.assert_close(b, b_eager, rtol=1e-10, atol=1e-10)
            for a, c in zip(g_eager, g, strict=True):
                torch.testing.assert_close(c, a, rtol=1e-9, atol=1e-12)
    warnings = [r for r in caplog.records if "continuing eagerly" in r.getMessage()]
    assert len(warnings) == 1 and "working triton" in warnings[0].getMessage()
    assert calls == {"forward": 1, "backward": 1}  # the failed call finished uncompiled; then eager only
    assert not fused.use_compiled(True, 10**9)


def test_compile_failure_is_an_error_when_forced(monkeypatch):
    monkeypatch.setenv(fused.ENV, "1")
    _broken_compiler(monkeypatch)
    model, x, y, lower, upper = _net_and_box()
    with pytest.raises(CTBenchError, match=r"CTBENCH_COMPILE=1 but torch.compile .* failed \(RuntimeError: "
                       r"Cannot find a working triton installation\); set CTBENCH_COMPILE=0"):
        _train_step(model, x, y, lower, upper, "loss fusion", compiled=None)
