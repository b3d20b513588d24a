"""L1 and Shi et al. (2021)'s warm-up regularizer on hand-made bounds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ctbench.bounds import ibp_bounds
from ctbench.models import create_model
from ctbench.regularizers import l1_penalty, warmup_regularizer, warmup_weight


def test_l1_only_conv_linear_weights():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(-2.0)
    expected = 2.0 * (model[0].weight.numel() + model[3].weight.numel())
    assert float(l1_penalty(model).detach()) == pytest.approx(expected)


def _bounds(l, u):
    return torch.tensor(l, dtype=torch.float64), torch.tensor(u, dtype=torch.float64)


def test_hand_computed_value():
    # input box radius 0.5 (one sample, 2 entries)
    inp = _bounds([[0.0, 0.0]], [[1.0, 1.0]])
    # ReLU layer: entries (l, u): (1, 3) active, (-13, -11) inactive, (-1, 1) unstable, (2, 2) active
    relu = _bounds([[1.0, -13.0, -1.0, 2.0]], [[3.0, -11.0, 1.0, 2.0]])
    tol = 0.5
    # tightness: radii 1, 1, 1, 0 -> mean 0.75; ratio 0.5/0.75 = 2/3 > tol -> 0
    # centres 2, -12, 0, 2; mu = -2; active {2, 2}, inactive {-12}
    mean_act, mean_inact = (2 + 2) / 4, -12 / 4
    var_act, var_inact = (4.0**2) * 2, 10.0**2
    r_m = mean_act / -mean_inact
    r_v = var_act / var_inact
    r_m, r_v = min(r_m, 1 / r_m), min(r_v, 1 / r_v)
    expected = (max(0, tol - r_m) + max(0, tol - r_v)) / tol
    got = warmup_regularizer([inp, relu], tol)
    assert float(got) == pytest.approx(expected)
    assert expected == pytest.approx(1 / 3 + 0.36)  # r_m = 1/3, r_v = 0.32: both terms active


def test_tightness_term_and_layer_average():
    inp = _bounds([[0.0]], [[1.0]])  # radius 0.5
    loose = _bounds([[-4.0, 1.0]], [[4.0, 3.0]])  # radii 4, 1 -> mean 2.5; ratio 0.2
    # no inactive neuron: mean_inact = 0 -> r_m = ±inf -> the ReLU-balance term is non-finite and skipped
    got = warmup_regularizer([inp, loose, loose])
    per_layer = (0.5 - 0.2) / 0.5
    assert float(got) == pytest.approx(per_layer)  # averaged over the two identical layers


def test_nan_relu_term_skipped():
    inp = _bounds([[0.0]], [[1.0]])
    unstable = _bounds([[-1.0, -1.0]], [[1.0, 1.0]])  # no active / inactive: 0/0 -> NaN, skipped
    got = warmup_regularizer([inp, unstable])
    assert math.isfinite(float(got)) and float(got) == pytest.approx(0.0)


def test_differentiable_on_real_ibp_bounds():
    model = create_model("cnn_small", "mnist", init="ibp", seed=0).eval()
    x = torch.rand(4, 1, 28, 28)
    _, _, bounds = ibp_bounds(model, (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1), store_intermediate=True)
    reg = warmup_regularizer(bounds)
    assert reg.ndim == 0 and torch.isfinite(reg)
    reg.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_warmup_weight():
    assert warmup_weight(0.5, 0.0, 0.2) == pytest.approx(0.5 * (1 - 1e-6 / 0.2))
    assert warmup_weight(0.5, 0.1, 0.2) == pytest.approx(0.25)
    assert warmup_weight(0.5, 0.2, 0.2) == 0.0 and warmup_weight(0.0, 0.1, 0.2) == 0.0
