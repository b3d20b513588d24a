"""``torch.compile`` of the CROWN ReLU relaxation (issue 16); on for training by default.

The relaxation of :class:`ctbench.bounds.linear._ReluBackCROWN` (CROWN-IBP training and certification,
Zhang et al. 2020) is pure elementwise arithmetic plus per-row reductions over tensors of the
activations' size: eager PyTorch makes ~20 passes over (B, S, C, H, W) memory in the forward and ~30 in
the backward, which is ~40 % of a loss-fusion CROWN-IBP step on CNN7 at batch 128
(``benchmarks/README.md``). TorchInductor fuses each direction into a few loops. The functions here are
that math written once, without saved intermediates: the forward keeps only ``A, l, u`` and the
backward recomputes the slopes inside its fused loops, so the compiled path also holds less memory.

Switch: the environment variable ``CTBENCH_COMPILE`` (read at each call, so Snakemake and SLURM jobs
inherit it) or :func:`set_compile` (overrides the environment; ``None`` defers to it again):

* ``auto`` (default, also when unset): compiled where gradients flow (CROWN-IBP *training* steps,
  ~2× faster on CPU for CNN7) and the coefficients have at least :data:`AUTO_MIN_ELEMENTS` entries;
  eager for small networks and batches (where the fused loops save microseconds per step but the
  first compile costs 6–20 s per process) and in ``no_grad`` certification, whose code path stays
  the one the soundness tests exercise most. If compiling fails (no C++ compiler for CPU, no Triton
  for CUDA, ...) one warning is logged and the process continues eagerly;
* ``1``: compiled everywhere, certification included; a compile failure is an error;
* ``0``: never compiled.

The first call per dtype and shape class compiles for seconds; results differ from the eager path
only by float rounding in the row sums (tests/test_bounds_fused.py checks values and gradients
against the eager relaxation).

Shapes: ``A`` (B, S, *shape) coefficients of a linear function of the ReLU's output, ``l``, ``u``
(B, *shape) its pre-activation bounds; per-row outputs (B, S).
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from ctbench.errors import CTBenchError

ENV = "CTBENCH_COMPILE"
_ENV_VALUES = {"": "auto", "auto": "auto", "1": "on", "true": "on", "yes": "on", "on": "on",
               "0": "off", "false": "off", "no": "off", "off": "off"}
#: ``auto`` compiles a relaxation call whose ``A`` has at least this many elements (CNN7 at batch 128:
#: 6.4 M on MNIST for the first ReLU in loss fusion; the small test and demo networks stay below).
AUTO_MIN_ELEMENTS = 2**20
_override: bool | None = None
_failure: str | None = None  # why compiling failed in this process ("auto" then stays eager)

logger = logging.getLogger(__name__)


def set_compile(flag: bool | None) -> None:
    """Force the compiled relaxation on (True) or off (False); None: follow ``$CTBENCH_COMPILE``."""
    global _override
    _override = flag


def mode() -> str:
    """``"auto"``, ``"on"`` or ``"off"``: the override of :func:`set_compile`, else ``$CTBENCH_COMPILE``."""
    if _override is not None:
        return "on" if _override else "off"
    value = os.environ.get(ENV, "").strip().lower()
    if value not in _ENV_VALUES:
        raise CTBenchError(f"{ENV}={value!r}: expected auto (default), 1 (always compile) or 0 (never)")
    return _ENV_VALUES[value]


def use_compiled(training: bool, numel: int) -> bool:
    """Whether a relaxation call runs compiled now; ``training``: gradients flow through it;
    ``numel``: the number of elements of its coefficients ``A``."""
    m = mode()
    if m == "auto":
        return training and numel >= AUTO_MIN_ELEMENTS and _failure is None
    return m == "on"


def _call(name, fn, *args):
    """Run compiled ``fn``; under ``auto`` a compile failure logs once and runs ``fn`` eagerly."""
    global _failure
    if _failure is None or mode() == "on":
        try:
            return _compiled(fn)(*args)
        except Exception as e:  # compiler/toolchain errors surface here, at the first call
            why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            if mode() == "on":
                raise CTBenchError(
                    f"{ENV}=1 but torch.compile of the CROWN relaxation failed ({why}); set {ENV}=0 or auto"
                ) from e
            _failure = why
            logger.warning("torch.compile of the CROWN relaxation failed in %s (%s); continuing eagerly "
                           "(set %s=0 to skip the attempt)", name, _failure, ENV)
    return fn(*args)


def _rowdot(X: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Σ over *shape of X (B, S, *shape) · v (B, *shape) → (B, S), as a fusable product-and-sum."""
    return (X * v.unsqueeze(1)).flatten(2).sum(-1)


