"""Random small Sequential nets, boxes and specifications for the bound-engine tests."""

from __future__ import annotations

import random

import torch
from torch import nn

from ctbench.bounds import clean_forward_and_freeze_bn, margin_spec
from ctbench.nn import Normalization

METHODS = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")


def _randomize_bn(bn: nn.Module, g: torch.Generator) -> None:
    n = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.empty(n).uniform_(-1.5, 1.5, generator=g))  # negative scales on purpose
        bn.bias.copy_(torch.empty(n).uniform_(-0.5, 0.5, generator=g))
        bn.running_mean.copy_(torch.empty(n).uniform_(-0.5, 0.5, generator=g))
        bn.running_var.copy_(torch.empty(n).uniform_(0.3, 2.0, generator=g))


def random_net(seed: int, kind: str | None = None, bn: str | None = None, dtype=torch.float64):
    """A random conv or dense net. Returns (model, input_shape, K, bn_mode).

    bn: "none", "eval" (random running statistics) or "train" (caller must freeze clean-batch stats;
    see :func:`prepare`).
    """
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    kind = kind or rng.choice(["conv", "dense"])
    bn = bn or rng.choice(["none", "eval", "train"])
    K = rng.randint(2, 5)
    layers: list[nn.Module] = []
    if kind == "conv":
        c, h = rng.randint(1, 3), rng.randint(4, 6)
        in_shape = (c, h, h)
        layers.append(
            Normalization(
                [rng.uniform(0.2, 0.6) for _ in range(c)], [rng.uniform(0.2, 1.0) for _ in range(c)]
            )
        )
        for _ in range(rng.randint(1, 2)):
            k = rng.choice([1, 2, 3])
            stride = rng.choice([1, 2])
            pad = rng.randint(0, k // 2 + (1 if k == 3 else 0))
            if (h + 2 * pad - k) // stride + 1 < 1:
                pad, stride = k, 1
            cout = rng.randint(2, 4)
            layers.append(nn.Conv2d(c, cout, k, stride=stride, padding=pad, bias=rng.random() < 0.8))
            h = (h + 2 * pad - k) // stride + 1
            c = cout
            if bn != "none":
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU())
        layers.append(nn.Flatten())
        width = c * h * h
    else:
        width = rng.randint(2, 8)
        in_shape = (width,)
    for _ in range(rng.randint(1, 2) if kind == "conv" else rng.randint(1, 3)):
        hidden = rng.randint(2, 8)
        layers.append(nn.Linear(width, hidden))
        if bn != "none" and rng.random() < 0.7:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        width = hidden
    layers.append(nn.Linear(width, K))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(rng.uniform(0.5, 2.0))
                if m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5, generator=g)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                _randomize_bn(m, g)
    return model.to(dtype), in_shape, K, bn


def prepare(model, in_shape, bn, seed, dtype=torch.float64):
    """Put the model in its BN regime: eval (running stats) or train with frozen clean-batch stats."""
    if bn == "train":
        g = torch.Generator().manual_seed(seed + 1)
        x_clean = torch.rand(8, *in_shape, generator=g).to(dtype) * 1.5 - 0.25
        model.train()
        clean_forward_and_freeze_bn(model, x_clean)
    else:
        model.eval()
    return model


def random_box(seed, in_shape, B=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.rand(B, *in_shape, generator=g, dtype=dtype)
    eps = torch.empty(B, *([1] * len(in_shape)), dtype=dtype).uniform_(0.0, 0.3, generator=g)
    eps = eps * torch.rand(B, *in_shape, generator=g, dtype=dtype)  # per-coordinate widths
    eps = torch.where(torch.rand(B, *in_shape, generator=g, dtype=dtype) < 0.1, torch.zeros_like(eps), eps)
    return x - eps, x + eps


def random_spec(seed, B, K, kind, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed + 3)
    if kind == "none":
        return None
    if kind == "margin":
        y = torch.randint(0, K, (B,), generator=g)
        return margin_spec(y, K, dtype=dtype)
    S = int(torch.randint(1, 4, (1,), generator=g))
    return torch.randn(B, S, K, generator=g, dtype=dtype)


def sample_points(lo, hi, n_uniform=200, n_corners=100, seed=0):
    """(N, B, *in) points of the box: uniform samples, random vertices, and the two extreme corners."""
    g = torch.Generator().manual_seed(seed)
    shape = (n_uniform,) + tuple(lo.shape)
    u = torch.rand(shape, generator=g, dtype=lo.dtype)
    pts = lo + (hi - lo) * u
    corners = torch.where(torch.rand((n_corners,) + tuple(lo.shape), generator=g) < 0.5, lo, hi)
    return torch.cat([pts, corners, lo.unsqueeze(0), hi.unsqueeze(0)], 0)


def outputs_at(model, C, pts):
    """C @ model(x) for points (N, B, *in) → (N, B, S) (or (N, B, K) without C)."""
    N, B = pts.shape[:2]
    with torch.no_grad():
        z = model(pts.reshape(N * B, *pts.shape[2:])).reshape(N, B, -1)
    if C is None:
        return z
    return torch.einsum("bsk,nbk->nbs", C, z)


def assert_contains(lb, ub, vals, tol, what=""):
    """Every value (N, B, S) lies in [lb − tol·(1+|lb|), ub + tol·(1+|ub|)]."""
    lb, ub = lb.detach(), ub.detach()
    lo_viol = (lb.unsqueeze(0) - vals) - tol * (1 + lb.abs().unsqueeze(0))
    hi_viol = (vals - ub.unsqueeze(0)) - tol * (1 + ub.abs().unsqueeze(0))
    worst = max(float(lo_viol.max()), float(hi_viol.max()))
    assert worst <= 0, f"{what}: bound violated by {worst:.3e} (tol {tol})"
    assert bool((lb <= ub + tol * (1 + ub.abs())).all()), f"{what}: lb > ub"


def single_thread_fixture():
    """Module-scoped autouse fixture factory: these tests run many tiny ops; one intra-op thread is
    far faster (no OpenMP hand-offs, robust to a loaded machine). Restores the thread count after."""
    import pytest

    @pytest.fixture(autouse=True, scope="module")
    def _single_thread():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(n)

    return _single_thread
