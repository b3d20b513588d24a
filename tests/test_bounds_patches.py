"""Convolution-local CROWN intermediate bounds (ctbench/bounds/patches.py, issue 25): the same bounds as the
dense back-substitution on convolutional nets of every shape the geometry handles, sound on sampled and
corner points, and the dense path wherever crops do not apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctbench.bounds import linear, patches
from ctbench.bounds.layers import ReLULayer, parse_model
from ctbench.nn import Normalization


def _randomize_bn(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


NETS = {
    "strides_and_paddings": lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(5, 3, 4, 1, 2), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3, 2, 0), nn.ReLU()),
    "normalized_input_asymmetric": lambda: nn.Sequential(
        Normalization([0.4, 0.5], [0.2, 0.3]), nn.Conv2d(2, 3, (3, 2), (2, 1), (1, 0)), nn.ReLU(),
        nn.Conv2d(3, 3, (2, 3), (1, 2), (0, 1)), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.ReLU()),
    "cnn7_shaped": lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.BatchNorm2d(8),
        nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1),
        nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 20), nn.ReLU(), nn.Linear(20, 5)),
}
SHAPES = {"strides_and_paddings": (2, 11, 9), "normalized_input_asymmetric": (2, 9, 10), "cnn7_shaped": (3, 12, 12)}


def _problem(name: str, seed: int, eps: float):
    torch.manual_seed(seed)
    net = _randomize_bn(NETS[name]())
    x = torch.rand(3, *SHAPES[name])
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    return net, lo, hi


def _dense_crown(monkeypatch, net, lo, hi):
    monkeypatch.setattr(patches, "supported", lambda *a: False)
    try:
        return linear.intermediate_bounds(parse_model(net), (hi + lo) / 2, (hi - lo) / 2, "CROWN")[0]
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_crops_give_the_dense_paths_intermediate_bounds(name, seed, monkeypatch):
    """Every ReLU's CROWN pre-activation bounds, with crops (the convolutional ReLUs) and without: equal up to
    summation order, for three inputs whose unstable neurons differ."""
    net, lo, hi = _problem(name, seed, 0.05)
    layers = parse_model(net)
    local = linear.intermediate_bounds(layers, (hi + lo) / 2, (hi - lo) / 2, "CROWN")[0]
    dense = _dense_crown(monkeypatch, net, lo, hi)
    convolutional = [i for i, layer in enumerate(layers) if isinstance(layer, ReLULayer)
                     and patches.supported(layers, i, tuple(local[i][0].shape[1:]))]
    assert convolutional, "the net must have ReLUs the crops handle"
    for i in dense:
        for a, b in zip(local[i], dense[i], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_each_row_of_the_crops_is_its_dense_rows_bound():
    """patches.lower_bounds of ± one-hot rows at every neuron of every convolutional ReLU input equals
    linear.backsub_lower of the same rows as whole maps."""
    net, lo, hi = _problem("strides_and_paddings", 3, 0.08)
    layers = parse_model(net)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    bounds, _ = linear.intermediate_bounds(layers, c, r, "IBP")
    for i, layer in enumerate(layers):
        if not isinstance(layer, ReLULayer):
            continue
        l, _ = bounds[i]
        shape, B, n = tuple(l.shape[1:]), l.shape[0], l[0].numel()
        rows = torch.arange(n).expand(B, n)
        E = torch.eye(n).reshape(n, *shape).expand(B, n, *shape)
        dense = linear.backsub_lower(layers, i, torch.cat([E, -E], 1), bounds, c, r)
        signs = torch.cat([torch.ones(n), -torch.ones(n)])
        crops = patches.lower_bounds(layers, i, torch.cat([rows, rows], 1), signs, bounds, c, r, shape)
        torch.testing.assert_close(crops, dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NETS))
def test_crown_with_crops_is_sound_on_sampled_and_corner_points(name):
    net, lo, hi = _problem(name, 5, 0.1)
    layers = parse_model(net)
    bounds, _ = linear.intermediate_bounds(layers, (hi + lo) / 2, (hi - lo) / 2, "CROWN")
    B = lo.shape[0]
    pts = [lo + (hi - lo) * torch.rand_like(lo) for _ in range(300)]
    pts += [torch.where(torch.rand_like(lo) < 0.5, lo, hi) for _ in range(100)]  # corners
    with torch.no_grad():
        for x in pts:
            z = x
            for i, layer in enumerate(layers):
                if i in bounds:
                    l, u = bounds[i]
                    assert bool((z >= l - 1e-5).all()) and bool((z <= u + 1e-5).all()), (name, i)
                z = layer.forward(z)
    if name == "cnn7_shaped":  # a classifier: its logits' CROWN bounds too
        lb, ub = linear.linear_bounds(net, lo, hi, intermediate="CROWN")
        with torch.no_grad():
            assert all(bool((net(x) >= lb - 1e-5).all()) and bool((net(x) <= ub + 1e-5).all()) for x in pts)
        assert lb.shape[0] == B


def test_crops_apply_only_to_convolutional_maps():
    net = NETS["cnn7_shaped"]().eval()
    layers = parse_model(net)
    x = torch.rand(1, 3, 12, 12)
    linear.intermediate_bounds(layers, x, torch.full_like(x, 0.01), "IBP")  # sets the layers' shapes
    relus = [i for i, layer in enumerate(layers) if isinstance(layer, ReLULayer)]
    assert [patches.supported(layers, i, (1, 1, 1)) for i in relus[:-1]] == [True] * (len(relus) - 1)
    assert not patches.supported(layers, relus[-1], (20,))  # the Linear layer's neurons: the dense path
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU())
    layers = parse_model(grouped)
    x = torch.rand(1, 2, 8, 8)
    linear.intermediate_bounds(layers, x, torch.full_like(x, 0.01), "IBP")
    assert not patches.supported(layers, 3, (2, 4, 4))