def _rowsum(g: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Σ over S of g (B, S) · X (B, S, *shape) → (B, *shape)."""
    return (X * g.reshape(g.shape + (1,) * (X.dim() - 2))).sum(1)


def _relaxation(l, u):
    lc = l.clamp(max=0)
    uc = u.clamp(min=0)
    den = (uc - lc).clamp(min=torch.finfo(u.dtype).tiny)
    s = uc / den
    return lc, uc, den, s


def relax_forward(A, l, u, with_cut: bool):
    """``(A', d, cut)``: the formulas of ``_ReluBackCROWN.forward`` (cut = empty when not ``with_cut``)."""
    lc, uc, den, s = _relaxation(l, u)
    t = -(lc * s)
    a = (u + l >= 0).to(u.dtype)
    slope = torch.where(A >= 0, a.unsqueeze(1), s.unsqueeze(1))
    A_neg = A.clamp(max=0)
    d = _rowdot(A_neg, t)
    if not with_cut:
        return A * slope, d, d.new_empty(0)
    lo = l.clamp(min=0)
    cut = _rowdot(A, lo) + _rowdot(A_neg, uc - lo)
    return A * slope, d, cut


def relax_backward(A, l, u, G, g_d, g_cut, need_A: bool, need_l: bool, need_u: bool, use_cut: bool):
    """``(dA, dl, du)`` of :func:`relax_forward` (None where not needed); ``g_cut`` used iff ``use_cut``."""
    lc, uc, den, s = _relaxation(l, u)
    t = -(lc * s)
    A_neg = A.clamp(max=0)
    neg = A < 0
    dA = dl = du = None
    if need_A:
        a = (u + l >= 0).to(u.dtype)
        slope = torch.where(A >= 0, a.unsqueeze(1), s.unsqueeze(1))
        gd = g_d.reshape(g_d.shape + (1,) * (A.dim() - 2))
        dA = G * slope + torch.where(neg, gd * t.unsqueeze(1), 0.0)
        if use_cut:
            gc = g_cut.reshape(g_cut.shape + (1,) * (A.dim() - 2))
            dA = dA + torch.where(neg, uc.unsqueeze(1), l.clamp(min=0).unsqueeze(1)) * gc
    if need_l or need_u:
        ds = (G * A_neg).sum(1)
        dt = _rowsum(g_d, A_neg)
        g_s = ds - lc * dt
        if use_cut:
            cut_neg = _rowsum(g_cut, A_neg)
            cut_pos = _rowsum(g_cut, A) - cut_neg
        if need_l:
            dl = ((g_s * s) / den - s * dt) * (lc < 0)
            if use_cut:
                dl = dl + cut_pos * (l > 0)
        if need_u:
            g_uc = -(g_s * (lc / den)) / den
            du = (g_uc + cut_neg if use_cut else g_uc) * (uc > 0)
    return dA, dl, du


# One code object per flag combination and inputs flattened to a fixed rank, so that TorchDynamo compiles
# each at most once per dtype (dynamic shapes: any batch, row count and layer size) and never reaches its
# recompile limit, after which it would silently run eagerly.
def _forward_cut(A, l, u):
    return relax_forward(A, l, u, True)


def _forward_plain(A, l, u):
    return relax_forward(A, l, u, False)


def _backward_cut(A, l, u, G, g_d, g_cut):
    return relax_backward(A, l, u, G, g_d, g_cut, True, True, True, True)


def _backward_plain(A, l, u, G, g_d):
    return relax_backward(A, l, u, G, g_d, None, True, True, True, False)


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


def fused_forward(A, l, u, with_cut: bool):
    """Compiled :func:`relax_forward`: ``(A' (B, S, *shape), d (B, S), cut (B, S) or empty)``."""
    B, S = A.shape[:2]
    fn = _forward_cut if with_cut else _forward_plain
    A_new, d, cut = _call("forward", fn, A.reshape(B, S, -1), l.reshape(B, -1), u.reshape(B, -1))
    return A_new.reshape(A.shape), d, cut


def fused_backward(A, l, u, G, g_d, g_cut, use_cut: bool):
    """Compiled :func:`relax_backward` with every gradient: ``(dA, dl, du)`` in the inputs' shapes."""
    B, S = A.shape[:2]
    flat = (A.reshape(B, S, -1), l.reshape(B, -1), u.reshape(B, -1), G.reshape(B, S, -1), g_d)
    if use_cut:
        dA, dl, du = _call("backward", _backward_cut, *flat, g_cut)
    else:
        dA, dl, du = _call("backward", _backward_plain, *flat)
    return dA.reshape(A.shape), dl.reshape(l.shape), du.reshape(u.shape)
