"""Exactness tests of the native bound engine (float64).

* Linear nets (no ReLU; Normalization / Conv2d / BatchNorm / Linear / Flatten): CROWN, CROWN-IBP and
  alpha-CROWN equal the exact bound ``C·M·c + C·b ± |C·M|·r`` of the affine map ``x ↦ Mx + b``.
* Tiny ReLU nets: the exact minimum (and maximum) of each specification row over the box is computed
  by a big-M MILP (highspy; M from IBP pre-activation bounds); every method's lower bound is ≤ the
  exact minimum and upper bound ≥ the exact maximum, and alpha-CROWN is at least as tight as CROWN.
  The MILP itself is validated: its optimal input, run through the net, reproduces its objective.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _bounds_helpers import METHODS, random_box, random_spec, single_thread_fixture
from torch import nn

from ctbench.bounds import clean_forward_and_freeze_bn, compute_bounds, ibp_bounds, unfreeze_bn
from ctbench.nn import Normalization

highspy = pytest.importorskip("highspy")
_single_thread = single_thread_fixture()

MILP_TOL = 1e-6  # HiGHS feasibility / optimality tolerances are ~1e-7..1e-9


def _segments(model):
    """Split a Sequential into affine segments separated by ReLUs."""
    segs, cur = [], []
    for m in model:
        if isinstance(m, nn.ReLU):
            segs.append(nn.Sequential(*cur))
            cur = []
        else:
            cur.append(m)
    segs.append(nn.Sequential(*cur))
    return segs


def _dense(seg, in_shape):
    """Affine segment as (M, b) with f(x) = M·vec(x) + b, by evaluating it on the unit vectors."""
    n = int(np.prod(in_shape))
    with torch.no_grad():
        zero = torch.zeros(1, *in_shape, dtype=torch.float64)
        b = seg(zero).reshape(-1)
        E = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
        M = (seg(E).reshape(n, -1) - b).T
    return M.numpy(), b.numpy()


def milp_extremes(model, in_shape, lo, hi, C):
    """Exact min and max of each row of C·model(x) over the box [lo, hi] (one sample): (mins, maxs, xs)."""
    segs = _segments(model)
    mats = []
    shape = in_shape
    for seg in segs:
        M, b = _dense(seg, shape)
        mats.append((M, b))
        with torch.no_grad():
            shape = tuple(seg(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])
    with torch.no_grad():
        _, _, inter = ibp_bounds(model, lo.unsqueeze(0), hi.unsqueeze(0), store_intermediate=True)
    pre = [(l[0].reshape(-1).numpy(), u[0].reshape(-1).numpy()) for l, u in inter[1:]]
    mins, maxs, xs = [], [], []
    for row in C:
        for sense in (1.0, -1.0):
            h = highspy.Highs()
            h.setOptionValue("output_flag", False)
            h.setOptionValue("mip_rel_gap", 0.0)
            h.setOptionValue("mip_abs_gap", 1e-12)
            x = [
                h.addVariable(lb=float(a), ub=float(bb))
                for a, bb in zip(lo.reshape(-1), hi.reshape(-1), strict=True)
            ]
            act = x
            for k, (M, b) in enumerate(mats[:-1]):
                lk, uk = pre[k]
                nxt = []
                for j in range(M.shape[0]):
                    z = h.addVariable(lb=float(lk[j]) - 1.0, ub=float(uk[j]) + 1.0)
                    h.addConstr(
                        z - sum(float(M[j, i]) * act[i] for i in range(M.shape[1]) if M[j, i] != 0)
                        == float(b[j])
                    )
                    if uk[j] <= 0:
                        a = h.addVariable(lb=0.0, ub=0.0)
                    elif lk[j] >= 0:
                        a = h.addVariable(lb=float(lk[j]), ub=float(uk[j]))
                        h.addConstr(a - z == 0.0)
                    else:
                        a = h.addVariable(lb=0.0, ub=float(uk[j]))
                        d = h.addVariable(lb=0.0, ub=1.0, type=highspy.HighsVarType.kInteger)
                        h.addConstr(a - z >= 0.0)
                        h.addConstr(a - float(uk[j]) * d <= 0.0)
                        h.addConstr(a - z - float(lk[j]) * d <= -float(lk[j]))
                    nxt.append(a)
                act = nxt
            M, b = mats[-1]
            w = row.numpy() @ M
            const = float(row.numpy() @ b)
            h.minimize(sense * sum(float(w[i]) * act[i] for i in range(len(act))))
            assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
            val = sense * h.getInfo().objective_function_value + const
            xs.append(np.array([h.val(v) for v in x]))
            (mins if sense > 0 else maxs).append(val)
    return np.array(mins), np.array(maxs), xs


def _tiny_net(seed, kind, bn):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if kind == "dense":
        in_shape = (3,)
        layers = [nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)]
    elif kind == "deep":
        in_shape = (2,)
        layers = [
            nn.Linear(2, 5),
            nn.ReLU(),
            nn.Linear(5, 5),
            nn.ReLU(),
            nn.Linear(5, 4),
            nn.ReLU(),
            nn.Linear(4, 3),
        ]
    else:
        in_shape = (1, 4, 4)
        layers = [
            Normalization([0.4], [0.5]),
            nn.Conv2d(1, 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8, 5),
            nn.ReLU(),
            nn.Linear(5, 3),
        ]
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(-1.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    if bn == "train":
        model.train()
        clean_forward_and_freeze_bn(model, torch.rand(6, *in_shape, generator=g, dtype=torch.float64))
    else:
        model.eval()
    return model, in_shape


NETS = [
    (s, k, b)
    for s, (k, b) in enumerate(
        [
            ("dense", "eval"),
            ("deep", "eval"),
            ("conv", "eval"),
            ("dense", "train"),
            ("conv", "train"),
            ("deep", "eval"),
        ]
    )
]


@pytest.mark.parametrize("seed,kind,bn", NETS)
def test_bounds_vs_milp(seed, kind, bn):
    model, in_shape = _tiny_net(seed, kind, bn)
    try:
        B = 3
        lo, hi = random_box(seed, in_shape, B=B)
        mid = (lo + hi) / 2
        lo, hi = mid - 2 * (hi - lo), mid + 2 * (hi - lo)  # wide boxes: many unstable ReLUs
        C = random_spec(seed, B, 3, "margin" if seed % 2 else "random")
        with torch.no_grad():
            results = {
                m: compute_bounds(model, lo, hi, m, C, **({"iterations": 30} if m == "alpha-CROWN" else {}))
                for m in METHODS
            }
        strictly_tighter = 0
        for i in range(B):
            mins, maxs, xs = milp_extremes(model, in_shape, lo[i], hi[i], C[i])
            for x in xs:  # the MILP's optimal inputs are in the box and evaluate consistently
                xt = torch.as_tensor(x).reshape(1, *in_shape)
                assert bool((xt >= lo[i] - 1e-7).all() and (xt <= hi[i] + 1e-7).all())
            with torch.no_grad():
                vals = torch.stack(
                    [C[i] @ model(torch.as_tensor(x).reshape(1, *in_shape))[0] for x in xs]
                ).numpy()
            S = C.shape[1]
            for s in range(S):
                assert abs(vals[2 * s, s] - mins[s]) < 1e-5 and abs(vals[2 * s + 1, s] - maxs[s]) < 1e-5
            for m, (lb, ub) in results.items():
                assert np.all(lb[i].numpy() <= mins + MILP_TOL), (m, lb[i], mins)
                assert np.all(ub[i].numpy() >= maxs - MILP_TOL), (m, ub[i], maxs)
            lb_c, ub_c = results["CROWN"]
            lb_a, ub_a = results["alpha-CROWN"]
            assert bool((lb_a[i] >= lb_c[i] - 1e-12).all() and (ub_a[i] <= ub_c[i] + 1e-12).all())
            strictly_tighter += int((lb_a[i] > lb_c[i] + 1e-9).sum() + (ub_a[i] < ub_c[i] - 1e-9).sum())
        assert all(torch.isfinite(v).all() for r in results.values() for v in r)
    finally:
        unfreeze_bn(model)


def test_alpha_crown_improves_somewhere():
    """On wide boxes alpha-CROWN must actually tighten some CROWN bounds (the optimizer works)."""
    improved = 0
    for seed in range(4):
        model, in_shape = _tiny_net(seed, "deep", "eval")
        lo, hi = random_box(seed, in_shape, B=4)
        mid = (lo + hi) / 2
        lo, hi = mid - 3 * (hi - lo) - 0.2, mid + 3 * (hi - lo) + 0.2
        with torch.no_grad():
            lb_c, ub_c = compute_bounds(model, lo, hi, "CROWN")
        lb_a, ub_a = compute_bounds(model, lo, hi, "alpha-CROWN")
        assert bool((lb_a >= lb_c - 1e-12).all() and (ub_a <= ub_c + 1e-12).all())
        improved += int((lb_a > lb_c + 1e-6).sum() + (ub_a < ub_c - 1e-6).sum())
    assert improved > 0


def _linear_net(seed):
    torch.manual_seed(seed)
    layers = [
        Normalization([0.3, 0.6], [0.4, 0.9]),
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 2, 2),
        nn.Flatten(),
        nn.Linear(8, 6),
        nn.BatchNorm1d(6),
        nn.Linear(6, 4),
    ]
    model = nn.Sequential(*layers).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(-1.5, 1.5, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
    return model.eval(), (2, 5, 5)


@pytest.mark.parametrize("seed", range(5))
def test_linear_net_exact(seed):
    model, in_shape = _linear_net(seed)
    lo, hi = random_box(seed, in_shape, B=3)
    C = random_spec(seed, 3, 4, "random")
    seg_M, seg_b = _dense(model, in_shape)
    M, b = torch.as_tensor(seg_M), torch.as_tensor(seg_b)
    c, r = ((lo + hi) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
    CM = C @ M  # (B, S, n)
    center = torch.einsum("bsn,bn->bs", CM, c) + C @ b
    rad = torch.einsum("bsn,bn->bs", CM.abs(), r)
    for method in ("CROWN-IBP", "CROWN", "alpha-CROWN"):
        lb, ub = compute_bounds(model, lo, hi, method, C)
        torch.testing.assert_close(lb, center - rad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ub, center + rad, rtol=1e-10, atol=1e-10)
    lb, ub = compute_bounds(model, lo, hi, "IBP", C)  # IBP: sound, generally looser
    assert bool((lb <= center - rad + 1e-10).all() and (ub >= center + rad - 1e-10).all())
    # frozen clean-batch statistics give an affine map too
    model.train()
    clean_forward_and_freeze_bn(model, torch.rand(5, *in_shape, dtype=torch.float64))
    try:
        seg_M, seg_b = _dense(model, in_shape)
        M, b = torch.as_tensor(seg_M), torch.as_tensor(seg_b)
        CM = C @ M
        center = torch.einsum("bsn,bn->bs", CM, c) + C @ b
        rad = torch.einsum("bsn,bn->bs", CM.abs(), r)
        lb, ub = compute_bounds(model, lo, hi, "CROWN", C)
        torch.testing.assert_close(lb, center - rad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ub, center + rad, rtol=1e-10, atol=1e-10)
    finally:
        unfreeze_bn(model)
