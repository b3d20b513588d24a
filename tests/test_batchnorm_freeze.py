"""Clean-batch BatchNorm statistics (paper §4.1): set once per step by the clean batch, then used —
frozen but differentiable — by every later forward pass and bound computation of that step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _bounds_helpers import single_thread_fixture
from torch import nn

from ctbench.bounds import (
    bn_affine,
    bn_stats_from,
    clean_forward_and_freeze_bn,
    compute_bounds,
    ibp_bounds,
    is_frozen,
    unfreeze_bn,
)
from ctbench.errors import CTBenchError

_single_thread = single_thread_fixture()


def _net(momentum=0.1):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3, momentum=momentum),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(48, 6),
        nn.BatchNorm1d(6, momentum=momentum),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).double()


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_clean_forward_matches_ordinary_bn_and_updates_running_stats_once(momentum):
    model, ref = _net(momentum), _net(momentum)
    model.train(), ref.train()
    x = torch.randn(10, 2, 4, 4, dtype=torch.float64)
    out = clean_forward_and_freeze_bn(model, x)
    out_ref = ref(x)  # ordinary BatchNorm forward in train mode
    torch.testing.assert_close(out, out_ref)
    for bn, bref in zip(_bns(model), _bns(ref), strict=True):
        torch.testing.assert_close(bn.running_mean, bref.running_mean)
        torch.testing.assert_close(bn.running_var, bref.running_var)
        assert int(bn.num_batches_tracked) == 1
        assert is_frozen(bn)
    snapshot = [(b.running_mean.clone(), b.running_var.clone()) for b in _bns(model)]
    # later passes of the step: other inputs, attacks, bounds — running stats untouched
    for _ in range(3):
        model(torch.randn(7, 2, 4, 4, dtype=torch.float64))
    ibp_bounds(model, x - 0.1, x + 0.1)
    compute_bounds(model, x - 0.1, x + 0.1, "CROWN-IBP")
    for bn, (rm, rv) in zip(_bns(model), snapshot, strict=True):
        torch.testing.assert_close(bn.running_mean, rm, rtol=0, atol=0)
        torch.testing.assert_close(bn.running_var, rv, rtol=0, atol=0)
        assert int(bn.num_batches_tracked) == 1
    # next step: exactly one more update
    clean_forward_and_freeze_bn(model, torch.randn(10, 2, 4, 4, dtype=torch.float64))
    assert all(int(bn.num_batches_tracked) == 2 for bn in _bns(model))
    unfreeze_bn(model)


def test_frozen_forward_equals_clean_forward_and_uses_clean_stats():
    model = _net().train()
    x = torch.randn(12, 2, 4, 4, dtype=torch.float64)
    out = clean_forward_and_freeze_bn(model, x)
    torch.testing.assert_close(model(x), out, rtol=1e-12, atol=1e-12)
    # a single sample (batch 1, impossible for ordinary train-mode BN1d) is normalized with the clean stats
    z = model(x[:1])
    torch.testing.assert_close(z, out[:1], rtol=1e-12, atol=1e-12)
    # the frozen stats are the clean batch's (biased) batch statistics
    bn = model[1]
    h = model[0](x)
    scale, shift = bn_affine(bn)
    var, mean = torch.var_mean(h, dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(scale, bn.weight / torch.sqrt(var + bn.eps))
    torch.testing.assert_close(shift, bn.bias - mean * scale)
    # bounds at a zero-width box equal the frozen forward
    lb, ub = ibp_bounds(model, x, x)
    torch.testing.assert_close(lb, out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ub, out, rtol=1e-10, atol=1e-10)
    lb, ub = compute_bounds(model, x, x, "CROWN")
    torch.testing.assert_close(lb, out, rtol=1e-10, atol=1e-10)
    unfreeze_bn(model)


def test_context_manager_and_eval_mode():
    model = _net().train()
    x = torch.randn(8, 2, 4, 4, dtype=torch.float64)
    with bn_stats_from(model, x) as logits:
        assert all(is_frozen(b) for b in _bns(model))
        torch.testing.assert_close(model(x), logits)
        # eval mode inside the block: running statistics, as ordinary eval BN
        model.eval()
        ref = copy.deepcopy(_net())
        ref.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(x), ref.eval()(x))
        model.train()
    assert not any(is_frozen(b) for b in _bns(model))
    # unfrozen train-mode BN is ordinary again (and refuses bound propagation)
    n = int(model[1].num_batches_tracked)
    model(x)
    assert int(model[1].num_batches_tracked) == n + 1
    with pytest.raises(CTBenchError, match="no clean-batch statistics"):
        ibp_bounds(model, x, x)
    # a model in eval mode is not frozen at all
    model.eval()
    with bn_stats_from(model, x) as logits:
        assert not any(is_frozen(b) for b in _bns(model))
        torch.testing.assert_close(logits, model(x))
    assert int(model[1].num_batches_tracked) == n + 1


def test_gradients_flow_into_bn_params_and_through_stats():
    model = _net().train()
    x = torch.randn(8, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.arange(8) % 3
    clean = clean_forward_and_freeze_bn(model, x)
    adv = model(x.detach() + 0.05)  # frozen forward (e.g. an attack's output)
    loss = F.cross_entropy(adv, y)
    params = [model[1].weight, model[1].bias, model[5].weight, model[5].bias, model[0].weight]
    grads = torch.autograd.grad(loss, params + [x], retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # grad to x: only via the batch stats
    # the frozen forward with the clean stats has the same gradient as the clean forward (same function)
    g1 = torch.autograd.grad(F.cross_entropy(clean, y), params, retain_graph=True)
    g2 = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    unfreeze_bn(model)


def test_batch_of_one_rejected_and_state_restored():
    model = _net().train()
    with pytest.raises(ValueError):
        clean_forward_and_freeze_bn(model, torch.randn(1, 2, 4, 4, dtype=torch.float64))
    assert not any(is_frozen(b) for b in _bns(model)) and all(
        "forward" not in b.__dict__ for b in _bns(model)
    )


def test_deepcopy_of_frozen_model_is_ordinary():
    model = _net().train()
    x = torch.randn(8, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    clean_forward_and_freeze_bn(model, x)
    twin = copy.deepcopy(model)  # e.g. SWA's AveragedModel
    assert not any(is_frozen(b) for b in _bns(twin))
    n = int(twin[1].num_batches_tracked)
    twin(x.detach())
    assert int(twin[1].num_batches_tracked) == n + 1  # ordinary train-mode BN
    assert all(is_frozen(b) for b in _bns(model))
    unfreeze_bn(model)


def test_frozen_model_pickles_unfrozen(tmp_path):
    model = _net().train()
    clean_forward_and_freeze_bn(model, torch.randn(8, 2, 4, 4, dtype=torch.float64, requires_grad=True))
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert not any(is_frozen(b) for b in _bns(loaded))
    loaded(torch.randn(4, 2, 4, 4, dtype=torch.float64))
    unfreeze_bn(model)
