"""Complete verification by branch-and-bound with ReLU splitting (BaB; Bunel et al. 2018/2020;
Wang et al. 2021).

Input: one sample's ε-box ``[lo, hi]`` and its margin specification ``C`` (rows ``e_y − e_i``); the
property is ``C·f(x) > 0`` for every ``x`` in the box. Everything runs in **float64** on a double copy
of the (eval-mode) model.

* Root: CROWN pre-activation bounds of every ReLU and an (alpha-)CROWN bound of every margin; margins
  already proven positive are dropped (they stay proven on every subdomain).
* A subdomain fixes the sign of some unstable ReLU pre-activations (``split = +1``: ``z ≥ 0``,
  ``−1``: ``z ≤ 0``). Its bounds: interval propagation intersected with the root bounds, CROWN
  tightening of the later layers' pre-activations, and the split applied as ``l ← max(l, 0)`` /
  ``u ← min(u, 0)``; then the final bound: alpha-CROWN slopes optimised together with beta-CROWN
  multipliers ``β ≥ 0`` of the split constraints ``s·z ≥ 0`` (Wang et al. 2021; ``backsub``). Each
  relaxation holds for every point of the subdomain, and the subdomains of a split cover their parent,
  so "every open subdomain has all margin lower bounds > 0" proves the property. A subdomain with
  ``l > u`` somewhere is empty.
* Many subdomains are bounded in one batched call (``batch``); the subdomain with the lowest bound is
  split first, on the unstable neuron with the largest score ``|A_k|·u_k(−l_k)/(u_k−l_k)``
  (BaBSR-like: back-substitution coefficient of the worst margin × the ReLU relaxation's intercept).
* A subdomain without unstable ReLUs is affine on its region: its exact minimum over the box with the
  split constraints is an LP (:mod:`ctbench.certify.lp`, sound bound from the duals), so the search is
  complete.
* Falsification: the minimiser of each subdomain's linear lower bound (a box corner) and each LP's
  minimiser are evaluated with a real forward pass; a point of the box with a margin < 0 is a
  counterexample.
* The search stops at ``deadline`` (``time.monotonic()``) → ``timeout``, or at ``max_domains``
  → ``unknown``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from ctbench.bounds.ibp import relu_box
from ctbench.bounds.layers import ReLULayer, batch_dot, parse_model
from ctbench.bounds.linear import crown_tighten, intermediate_bounds, relu_back
from ctbench.certify.lp import solve_lp

EMPTY_TOL = 1e-9


@dataclass
class CompleteResult:
    """Outcome of a complete verifier on one sample."""

    status: str  #: "verified", "falsified", "timeout" or "unknown"
    margin: float  #: verified: proven lower bound of the min margin (> 0); falsified: counterexample's margin
    counterexample: torch.Tensor | None = None
    domains: int = 0


def backsub(layers, upto, A, relu_bounds, c_in, r_in, alphas=None, record=False, betas=None):
    """Back-substitute ``A·z_upto`` to the input (like ``linear.backsub_lower``) and return more.

    ``betas[i]`` (optional, beta-CROWN; Wang et al. 2021): ``β·s`` (B, S, *shape) for the ReLU at
    layer i, with split signs ``s`` ∈ {−1, 0, +1} and multipliers ``β ≥ 0``. Every point of a subdomain
    has ``s·z ≥ 0`` at its split neurons, so ``A·f ≥ A·f − Σ β s z`` there and the bound of the right
    side is a bound of the left for any β ≥ 0; optimising β brings the split constraints into the
    relaxation. Returns ``(lb, A_in, d, records)``: the lower bound (B, S), the input coefficients
    (B, S, *in), the constant (B, S) and, if ``record``, ``{relu index: A at that ReLU's output}``.
    """
    d_total = torch.zeros(A.shape[:2], dtype=A.dtype, device=A.device)
    records = {}
    for i in range(upto - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, ReLULayer):
            if record:
                records[i] = A
            l, u = relu_bounds[i]
            A, d = relu_back(A, l, u, None if alphas is None else alphas.get(i))
            if betas is not None and i in betas:
                A = A - betas[i]
        else:
            A, d = layer.back(A)
        if d is not None:
            d_total = d_total + d
    lb = batch_dot(A, c_in) - batch_dot(A.abs(), r_in) + d_total
    return lb, A, d_total, records


def margins_at(model, x, C):
    """Concrete margins ``C·f(x)`` (B, S) for x (B, *in)."""
    with torch.no_grad():
        return torch.bmm(C, model(x).unsqueeze(-1)).squeeze(-1)


class _Problem:
    """One sample's verification problem, in float64."""

    def __init__(self, model, lo, hi, C, *, intermediate, alpha_iterations, alpha_lr, beta=True, beta_lr=0.5):
        self.model = model
        self.beta, self.beta_lr = beta, beta_lr
        self.layers = parse_model(model)
        self.lo, self.hi = lo, hi  # (1, *in)
        self.c_in, self.r_in = (hi + lo) / 2, (hi - lo) / 2
        self.C = C  # (1, S, K)
        self.intermediate = intermediate
        self.alpha_iterations = alpha_iterations
        self.alpha_lr = alpha_lr
        self.relu_idx = [i for i, layer in enumerate(self.layers) if isinstance(layer, ReLULayer)]
        with torch.no_grad():
            self.root_bounds, _ = intermediate_bounds(self.layers, self.c_in, self.r_in, "CROWN")
        self.shapes = {i: self.root_bounds[i][0].shape[1:] for i in self.relu_idx}
        self.sizes = {i: int(np.prod(self.shapes[i])) for i in self.relu_idx}

    # -- bounding a batch of subdomains -----------------------------------------------------------
    @torch.no_grad()
    def domain_bounds(self, splits):
        """Pre-activation bounds of D subdomains; ``splits[i]`` (D, *shape) int8. Returns (bounds, empty)."""
        D = next(iter(splits.values())).shape[0] if splits else 1
        c_in = self.c_in.expand(D, *self.c_in.shape[1:])
        r_in = self.r_in.expand(D, *self.r_in.shape[1:])
        c, r = c_in, r_in
        bounds, empty = {}, torch.zeros(D, dtype=torch.bool)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, ReLULayer):
                rl, ru = self.root_bounds[i]
                l, u = torch.maximum(c - r, rl), torch.minimum(c + r, ru)
                if self.intermediate == "CROWN" and i != self.relu_idx[0]:
                    l, u = crown_tighten(self.layers, i, l, u, bounds, c_in, r_in)
                s = splits[i]
                l = torch.where(s > 0, l.clamp(min=0), l)
                u = torch.where(s < 0, u.clamp(max=0), u)
                empty |= ((l - u) > EMPTY_TOL).flatten(1).any(1)
                u = torch.maximum(u, l)
                bounds[i] = (l, u)
                c, r = relu_box((u + l) / 2, (u - l) / 2)
            else:
                c, r = layer.ibp(c, r)
        return bounds, empty

    def final_bound(self, bounds, C, splits=None):
        """(alpha-, beta-)CROWN lower bound (D, S) of ``C·f`` and the CROWN records for branching/candidates.

        ``splits`` ({i: (D, *shape) int8}, optional): the subdomains' split signs; with ``beta`` the
        slopes α ∈ [0, 1] and multipliers β ≥ 0 are optimised together (every iterate is a sound
        bound; the best one is kept).
        """
        D = C.shape[0]
        n = len(self.layers)
        c_in = self.c_in.expand(D, *self.c_in.shape[1:])
        r_in = self.r_in.expand(D, *self.r_in.shape[1:])
        with torch.no_grad():
            lb, A_in, _, records = backsub(self.layers, n, C, bounds, c_in, r_in, record=True)
        best = lb
        alphas = {}
        for i, (l, u) in bounds.items():
            unstable = (l < 0) & (u > 0)
            adaptive = (u + l >= 0).to(u.dtype)  # CROWN's initial lower slope (any value in [0, 1] is sound)
            if bool(unstable.any()):
                alphas[i] = adaptive.unsqueeze(1).expand(-1, C.shape[1], *adaptive.shape[1:]).clone()
        signs, betas = {}, {}
        if self.beta and splits is not None:
            for i, sp in splits.items():
                if bool(sp.any()):
                    signs[i] = sp.to(C.dtype).unsqueeze(1)  # (D, 1, *shape)
                    betas[i] = torch.zeros(D, C.shape[1], *sp.shape[1:], dtype=C.dtype)
        if (alphas or betas) and self.alpha_iterations > 0:
            params = [a.requires_grad_(True) for a in alphas.values()]
            beta_params = [b.requires_grad_(True) for b in betas.values()]
            groups = [{"params": params, "lr": self.alpha_lr}] if params else []
            groups += [{"params": beta_params, "lr": self.beta_lr}] if beta_params else []
            opt = torch.optim.Adam(groups)

            def bound():
                bs = {i: betas[i] * signs[i] for i in betas}
                return backsub(self.layers, n, C, bounds, c_in, r_in, alphas, betas=bs)[0]

            with torch.enable_grad():
                for step in range(self.alpha_iterations):
                    cur = bound()
                    if step:
                        best = torch.maximum(best, cur.detach())
                    grads = torch.autograd.grad(-cur.sum(), params + beta_params)
                    for p, g in zip(params + beta_params, grads, strict=True):
                        p.grad = g
                    opt.step()
                    with torch.no_grad():
                        for p in params:
                            p.clamp_(0.0, 1.0)
                        for b in beta_params:
                            b.clamp_(min=0.0)
                with torch.no_grad():
                    best = torch.maximum(best, bound())
        return best.detach(), A_in, records

    # -- branching ------------------------------------------------------------------------------
    def branch_scores(self, bounds, records, worst):
        """(D, total) scores over all ReLU neurons (−inf for stable ones) and the per-layer offsets."""
        parts = []
        for i in self.relu_idx:
            l, u = bounds[i]
            A = records[i]  # (D, S, *shape)
            Aw = A[torch.arange(A.shape[0]), worst].flatten(1)  # row of the worst margin
            lf, uf = l.flatten(1), u.flatten(1)
            unstable = (lf < 0) & (uf > 0)
            icpt = torch.where(
                unstable,
                uf * (-lf) / torch.where(unstable, uf - lf, torch.ones_like(uf)),
                torch.zeros_like(uf),
            )
            score = Aw.abs() * icpt + 1e-12 * icpt
            parts.append(torch.where(unstable, score, torch.full_like(score, -float("inf"))))
        return torch.cat(parts, 1)

    def locate(self, flat):
        """Flat neuron index over all ReLU layers → (layer index, index within the layer)."""
        for i in self.relu_idx:
            if flat < self.sizes[i]:
                return i, flat
            flat -= self.sizes[i]
        raise IndexError(flat)

    # -- leaves: exact LP ---------------------------------------------------------------------------
    @torch.no_grad()
    def leaf_lp(self, bounds, split, C_rows, deadline):
        """Exact minimum of each margin row over a subdomain without unstable ReLUs.

        ``bounds``: this domain's (1, *shape) bounds; ``split``: {i: (*shape) int8}. Returns
        (min sound lower bound over rows, counterexample or None, ok) where ok=False means undecided.
        """
        n = len(self.layers)
        _, A_in, d, _ = backsub(self.layers, n, C_rows, bounds, self.c_in, self.r_in)
        G_parts, h_parts = [], []
        for i in self.relu_idx:
            s = split[i].flatten()
            idx = torch.nonzero(s).flatten()
            if idx.numel() == 0:
                continue
            E = torch.zeros(1, idx.numel(), self.sizes[i], dtype=self.c_in.dtype)
            E[0, torch.arange(idx.numel()), idx] = 1.0
            E = E.reshape(1, idx.numel(), *self.shapes[i])
            _, a, dk, _ = backsub(self.layers, i, E, bounds, self.c_in, self.r_in)
            sign = s[idx].to(a.dtype)
            G_parts.append(sign[:, None] * a[0].flatten(1))
            h_parts.append(-sign * dk[0])
        n_in = self.c_in[0].numel()
        G = torch.cat(G_parts).numpy() if G_parts else np.zeros((0, n_in))
        h = torch.cat(h_parts).numpy() if h_parts else np.zeros(0)
        lo, hi = self.lo.flatten().numpy(), self.hi.flatten().numpy()
        worst = float("inf")
        for j in range(C_rows.shape[1]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return worst, None, False
            res = solve_lp(A_in[0, j].flatten().numpy(), float(d[0, j]), G, h, lo, hi, time_limit=remaining)
            if res.status == "infeasible":
                return float("inf"), None, True
            if res.lower_bound > 0:
                worst = min(worst, res.lower_bound)
                continue
            if res.x is not None:
                x = torch.from_numpy(np.clip(res.x, lo, hi)).reshape(self.lo.shape).to(self.lo.dtype)
                m = margins_at(self.model, x, self.C)
                if float(m.min()) < 0:
                    return float(m.min()), x, True
            return res.lower_bound, None, False
        return worst, None, True


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Temporarily limit torch's intra-op CPU threads (small per-sample problems run much faster on one
    thread, especially on a shared machine); ``None`` leaves the setting alone."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def bab_verify(
    model,
    lo,
    hi,
    C,
    *,
    deadline: float,
    batch: int = 64,
    intermediate: str = "CROWN",
    alpha_iterations: int = 5,
    alpha_lr: float = 0.5,
    max_domains: int = 20000,
    threads: int | None = 1,
    beta: bool = True,
    beta_lr: float = 0.5,
) -> CompleteResult:
    """Branch-and-bound on one sample (see module docstring).

    model: float64 ``nn.Sequential`` in eval mode; lo, hi: (1, *in) float64 box; C: (1, S, K) float64
    margin specification; deadline: ``time.monotonic()`` value at which to give up; threads: torch CPU
    threads during the search (None: unchanged); beta / beta_lr: optimise beta-CROWN multipliers of the
    split constraints (Adam step size beta_lr) alongside the alpha slopes.
    """
    with cpu_threads(threads):
        return _bab(
            model,
            lo,
            hi,
            C,
            deadline=deadline,
            batch=batch,
            intermediate=intermediate,
            alpha_iterations=alpha_iterations,
            alpha_lr=alpha_lr,
            max_domains=max_domains,
            beta=beta,
            beta_lr=beta_lr,
        )


