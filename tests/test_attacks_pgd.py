"""PGD (adv_whitebox semantics): box, analytic worst case on linear models, restarts, no param grads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctbench.attacks import default_step_size, pgd_attack, step_size_multiplier
from ctbench.attacks.pgd import per_sample_loss
from ctbench.bounds import clean_forward_and_freeze_bn, unfreeze_bn
from ctbench.errors import CTBenchError
from ctbench.models import create_model


def _box(x, eps):
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def test_within_box_and_detached():
    torch.manual_seed(0)
    model = create_model("cnn_small", "mnist", seed=0).eval()
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    lb, ub = _box(x, 0.1)
    adv = pgd_attack(model, x, y, lb, ub, steps=5, restarts=2)
    assert adv.shape == x.shape and not adv.requires_grad
    assert torch.all(adv >= lb) and torch.all(adv <= ub)


def test_linear_model_margin_finds_corner():
    torch.manual_seed(1)
    d = 20
    model = nn.Sequential(nn.Linear(d, 2)).double()
    x = torch.rand(16, d, dtype=torch.float64) * 0.6 + 0.2
    y = torch.randint(0, 2, (16,))
    lb, ub = _box(x, 0.1)
    adv = pgd_attack(model, x, y, lb, ub, steps=20, restarts=1, loss="margin")
    W = model[0].weight.detach()
    w = W[1 - y] - W[y]  # gradient direction of the margin z_other - z_y
    corner = torch.where(w > 0, ub, lb)
    assert torch.allclose(adv, corner)
    best = per_sample_loss(model(corner), y, "margin")
    assert torch.allclose(per_sample_loss(model(adv), y, "margin"), best)


def test_more_restarts_never_decrease_loss():
    model = create_model("cnn_small", "mnist", seed=0).eval()
    torch.manual_seed(2)
    x = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    lb, ub = _box(x, 0.2)
    torch.manual_seed(3)
    one = pgd_attack(model, x, y, lb, ub, steps=3, restarts=1)
    torch.manual_seed(3)  # the first restart of the 3-restart run is the same run
    three = pgd_attack(model, x, y, lb, ub, steps=3, restarts=3)
    with torch.no_grad():
        l1 = per_sample_loss(model(one), y, "ce")
        l3 = per_sample_loss(model(three), y, "ce")
    assert torch.all(l3 >= l1 - 1e-6)


def test_no_gradient_reaches_parameters_and_flags_restored():
    model = create_model("cnn_small", "mnist", seed=0).train()
    model[1].weight.requires_grad_(False)  # a mixed state must be restored exactly
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    clean_forward_and_freeze_bn(model, x)
    bn = model[2]
    running = bn.running_mean.clone()
    lb, ub = _box(x, 0.1)
    pgd_attack(model, x, y, lb, ub, steps=3, restarts=2)
    unfreeze_bn(model)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(bn.running_mean, running)  # frozen clean-batch statistics: no update by attacks


def test_step_size_schedule():
    assert default_step_size(10) == 0.25 and default_step_size(1) == 2.0 and default_step_size(5) == 0.4
    assert step_size_multiplier(9, 10) == 1 and step_size_multiplier(10, 30) == 1
    assert step_size_multiplier(11, 15) == pytest.approx(0.2)
    assert step_size_multiplier(20, 30) == 1 and step_size_multiplier(21, 30) == pytest.approx(0.1)
    assert step_size_multiplier(21, 30) == step_size_multiplier(29, 30)
    assert step_size_multiplier(99, 100) == pytest.approx(1e-3) and step_size_multiplier(49, 100) == 1


def test_zero_steps_is_random_point_and_bad_args():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(5, 4)
    y = torch.zeros(5, dtype=torch.long)
    lb, ub = _box(x, 0.05)
    adv = pgd_attack(model, x, y, lb, ub, steps=0)
    assert torch.all(adv >= lb) and torch.all(adv <= ub)
    with pytest.raises(CTBenchError):
        pgd_attack(model, x, y, lb, ub, steps=1, loss="kl")
    with pytest.raises(CTBenchError):
        pgd_attack(model, x, y, lb, ub, steps=1, restarts=0)
