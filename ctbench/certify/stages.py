"""The stages of the certification cascade, by name in :data:`CERTIFY_STAGES`.

A stage gets the still-undecided samples of a batch (:class:`Batch`) and returns, per sample, a
decision (a :class:`~ctbench.certify.status.Status` value, or ``-1`` = still undecided) and a margin
(NaN where not computed):

============  =======  ===============================================================================
stage         kind     decision / margin
============  =======  ===============================================================================
IBP           batch    certified if the IBP lower bound of every margin ``z_y − z_i`` is > 0; margin =
CROWN-IBP     batch    the (sound) lower bound of the smallest margin. Near-zero decisions
CROWN         batch    (``0 < margin ≤ recheck_threshold``) are recomputed in float64 on a double copy
alpha-CROWN   batch    of the model with the float64 box; certified only if still > 0.
PGD           batch    the falsifier (``falsify.py``: margin-loss PGD, restarts alternating untargeted and
                       targeted at the runner-up classes, each on the samples still unbroken): falsified
                       if it finds a point of the ε-box whose margin is < 0 in float32 *and* float64;
                       margin = smallest margin found.
BaB           sample   branch-and-bound (``bab.py``): certified / falsified / timeout; margin = proven
                       lower bound, or the counterexample's margin. Gives up early (→ the next
                       complete stage) at ``bab_max_domains``.
MILP          sample   exact MILP (``milp.py``): the ``exact`` preset for small networks; after BaB
                       only for the samples BaB gave up on (see :data:`STAGE_PRESETS`).
abCROWN       sample   alpha-beta-CROWN via ONNX + VNNLIB (``external.py``), if it can be found.
Marabou       sample   Marabou (``maraboupy``) via the same files; small networks only.
============  =======  ===============================================================================

All stages see the model in eval mode (BatchNorm with population statistics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ctbench.bounds import compute_bounds, margin_spec
from ctbench.certify.status import Status
from ctbench.core import config_default
from ctbench.errors import CTBenchError
from ctbench.registry import Registry

UNDECIDED = -1


@dataclass
class Batch:
    """Undecided samples of one batch. Boxes: float64 exact, float32 rounded outward (bounds) and
    inward (attacks), so every bound covers the true ε-ball and every attack point lies inside it."""

    x: torch.Tensor  # (n, *in) float32
    y: torch.Tensor  # (n,) int64
    lower64: torch.Tensor
    upper64: torch.Tensor
    lower_out: torch.Tensor
    upper_out: torch.Tensor
    lower_in: torch.Tensor
    upper_in: torch.Tensor
    sample_index: np.ndarray

    def subset(self, idx: torch.Tensor) -> Batch:
        i = idx.cpu().numpy()
        return Batch(
            *(
                getattr(self, f)[idx]
                for f in ("x", "y", "lower64", "upper64", "lower_out", "upper_out", "lower_in", "upper_in")
            ),
            sample_index=self.sample_index[i],
        )


@dataclass
class Context:
    """What every stage may use: the float32 model, a lazily built float64 copy, the settings."""

    model: torch.nn.Module
    num_classes: int
    settings: object  # CertifySettings (cascade.py)
    device: torch.device
    _model64: torch.nn.Module | None = field(default=None, repr=False)
    _model64_cpu: torch.nn.Module | None = field(default=None, repr=False)
    _workspace: object = field(default=None, repr=False)  #: external.Workspace, built on first use

    def close(self) -> None:
        """Remove what the run made outside its outputs (an external verifier's workspace)."""
        if self._workspace is not None:
            self._workspace.close()
            self._workspace = None

    @property
    def model64(self) -> torch.nn.Module:
        if self._model64 is None:
            import copy

            m = copy.deepcopy(self.model).double().eval()
            for p in m.parameters():
                p.requires_grad_(False)
            self._model64 = m
        return self._model64

    @property
    def model64_cpu(self) -> torch.nn.Module:
        """The float64 copy on the CPU (complete verifiers), separate from :attr:`model64`'s device."""
        if self._model64_cpu is None:
            import copy

            self._model64_cpu = copy.deepcopy(self.model64).cpu()
        return self._model64_cpu


@dataclass
class StageResult:
    decision: np.ndarray  # (n,) int, UNDECIDED or a Status value
    margin: np.ndarray  # (n,) float64, NaN where not computed


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # "batch" (vectorised over the batch) or "sample" (one sample at a time, timeout)
    #: batch: ``fn(ctx, Batch) -> StageResult``;
    #: sample: ``fn(ctx, Batch of 1, deadline) -> (decision, margin)``
    run: object
    margin_kind: str  # "lower_bound", "attack", "complete"
    #: sample stages with a batch mode: ``run_many(ctx, Batch of n, budgets (n,) s) -> [(decision, margin,
    #: seconds)] * n``, one call for many samples, each within its own remaining budget
    run_many: object = None


CERTIFY_STAGES: Registry[Stage] = Registry("certify stage")


def _register(stage: Stage) -> Stage:
    CERTIFY_STAGES.register(stage.name)(stage)
    return stage


# -- bound stages --------------------------------------------------------------------------------


def _bound_options(method: str, settings) -> dict:
    if method == "alpha-CROWN":
        return {"iterations": settings.alpha_iterations, "lr": settings.alpha_lr}
    return {}


def bound_stage(method: str, status: Status) -> Stage:
    def run(ctx: Context, b: Batch) -> StageResult:
        s = ctx.settings
        opts = _bound_options(method, s)
        with torch.no_grad() if method != "alpha-CROWN" else torch.enable_grad():
            C = margin_spec(b.y, ctx.num_classes, dtype=b.lower_out.dtype)
            lb, _ = compute_bounds(ctx.model, b.lower_out, b.upper_out, method, C, bound_upper=False, **opts)
        m = lb.detach().min(1).values.double()
        near = (m > 0) & (m <= s.recheck_threshold)
        if bool(near.any()):  # float64 re-check of near-zero decisions
            idx = near.nonzero().flatten()
            C64 = margin_spec(b.y[idx], ctx.num_classes, dtype=torch.float64)
            with torch.no_grad() if method != "alpha-CROWN" else torch.enable_grad():
                lb64, _ = compute_bounds(
                    ctx.model64, b.lower64[idx], b.upper64[idx], method, C64, bound_upper=False, **opts
                )
            m[idx] = lb64.detach().min(1).values
        m = m.cpu().numpy()
        decision = np.where(m > 0, int(status), UNDECIDED)  # NaN > 0 is False
        return StageResult(decision, m)

    return Stage(method, "batch", run, "lower_bound")


for _method, _status in (
    ("IBP", Status.CERTIFIED_IBP),
    ("CROWN-IBP", Status.CERTIFIED_CROWN_IBP),
    ("CROWN", Status.CERTIFIED_CROWN),
    ("alpha-CROWN", Status.CERTIFIED_ALPHA_CROWN),
):
    _register(bound_stage(_method, _status))


# -- attack stage -----------------------------------------------------------------------------------


def min_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smallest margin ``z_y − max_{i≠y} z_i`` (B,)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return true - other.amax(1)


def confirmed_counterexample(ctx: Context, x_adv: torch.Tensor, y: torch.Tensor, lower64, upper64):
    """(B,) bool: x_adv lies in the float64 ε-box and its margin is < 0 in float32 and float64; + margins."""
    with torch.no_grad():
        m32 = min_margin(ctx.model(x_adv), y)
        xd = x_adv.double()
        inside = ((xd >= lower64) & (xd <= upper64)).flatten(1).all(1)
        m64 = min_margin(ctx.model64(xd), y)
    return inside & (m32 < 0) & (m64 < 0), m32.double()


def _pgd(ctx: Context, b: Batch) -> StageResult:
    """The falsifier (``falsify.py``): margin-loss PGD, targeted restarts, on the batch's undecided samples."""
    from ctbench.certify.falsify import falsify

    s = ctx.settings

    def confirm(x_adv, idx):
        return confirmed_counterexample(ctx, x_adv, b.y[idx], b.lower64[idx], b.upper64[idx])

    broken, _, m = falsify(
        ctx.model, b.x, b.y, b.lower_in, b.upper_in, confirm,
        steps=s.pgd_steps, restarts=s.pgd_restarts, targets=s.pgd_targets, loss=s.pgd_loss,
        check_every=s.pgd_check_every,
    )  # fmt: skip
    decision = np.where(broken.cpu().numpy(), int(Status.FALSIFIED), UNDECIDED)
    return StageResult(decision, m.double().cpu().numpy())


_register(Stage("PGD", "batch", _pgd, "attack"))


# -- complete stages ----------------------------------------------------------------------------------


def _complete(verify, status: Status):
    def run(ctx: Context, b: Batch, deadline: float) -> tuple[int, float]:
        C = margin_spec(b.y.cpu(), ctx.num_classes, dtype=torch.float64)
        model64 = ctx.model64_cpu
        res = verify(ctx, model64, b.lower64.cpu(), b.upper64.cpu(), C, deadline)
        if res.status == "verified" and res.margin > 0:
            return int(status), res.margin
        if res.status == "falsified":  # the verifier checked the point: in the box, float64 margin < 0
            return int(Status.FALSIFIED), res.margin
        if res.status == "timeout":
            return int(Status.TIMEOUT), res.margin
        return UNDECIDED, res.margin

    return run


def _bab(ctx, model64, lo, hi, C, deadline):
    from ctbench.certify.bab import bab_verify

    s = ctx.settings
    return bab_verify(
        model64,
        lo,
        hi,
        C,
        deadline=deadline,
        batch=s.bab_batch,
        intermediate=s.bab_intermediate,
        alpha_iterations=s.bab_alpha_iterations,
        alpha_lr=s.alpha_lr,
        max_domains=s.bab_max_domains,
        beta=s.bab_beta,
        beta_lr=s.bab_beta_lr,
    )


def _milp(ctx, model64, lo, hi, C, deadline):
    from ctbench.certify.milp import milp_verify

    return milp_verify(model64, lo, hi, C, deadline=deadline, tol=ctx.settings.milp_tol)


_register(Stage("BaB", "sample", _complete(_bab, Status.CERTIFIED_BAB), "complete"))
_register(Stage("MILP", "sample", _complete(_milp, Status.CERTIFIED_MILP), "complete"))


def sharpen_counterexample(ctx: Context, x: torch.Tensor, b: Batch, steps: int = 12):
    """``(point, margin)`` of a confirmed counterexample near ``x`` (1, *in), or ``(None, nan)``.

    Simplex-based verifiers answer with vertices where the margin is exactly 0 (a tie) or a hair
    outside the box; a few signed-gradient steps on the margin, growing from 1/4096 of the box
    width, inside the float32 inner box turn such a point into a strict counterexample. Every
    candidate is checked by :func:`confirmed_counterexample`, so this search cannot be unsound.
    """
    lo, hi = b.lower_in, b.upper_in
    for k in range(steps + 1):
        broken, m = confirmed_counterexample(ctx, x, b.y, b.lower64, b.upper64)
        if bool(broken[0]):
            return x, float(m[0])
        if k == steps:
            break
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(min_margin(ctx.model(xg), b.y).sum(), xg)
        x = torch.minimum(torch.maximum(x - (hi - lo) * 2.0 ** (k - 12) * grad.sign(), lo), hi)
    return None, float("nan")


def _external_decision(ctx: Context, name: str, status: Status, ans, one: Batch) -> tuple[int, float]:
    """An external verifier's answer about one sample → (decision, margin); counterexamples re-checked."""
    import logging

    from ctbench.certify import vnncomp

    if ans.verdict == "unsat":
        return int(status), float("nan")
    if ans.verdict == "sat" and ans.z is not None:
        ws = ctx._workspace
        x = vnncomp.to_pixel_space(ws.norm, ans.z, ws.input_shape).to(one.x.device).float()
        x = torch.minimum(torch.maximum(x, one.lower_in), one.upper_in)  # onto the float32 inner box
        x, m = sharpen_counterexample(ctx, x, one)
        if x is not None:
            return int(Status.FALSIFIED), m
        logging.getLogger(__name__).warning(
            "%s reported a counterexample for sample %d that does not hold on the model; left undecided",
            name, int(one.sample_index[0]),
        )  # fmt: skip
        return UNDECIDED, float("nan")
    if ans.verdict == "timeout":
        return int(Status.TIMEOUT), float("nan")
    return UNDECIDED, float("nan")


def _external(name: str, status: Status):
    """A sample stage that asks an external VNN-COMP verifier (``external.py``): ``run_many`` hands it all
    of a batch's undecided samples in one call (alpha-beta-CROWN: one process), ``run`` one sample."""

    def run_many(ctx: Context, b: Batch, budgets) -> list[tuple[int, float, float]]:
        from ctbench.certify import external

        if ctx._workspace is None:
            ctx._workspace = external.Workspace(ctx.model, tuple(b.x.shape[1:]))
        device = "cuda" if ctx.device.type == "cuda" else "cpu"
        boxes = [(b.lower64[k : k + 1], b.upper64[k : k + 1]) for k in range(len(b.y))]
        answers = external.verify_many(
            name, ctx._workspace, boxes, b.y.tolist(), list(budgets), ctx.num_classes,
            settings=ctx.settings, device=device,
        )  # fmt: skip
        out = []
        for k, ans in enumerate(answers):
            one = b.subset(torch.tensor([k], device=b.x.device))
            out.append((*_external_decision(ctx, name, status, ans, one), ans.seconds))
        return out

    def run(ctx: Context, b: Batch, deadline: float) -> tuple[int, float]:
        decision, margin, _ = run_many(ctx, b, [deadline - time.monotonic()])[0]
        return decision, margin

    return run, run_many


#: Sample stages backed by external verifiers (used only if available; see ``external.py``).
EXTERNAL_STAGES = {"abCROWN": Status.CERTIFIED_ABCROWN, "Marabou": Status.CERTIFIED_MARABOU}
def _register_external(name: str, status: Status) -> None:
    from ctbench.certify.external import EXTERNAL_VERIFIERS

    run, run_many = _external(name, status)
    batched = EXTERNAL_VERIFIERS.get(name).batched  # alpha-beta-CROWN: one process per batch of samples
    _register(Stage(name, "sample", run, "complete", run_many=run_many if batched else None))


for _name, _status in EXTERNAL_STAGES.items():
    _register_external(_name, _status)


def external_available(name: str) -> bool:
    """Whether the external verifier behind stage ``name`` can run here (never required)."""
    from ctbench.certify.external import EXTERNAL_VERIFIERS

    return bool(EXTERNAL_VERIFIERS.get(name).available())



#: The default cascade (the paper's order: bounds, falsifier, complete verification with BaB).
DEFAULT_STAGES = tuple(config_default("certify.stages"))  # IBP, CROWN-IBP, CROWN, alpha-CROWN, PGD, BaB

#: Named cascades (``--stages NAME``). What MILP is for: the *exact* mode of small networks (an MLP, a
#: ``cnn_small`` at small ε), where a MILP decides every sample within its budget and BaB would only
#: add its own cost first. In a list after BaB, MILP sees only the samples BaB gave up on early (its
#: domain limit) and gets what is left of their budget; a BaB timeout has spent it. On CNN7 a MILP
#: decides nothing in 1,000 s, so the paper's cascade ends with BaB.
STAGE_PRESETS = {
    "paper": DEFAULT_STAGES,
    "exact": ("IBP", "CROWN", "PGD", "MILP"),
    "abcrown": ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN", "PGD", "abCROWN"),
}


def check_stages(names) -> tuple[str, ...]:
    """Validate a stage list (known names, no duplicates) or expand a preset name; returns a tuple."""
    names = tuple(n.strip() for n in names if n.strip())
    if len(names) == 1 and names[0] in STAGE_PRESETS:
        return STAGE_PRESETS[names[0]]
    if not names:
        raise CTBenchError("no certification stages given")
    for n in names:
        CERTIFY_STAGES.get(n)
    if len(set(names)) != len(names):
        raise CTBenchError(f"duplicate certification stage in {','.join(names)}")
    return names

