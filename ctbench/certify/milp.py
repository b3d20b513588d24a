"""Exact MILP verification (Tjeng et al. 2019, big-M ReLU encoding) with HiGHS, for small networks.

The network (eval mode, float64) is flattened into dense affine maps between its ReLUs (by
back-substituting the identity through each run of affine layers, so Conv/BN/Normalization need no
special code). With the CROWN pre-activation bounds ``[l, u]`` of every ReLU:

* ``u ≤ 0``: ``a = 0``; ``l ≥ 0``: ``a = z``;
* unstable: binary ``δ``, ``a ≥ z``, ``a ≥ 0``, ``a ≤ u·δ``, ``a ≤ z − l·(1 − δ)``,

and the input box as variable bounds. Each margin ``(C·f(x))_j`` not already proven positive by the
root bound is minimised separately. Decisions:

* **falsified**: HiGHS's minimiser, clipped to the box, has a margin < 0 in a real float64 forward
  pass (the counterexample is checked, never trusted);
* **verified**: every minimised margin has a MIP dual bound > ``tol``. This relies on HiGHS's
  feasibility/integrality tolerances (set to 1e-9 here), hence the safety threshold ``tol``
  (default 1e-4); it is the one tolerance-based decision of the cascade and runs after BaB;
* otherwise ``timeout`` (time limit hit) or ``unknown``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ctbench.bounds.layers import ReLULayer, parse_model
from ctbench.bounds.linear import intermediate_bounds
from ctbench.certify.bab import CompleteResult, backsub, cpu_threads, margins_at
from ctbench.certify.lp import INF, _add_dense_rows, _highs


def dense_segments(layers, relu_bounds, in_shape, C):
    """[(W, b)] affine maps between ReLUs (dense numpy float64); the last one is folded with C (1, S, K)."""
    relu_idx = [i for i, layer in enumerate(layers) if isinstance(layer, ReLULayer)]
    ends = relu_idx + [len(layers)]
    segs, start = [], 0
    for end in ends:
        if end < len(layers):
            shape = relu_bounds[end][0].shape[1:]
            n_out = int(np.prod(shape))
            A = torch.eye(n_out, dtype=C.dtype).reshape(1, n_out, *shape)
        else:
            A = C
        d = torch.zeros(A.shape[:2], dtype=C.dtype)
        for i in range(end - 1, start - 1, -1):
            A, di = layers[i].back(A)
            if di is not None:
                d = d + di
        segs.append((A[0].flatten(1).numpy(), d[0].numpy()))
        start = end + 1
    return segs


def milp_verify(
    model, lo, hi, C, *, deadline: float, tol: float = 1e-4, threads: int | None = 1
) -> CompleteResult:
    """MILP verification of one sample (see module docstring); same arguments as ``bab_verify``."""
    with cpu_threads(threads):
        return _milp(model, lo, hi, C, deadline=deadline, tol=tol)


def _milp(model, lo, hi, C, *, deadline, tol):
    import highspy

    layers = parse_model(model)
    c_in, r_in = (hi + lo) / 2, (hi - lo) / 2
    with torch.no_grad():
        relu_bounds, _ = intermediate_bounds(layers, c_in, r_in, "CROWN")
        root_lb, _, _, _ = backsub(layers, len(layers), C, relu_bounds, c_in, r_in)
        segs = dense_segments(layers, relu_bounds, lo.shape[1:], C)
    todo = [j for j in range(C.shape[1]) if float(root_lb[0, j]) <= 0]
    proven = min([float(root_lb[0, j]) for j in range(C.shape[1]) if j not in todo], default=float("inf"))
    if not todo:
        return CompleteResult("verified", proven)

    h, n_in, prev, ncol = _build_milp(layers, relu_bounds, segs, lo, hi, deadline)
    W, b = segs[-1]
    worst_bound = float("inf")
    sound_lb = float(root_lb[0].min())  # reported when undecided: the (sound) CROWN bound
    for j in todo:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return CompleteResult("timeout", sound_lb)
        h.setOptionValue("time_limit", max(remaining, 1e-3))
        cost = np.zeros(ncol)
        cost[prev] = W[j]
        h.changeColsCost(ncol, np.arange(ncol, dtype=np.int32), cost)
        h.changeObjectiveOffset(float(b[j]))
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        if info.primal_solution_status == 2:
            x = np.asarray(h.getSolution().col_value[:n_in])
            x = torch.from_numpy(np.clip(x, lo.flatten().numpy(), hi.flatten().numpy())).reshape(lo.shape)
            m = float(margins_at(model, x.to(lo.dtype), C).min())
            if m < 0:
                return CompleteResult("falsified", m, x)
        dual = float(info.mip_dual_bound)
        if status == highspy.HighsModelStatus.kOptimal and dual > tol:
            worst_bound = min(worst_bound, dual)
            continue
        if status == highspy.HighsModelStatus.kTimeLimit or time.monotonic() > deadline:
            return CompleteResult("timeout", sound_lb)
        return CompleteResult("unknown", sound_lb)
    return CompleteResult("verified", min(proven, worst_bound))


def _build_milp(layers, relu_bounds, segs, lo, hi, deadline):
    """The HiGHS model of the network on the input box (big-M encoding of every ReLU, module docstring):
    ``(highs, number of input columns, columns of the last ReLU layer's outputs, number of columns)``."""
    h = _highs(max(deadline - time.monotonic(), 1e-3))
    for key, value in (
        ("mip_feasibility_tolerance", 1e-9),
        ("primal_feasibility_tolerance", 1e-9),
        ("mip_rel_gap", 0.0),
    ):
        h.setOptionValue(key, value)
    n_in = lo[0].numel()
    h.addVars(n_in, lo.flatten().numpy(), hi.flatten().numpy())
    prev = np.arange(n_in)  # column indices of the previous layer's values
    ncol = n_in
    relu_list = [i for i, layer in enumerate(layers) if isinstance(layer, ReLULayer)]
    for (W, b), i in zip(segs[:-1], relu_list, strict=True):
        l = relu_bounds[i][0].flatten().numpy()
        u = relu_bounds[i][1].flatten().numpy()
        prev, ncol = _add_relu_layer(h, W, b, l, u, prev, ncol)
    return h, n_in, prev, ncol


def _add_relu_layer(h, W, b, l, u, prev, ncol):
    """Add ``a = relu(W·prev + b)`` with pre-activation bounds ``[l, u]``; returns ``(a's columns, ncol)``."""
    import highspy

    m = W.shape[0]
    a_cols = ncol + np.arange(m)
    h.addVars(m, np.zeros(m), np.maximum(u, 0.0))
    ncol += m
    unstable = (l < 0) & (u > 0)
    active = l >= 0
    nu = int(unstable.sum())
    d_cols = ncol + np.arange(nu)
    if nu:
        h.addVars(nu, np.zeros(nu), np.ones(nu))
        h.changeColsIntegrality(
            nu, d_cols.astype(np.int32), np.full(nu, highspy.HighsVarType.kInteger, np.uint8)
        )
        ncol += nu
    rows = []  # (coeffs over all cols as dict-free dense block, lower, upper)
    # a - W a_prev: dense block over [prev cols, a cols, delta cols]
    total = ncol
    for sel, lower, upper, use_delta in (
        (active, b, b, None),  # a = z (stable active)
        (unstable, b, np.full(m, INF), None),  # a - z >= 0
        (unstable, np.full(m, -INF), b - l, "l"),  # a - z - l·δ <= b - l
    ):
        k = np.nonzero(sel)[0]
        if k.size == 0:
            continue
        G = np.zeros((k.size, total))
        G[:, prev] = -W[k]
        G[np.arange(k.size), a_cols[k]] = 1.0
        if use_delta == "l":
            pos = np.cumsum(unstable) - 1
            G[np.arange(k.size), d_cols[pos[k]]] = -l[k]
        rows.append((G, lower[k], upper[k]))
    ku = np.nonzero(unstable)[0]
    if ku.size:  # a - u·δ <= 0
        G = np.zeros((ku.size, total))
        G[np.arange(ku.size), a_cols[ku]] = 1.0
        G[np.arange(ku.size), d_cols] = -u[ku]
        rows.append((G, np.full(ku.size, -INF), np.zeros(ku.size)))
    for G, lower, upper in rows:
        _add_dense_rows(h, G, np.asarray(lower, np.float64), np.asarray(upper, np.float64))
    return a_cols, ncol
