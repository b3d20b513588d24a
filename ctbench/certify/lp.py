"""Small LPs with HiGHS (highspy) and a *solver-independent* sound lower bound from their duals.

``min c·x + d  s.t.  G x ≥ h,  lo ≤ x ≤ hi`` (dense numpy, float64). HiGHS solves it with
tolerances, so its optimal value is not a proof. Any ``y ≥ 0`` gives the Lagrangian lower bound

    L(y) = d + y·h + Σ_i min((c − Gᵀy)_i·lo_i, (c − Gᵀy)_i·hi_i)  ≤  min over the feasible set,

computed here in float64 from the solver's row duals (weak duality), so a "verified" decision rests on
that arithmetic, not on the solver's tolerances. An infeasible LP is proven empty the same way, by
the Lagrangian bound of the auxiliary LP ``min t s.t. G x + t ≥ h, t ∈ [0, T]`` being > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctbench.io import quiet_stdout

INF = float("inf")
_BANNER_DONE = False  #: HiGHS prints its banner on stdout from the first Highs() of a process


@dataclass
class LPResult:
    status: str  #: "optimal", "infeasible" (proven empty), or "failed"
    lower_bound: float  #: sound lower bound of the minimum (+inf if proven empty; -inf if failed)
    x: np.ndarray | None  #: HiGHS's minimiser (feasible up to tolerances), or None


def _new_highs():
    """A silent ``highspy.Highs``. The first one of a process prints HiGHS's banner to file descriptor 1
    from C++, before any option can be set; it is sent to /dev/null so that stdout stays the command's
    own (``--json`` output, tables)."""
    global _BANNER_DONE
    import highspy

    if _BANNER_DONE:
        h = highspy.Highs()
    else:
        with quiet_stdout():
            h = highspy.Highs()
        _BANNER_DONE = True
    h.setOptionValue("output_flag", False)
    return h


def _highs(time_limit: float | None):
    h = _new_highs()
    # No "threads" option: HiGHS has one process-wide scheduler, and a Highs object whose "threads"
    # differs from the scheduler's (set by any earlier Highs in the process) refuses to run.
    if time_limit is not None:
        h.setOptionValue("time_limit", max(float(time_limit), 1e-3))
    return h


def _add_dense_rows(h, G: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
    if G.shape[0] == 0:
        return
    rows, cols = np.nonzero(G)
    starts = np.searchsorted(rows, np.arange(G.shape[0])).astype(np.int32)
    h.addRows(
        G.shape[0],
        lower.astype(np.float64),
        upper.astype(np.float64),
        len(rows),
        starts,
        cols.astype(np.int32),
        G[rows, cols].astype(np.float64),
    )


def lagrangian_bound(c, d, G, h, lo, hi, y) -> float:
    """Sound lower bound ``L(y)`` (see module docstring); ``y`` is clipped to ≥ 0."""
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, None)
    red = c - G.T @ y if G.shape[0] else c.copy()
    box = np.minimum(red * lo, red * hi).sum()
    return float(d + (y @ h if G.shape[0] else 0.0) + box)


def solve_lp(c, d, G, h, lo, hi, time_limit: float | None = None) -> LPResult:
    """Minimise ``c·x + d`` over ``{G x ≥ h, lo ≤ x ≤ hi}``; return a sound lower bound and the minimiser."""
    import highspy

    c, G, h, lo, hi = (np.asarray(a, dtype=np.float64) for a in (c, G, h, lo, hi))
    n, m = c.shape[0], G.shape[0]
    box_only = float(d + np.minimum(c * lo, c * hi).sum())
    if m == 0:
        return LPResult("optimal", box_only, np.where(c > 0, lo, hi))
    hs = _highs(time_limit)
    hs.addVars(n, lo, hi)
    _add_dense_rows(hs, G, h, np.full(m, INF))
    hs.changeColsCost(n, np.arange(n, dtype=np.int32), c)
    hs.run()
    status = hs.getModelStatus()
    if status == highspy.HighsModelStatus.kOptimal:
        sol = hs.getSolution()
        y = np.asarray(sol.row_dual, dtype=np.float64)
        lb = max(lagrangian_bound(c, d, G, h, lo, hi, y), lagrangian_bound(c, d, G, h, lo, hi, -y), box_only)
        return LPResult("optimal", lb, np.asarray(sol.col_value, dtype=np.float64))
    if status == highspy.HighsModelStatus.kInfeasible and _proven_empty(G, h, lo, hi, time_limit):
        return LPResult("infeasible", INF, None)
    return LPResult("failed", box_only, None)


def _proven_empty(G, h, lo, hi, time_limit) -> bool:
    """True iff the auxiliary LP proves ``{G x ≥ h} ∩ box`` empty (sound, via its Lagrangian bound)."""
    import highspy

    n, m = G.shape[1], G.shape[0]
    slack_needed = h - np.minimum(G * lo, G * hi).sum(1)  # t this large is feasible at every x
    T = float(max(slack_needed.max(), 0.0) + 1.0)
    Ga = np.concatenate([G, np.ones((m, 1))], 1)
    ca = np.zeros(n + 1)
    ca[-1] = 1.0
    loa, hia = np.append(lo, 0.0), np.append(hi, T)
    hs = _highs(time_limit)
    hs.addVars(n + 1, loa, hia)
    _add_dense_rows(hs, Ga, h, np.full(m, INF))
    hs.changeColsCost(n + 1, np.arange(n + 1, dtype=np.int32), ca)
    hs.run()
    if hs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return False
    y = np.asarray(hs.getSolution().row_dual, dtype=np.float64)
    lb = max(lagrangian_bound(ca, 0.0, Ga, h, loa, hia, y), lagrangian_bound(ca, 0.0, Ga, h, loa, hia, -y))
    return lb > 0
