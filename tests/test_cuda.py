"""CUDA correctness (marker ``cuda``; skipped without a GPU; run by ``benchmarks/device.sh``): the bound
engine and a training step on ``cuda`` agree with the CPU in float64."""

import copy
import os

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
from ctbench.config import resolve
from ctbench.methods import create_method
from ctbench.models import create_model

#: The device under test; CTBENCH_CUDA_TEST_DEVICE=cpu runs these checks' own logic on a machine without a GPU.
DEV = os.environ.get("CTBENCH_CUDA_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(),
                                                   reason="no CUDA device (benchmarks/device.sh)")]


def _model(seed=0):
    model = create_model("cnn_small", "mnist", init="ibp", seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # BatchNorm with non-trivial population statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _box(n=16, eps=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP", "CROWN"])
def test_bounds_on_cuda_equal_cpu_float64(method):
    model = _model()
    x, y, lo, hi = _box()
    C = margin_spec(y, 10)
    with torch.no_grad():
        lb64, ub64 = compute_bounds(copy.deepcopy(model).double(), lo.double(), hi.double(), method, C.double())
        lb, ub = compute_bounds(model.to(DEV), lo.to(DEV), hi.to(DEV), method, C.to(DEV))
    scale = 1 + lb64.abs().max()
    assert float((lb.double().cpu() - lb64).abs().max()) <= 1e-4 * scale
    assert float((ub.double().cpu() - ub64).abs().max()) <= 1e-4 * scale
    with torch.no_grad():  # sound on cuda too: the margins at sampled points lie inside
        pts = lo.to(DEV) + (hi - lo).to(DEV) * torch.rand(16, *lo.shape[1:], device=DEV).unsqueeze(1)
        z = model(pts.reshape(-1, 1, 28, 28)).reshape(16, 16, 10)
        m = torch.einsum("bsk,pbk->pbs", C.to(DEV), z)
    assert bool((m >= lb.unsqueeze(0) - 1e-4).all()) and bool((m <= ub.unsqueeze(0) + 1e-4).all())


@pytest.mark.parametrize("name,compiled", [("ibp", False), ("crown_ibp", False), ("sabr", False), ("crown_ibp", True)])
def test_training_step_on_cuda_equals_cpu_float64(name, compiled, monkeypatch):
    """One full step (clean pass with BN statistics, robust loss, backward) on cuda float32 vs cpu float64;
    ``compiled``: the device under test runs the CROWN relaxation through torch.compile (CTBENCH_COMPILE=1,
    Triton kernels on cuda), the float64 reference eagerly."""
    monkeypatch.setattr(torch, "rand_like", lambda t, **kw: torch.full_like(t, 0.5, **kw))  # attack starts
    cfg = resolve(("mnist", "0.1"), name, {"attack_steps": 2, "attack_restarts": 1, "model": "cnn_small"})
    x, y, _, _ = _box(32)
    grads = {}
    for key, dev, dtype in (("ref", "cpu", torch.float64), ("dut", DEV, torch.float32)):
        model = create_model("cnn_small", "mnist", init="ibp", seed=0).to(dev, dtype)
        method = create_method(cfg)
        model.zero_grad(set_to_none=True)
        fused.set_compile(compiled and key == "dut")
        try:
            out = method.step(model, x.to(dev, dtype), y.to(dev), 0.05)
        finally:
            fused.set_compile(None)
        grads[key] = (out.loss, [p.grad.double().cpu() for p in model.parameters() if p.grad is not None])
    (l64, g64), (l32, g32) = grads["ref"], grads["dut"]
    assert l32 == pytest.approx(l64, rel=1e-3)
    for a, b in zip(g32, g64, strict=True):
        assert float((a - b).abs().max()) <= 1e-3 * (1 + float(b.abs().max()))


def test_default_compiles_cnn7_loss_fusion_step_and_equals_eager(monkeypatch):
    """``CTBENCH_COMPILE``'s default (auto) on the device: a CNN7 loss-fusion step at batch 32 (first ReLU's
    coefficients 32·64·28·28 ≥ 2²⁰) runs the compiled relaxation (Triton kernels on cuda) without falling
    back, and its loss and parameter gradients equal the eager step's on the same device."""
    monkeypatch.delenv(fused.ENV, raising=False)
    monkeypatch.setattr(fused, "_failure", None)
    calls = []
    real = fused.fused_forward
    monkeypatch.setattr(fused, "fused_forward", lambda *a: calls.append(1) or real(*a))
    model = create_model("cnn7", "mnist", init="ibp", seed=0).to(DEV)
    x, y, lo, hi = (t.to(DEV) for t in _box(32))
    out = {}
    for flag in (False, None):  # forced eager, then the default
        fused.set_compile(flag)
        model.zero_grad(set_to_none=True)
        model.train()
        clean_forward_and_freeze_bn(model, x)
        try:
            loss = loss_fusion_crown_ibp(model, lo, hi, y)
            loss.backward()
        finally:
            unfreeze_bn(model)
            fused.set_compile(None)
        out[flag] = (float(loss.detach()), [p.grad.double().cpu() for p in model.parameters()])
    assert len(calls) >= 2 and fused._failure is None  # the default compiled, and compiling worked
    (l_eager, g_eager), (l_auto, g_auto) = out[False], out[None]
    assert l_auto == pytest.approx(l_eager, rel=1e-4)
    scale = max(float(g.abs().max()) for g in g_eager)
    for a, b in zip(g_eager, g_auto, strict=True):
        assert float((a - b).abs().max()) <= 1e-3 * scale


def test_clean_pass_statistics_on_cuda():
    model = create_model("cnn_small", "mnist", init="ibp", seed=0).to(DEV).train()
    x, _, _, _ = _box(32)
    clean_forward_and_freeze_bn(model, x.to(DEV))
    unfreeze_bn(model)
    assert next(model.parameters()).device.type == torch.device(DEV).type
