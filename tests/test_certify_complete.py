"""Complete verification: BaB and MILP agree on tiny ReLU nets; LP duals give sound bounds."""

import time

import numpy as np
import pytest
import torch
from _certify_helpers import tiny_relu_net

from ctbench.bounds import compute_bounds, margin_spec
from ctbench.certify.bab import bab_verify, margins_at
from ctbench.certify.lp import lagrangian_bound, solve_lp
from ctbench.certify.milp import milp_verify


def _problem(seed, eps, n_in=4, hidden=(10, 10), n_out=3):
    net = tiny_relu_net(seed, n_in, hidden, n_out)
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.rand(1, 1, n_in, generator=g, dtype=torch.float64)
    y = net(x).argmax(1)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    return net, lo, hi, margin_spec(y, n_out, dtype=torch.float64)


def _sampled_min(net, lo, hi, C, n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = lo + (hi - lo) * torch.rand(n, *lo.shape[1:], generator=g, dtype=torch.float64)
    return float(margins_at(net, xs, C.expand(n, -1, -1)).min())


@pytest.mark.parametrize(
    "hidden,n_seeds",
    [
        ((8, 8), 20),
        ((6, 6, 6), 20),
        pytest.param((12, 12, 12), 14, marks=pytest.mark.slow),
    ],
)
def test_bab_and_milp_agree(hidden, n_seeds):
    agree, decided_by_bab_branching = 0, 0
    for seed in range(n_seeds):
        eps = (0.05, 0.15, 0.3)[seed % 3]
        net, lo, hi, C = _problem(seed, eps, hidden=hidden)
        a = bab_verify(net, lo, hi, C, deadline=time.monotonic() + 120, batch=16)
        b = milp_verify(net, lo, hi, C, deadline=time.monotonic() + 120)
        # never contradict; within the time limit the verified sets are equal
        assert {a.status, b.status} != {"verified", "falsified"}, (seed, a, b)
        assert a.status in ("verified", "falsified") and b.status in ("verified", "falsified"), (seed, a, b)
        assert a.status == b.status, (seed, a, b)
        agree += 1
        decided_by_bab_branching += a.domains > 1
        sampled = _sampled_min(net, lo, hi, C)
        if a.status == "verified":  # a proven lower bound is below every sampled margin
            assert a.margin > 0 and a.margin <= sampled + 1e-9
        else:  # counterexamples are real points of the box with a negative margin
            for r in (a, b):
                x = r.counterexample
                assert x is not None and bool(((x >= lo) & (x <= hi)).all())
                assert float(margins_at(net, x, C).min()) < 0
    assert agree == n_seeds
    assert decided_by_bab_branching >= 1  # the test exercises real branching, not just the root bound


def test_bab_is_tighter_than_alpha_crown_where_it_matters():
    """A sample alpha-CROWN cannot certify but that is robust gets verified by BaB (and MILP)."""
    found = 0
    for seed in range(60):
        net, lo, hi, C = _problem(seed, 0.3, hidden=(8, 8))
        lb, _ = compute_bounds(net, lo, hi, "alpha-CROWN", C, bound_upper=False)
        if float(lb.min()) > 0 or _sampled_min(net, lo, hi, C, 5000) < 0:
            continue
        a = bab_verify(net, lo, hi, C, deadline=time.monotonic() + 120, batch=16)
        b = milp_verify(net, lo, hi, C, deadline=time.monotonic() + 120)
        assert a.status == b.status
        found += a.status == "verified"
        if found >= 2:
            break
    assert found >= 1


def test_timeout_is_reported_with_a_sound_margin():
    net, lo, hi, C = _problem(3, 0.3, n_in=8, hidden=(32, 32, 32), n_out=5)
    sampled = _sampled_min(net, lo, hi, C)
    r1 = bab_verify(net, lo, hi, C, deadline=time.monotonic() - 1.0, batch=4)
    r2 = milp_verify(net, lo, hi, C, deadline=time.monotonic() - 1.0)
    r3 = bab_verify(net, lo, hi, C, deadline=time.monotonic() + 60, batch=4, max_domains=6)
    for r in (r1, r2, r3):
        assert r.status in ("timeout", "unknown", "falsified", "verified")
        if r.status in ("timeout", "unknown", "verified"):  # the reported margin is a sound lower bound
            assert r.margin <= sampled + 1e-9, r


def test_lp_lower_bound_is_sound_and_tight():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, m = 6, 4
        c, G = rng.normal(size=n), rng.normal(size=(m, n))
        lo, hi = -np.ones(n), np.ones(n)
        h = G @ rng.uniform(-0.5, 0.5, size=n) - 0.1  # feasible by construction
        res = solve_lp(c, 0.3, G, h, lo, hi)
        assert res.status == "optimal"
        opt = float(c @ res.x + 0.3)
        assert res.lower_bound <= opt + 1e-9 and res.lower_bound >= opt - 1e-6
        # any y >= 0 gives a valid bound (weak duality)
        for _ in range(5):
            y = rng.uniform(0, 2, size=m)
            assert lagrangian_bound(c, 0.3, G, h, lo, hi, y) <= opt + 1e-9


def test_highs_prints_nothing_on_stdout():
    """HiGHS's banner (printed by the first Highs() of a process, from C++) must not reach stdout: the
    commands' stdout carries their tables and --json output."""
    import subprocess
    import sys

    code = ("import numpy as np; from ctbench.certify.lp import solve_lp; "
            "r = solve_lp(np.ones(2), 0.0, np.ones((1, 2)), np.zeros(1), -np.ones(2), np.ones(2)); "
            "print('status', r.status)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "status optimal\n"


def test_lp_infeasible_is_proven_empty():
    G = np.array([[1.0, 0.0], [-1.0, 0.0]])
    h = np.array([0.5, 0.0])  # x0 >= 0.5 and x0 <= 0 → empty
    res = solve_lp(np.ones(2), 0.0, G, h, -np.ones(2), np.ones(2))
    assert res.status == "infeasible" and res.lower_bound == float("inf")


def _preactivations(net, x):
    """Inputs of every nn.ReLU of ``net`` for x (B, *in), in order."""
    acts, h = [], x
    for m in net:
        if isinstance(m, torch.nn.ReLU):
            acts.append(h)
        h = m(h)
    return acts


@pytest.mark.parametrize("seed", range(6))
def test_beta_crown_subdomain_bounds_are_sound(seed):
    """On a subdomain (signs fixed for a few unstable neurons, taken from a point so it is not empty),
    the alpha-beta-CROWN bound is below every sampled margin of points that satisfy the splits."""
    from ctbench.certify.bab import _Problem

    net, lo, hi, C = _problem(seed, 0.3, hidden=(10, 10, 10))
    P = _Problem(net, lo, hi, C, intermediate="CROWN", alpha_iterations=40, alpha_lr=0.5, beta=True, beta_lr=0.5)
    g = torch.Generator().manual_seed(seed)
    x0 = lo + (hi - lo) * torch.rand(lo.shape, generator=g, dtype=torch.float64)
    z0 = _preactivations(net, x0)
    splits = {i: torch.zeros(1, *P.shapes[i], dtype=torch.int8) for i in P.relu_idx}
    chosen = 0
    for k, i in enumerate(P.relu_idx):
        l, u = P.root_bounds[i]
        unstable = ((l < 0) & (u > 0)).flatten().nonzero().flatten()
        for j in unstable[:2].tolist():
            splits[i].view(-1)[j] = 1 if float(z0[k].flatten()[j]) >= 0 else -1
            chosen += 1
    assert chosen >= 3
    bounds, empty = P.domain_bounds(splits)
    assert not bool(empty.any())
    lb_beta, _, _ = P.final_bound(bounds, C, splits)
    P.beta = False
    lb_alpha, _, _ = P.final_bound(bounds, C, splits)
    xs = lo + (hi - lo) * torch.rand(200000, *lo.shape[1:], generator=g, dtype=torch.float64)
    inside = torch.ones(len(xs), dtype=torch.bool)
    for k, z in enumerate(_preactivations(net, xs)):
        s = splits[P.relu_idx[k]].flatten().to(torch.float64)
        inside &= ((z.flatten(1) * s) >= 0).all(1)
    assert int(inside.sum()) >= 10
    sampled = margins_at(net, xs[inside], C.expand(int(inside.sum()), -1, -1)).min(0).values
    assert bool((lb_beta[0] <= sampled + 1e-9).all()), (lb_beta, sampled)
    assert bool((lb_alpha[0] <= sampled + 1e-9).all())


def test_beta_crown_needs_fewer_subdomains():
    """The split multipliers make BaB's bounds tighter: the same verified problem (one that needs
    thousands of subdomains without them), far fewer subdomains."""
    net, lo, hi, C = _problem(8, 0.3, hidden=(12, 12, 12))
    r = {beta: bab_verify(net, lo, hi, C, deadline=time.monotonic() + 120, batch=16, beta=beta) for beta in (1, 0)}
    assert r[1].status == r[0].status == "verified"
    assert r[1].domains * 10 < r[0].domains, (r[1].domains, r[0].domains)
    assert r[1].margin > 0 and r[0].margin > 0