def _bab(
    model, lo, hi, C, *, deadline, batch, intermediate, alpha_iterations, alpha_lr, max_domains, beta, beta_lr
):
    P = _Problem(
        model,
        lo,
        hi,
        C,
        intermediate=intermediate,
        alpha_iterations=alpha_iterations,
        alpha_lr=alpha_lr,
        beta=beta,
        beta_lr=beta_lr,
    )
    root_split = {i: torch.zeros(1, *P.shapes[i], dtype=torch.int8) for i in P.relu_idx}
    bounds, _ = P.domain_bounds(root_split)
    lb, A_in, _ = P.final_bound(bounds, C)
    cex = _check_candidates(P, A_in, lb)
    if cex is not None:
        return CompleteResult("falsified", cex[0], cex[1], 1)
    keep = (lb[0] <= 0).nonzero().flatten()
    if keep.numel() == 0:
        return CompleteResult("verified", float(lb.min()), None, 1)
    proven = float(lb[0][lb[0] > 0].min()) if bool((lb[0] > 0).any()) else float("inf")
    Ck = C[:, keep]
    # open domains: list of (lb, split dict of (*shape) int8)
    open_domains = [(float(lb[0, keep].min()), {i: s[0] for i, s in root_split.items()})]
    # pending: domains bounded but not yet branched: (lb, split, branch (i, k)) — computed lazily below
    n_domains = 1
    pending = _expand(P, open_domains, Ck, deadline)
    if isinstance(pending, CompleteResult):
        if pending.status != "falsified":
            pending.margin = open_domains[0][0]
        return pending
    if pending["undecided_leaf"] is not None:  # the root itself is an undecided LP leaf
        return CompleteResult("unknown", open_domains[0][0], None, n_domains)
    queue = pending["queue"]
    proven = min(proven, pending["proven"])
    while queue:
        if time.monotonic() > deadline:
            return CompleteResult("timeout", min(d[0] for d in queue), None, n_domains)
        if n_domains >= max_domains:
            return CompleteResult("unknown", min(d[0] for d in queue), None, n_domains)
        queue.sort(key=lambda d: d[0])
        take, queue = queue[: max(1, batch // 2)], queue[max(1, batch // 2) :]
        children = []
        for _, split, (i, k) in take:
            for sign in (1, -1):
                child = {j: s.clone() for j, s in split.items()}
                child[i].view(-1)[k] = sign
                children.append((None, child))
        n_domains += len(children)
        out = _expand(P, children, Ck, deadline)
        # sound global lower bound if we stop now: the parents' bounds cover their children
        global_lb = min([d[0] for d in take] + [d[0] for d in queue])
        if isinstance(out, CompleteResult):
            out.domains = n_domains
            if out.status != "falsified":
                out.margin = global_lb
            return out
        proven = min(proven, out["proven"])
        queue += out["queue"]
        if out["undecided_leaf"] is not None:
            return CompleteResult("unknown", global_lb, None, n_domains)
    return CompleteResult("verified", proven, None, n_domains)


def _check_candidates(P, A_in, lb):
    """Evaluate the minimiser of the worst margin's linear lower bound for each domain (a box corner)."""
    D = A_in.shape[0]
    worst = lb.argmin(1)
    A = A_in[torch.arange(D), worst]
    lo, hi = P.lo.expand_as(A), P.hi.expand_as(A)
    x = torch.where(A > 0, lo, hi)
    m = margins_at(P.model, x, P.C.expand(D, -1, -1)).min(1).values
    j = int(m.argmin())
    if float(m[j]) < 0:
        return float(m[j]), x[j : j + 1].clone()
    return None


def _expand(P, domains, Ck, deadline):
    """Bound a list of (lb, split) domains; return counterexample / new queue entries."""
    splits = {i: torch.stack([d[1][i] for d in domains]) for i in P.relu_idx}
    bounds, empty = P.domain_bounds(splits)
    D = len(domains)
    C = Ck.expand(D, -1, -1)
    lb, A_in, records = P.final_bound(bounds, C, splits)
    cex = _check_candidates(P, A_in, lb)
    if cex is not None:
        return CompleteResult("falsified", cex[0], cex[1])
    worst_row = lb.argmin(1)
    scores = P.branch_scores(bounds, records, worst_row)
    best_score, best_idx = scores.max(1)
    queue, proven, undecided_leaf = [], float("inf"), None
    for d in range(D):
        if bool(empty[d]):
            continue
        lbd = float(lb[d].min())
        if lbd > 0:
            proven = min(proven, lbd)
            continue
        split = {i: splits[i][d] for i in P.relu_idx}
        if not torch.isfinite(best_score[d]):  # no unstable neuron: exact LP
            dom_bounds = {i: (bounds[i][0][d : d + 1], bounds[i][1][d : d + 1]) for i in P.relu_idx}
            value, x, ok = P.leaf_lp(dom_bounds, split, Ck, deadline)
            if x is not None:
                return CompleteResult("falsified", value, x)
            if not ok:
                if time.monotonic() > deadline:
                    return CompleteResult("timeout", value, None)
                undecided_leaf = value if undecided_leaf is None else min(undecided_leaf, value)
                continue
            if value != float("inf"):
                proven = min(proven, value)
            continue
        queue.append((lbd, split, P.locate(int(best_idx[d]))))
    return {"queue": queue, "proven": proven, "undecided_leaf": undecided_leaf}
