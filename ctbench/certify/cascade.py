"""The certification cascade driver: batches, undecided mask, per-stage margins, timing, resume.

For each batch of test samples (in dataset order): clean forward (misclassified → ``incorrect``), then
every *batch* stage (IBP, CROWN-IBP, CROWN, alpha-CROWN, PGD) on the samples still undecided, then the
*complete* stages (BaB, MILP, external verifiers) in order on the batch's samples still undecided.
Each sample has one time budget for the whole cascade (``timeout``, paper: 1,000 s): its share of the
batch stages' time is counted, and the complete stages get the rest, one after the other. A complete
stage that times out has spent the budget (final: ``timeout``); one that gives up early (BaB at its
domain limit) hands the rest to the next complete stage. BaB and MILP run one sample at a time; an
external verifier with a batch mode (alpha-beta-CROWN) gets all of the batch's samples in one call,
each with its own remaining budget. A stage only ever decides undecided samples; a decided sample is
never touched again. Undecided samples at the end are ``unknown``. Every stage's own verdict on every
sample it saw is kept (``stage_status``), so a later stage's disagreement is never lost. With
``complete_limit`` N only the first N samples may reach the complete stages (paper Table 1, †: PGD and
EDAC models are complete-verified on the first 10 test samples only); the limit is recorded in the
file's ``settings``.

Resume: the state (all per-sample vectors, how many batches passed the batch stages, which samples
each complete stage has seen) is written atomically to ``<out>.partial.npz`` after every batch and after
every complete-stage call, together with a fingerprint of everything that determines the result
(model hash, data, ε, settings), by the batch loop of :mod:`ctbench.certify.runner`. A rerun with the same
inputs continues from there; a different fingerprint starts over. PGD is seeded per batch, so a resumed
run gives the same file as an uninterrupted one (except timing). The final ``certify.h5`` is written
atomically and the state removed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctbench.certify import hdf5
from ctbench.certify.resume import fingerprint as run_fingerprint
from ctbench.certify.resume import state_path  # noqa: F401  (where the resume state is: tests import it here)
from ctbench.certify.runner import BatchRun, BatchState, load_samples
from ctbench.certify.stages import (
    CERTIFY_STAGES,
    DEFAULT_STAGES,
    EXTERNAL_STAGES,
    UNDECIDED,
    Batch,
    Context,
    check_stages,
    external_available,
)
from ctbench.certify.status import CERTIFIED_VALUES, NOT_SEEN, STATUS_MAPPING, Status
from ctbench.core import config_default
from ctbench.errors import CTBenchError
from ctbench.io import check_writable
from ctbench.logs import duration

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertifySettings:
    """Verifier settings (all recorded in ``certify.h5``'s ``settings`` attribute)."""

    eps: float
    eps_str: str
    # the defaults a grid configuration can set live in its schema (ctbench/schemas/config.schema.yaml)
    stages: tuple[str, ...] = DEFAULT_STAGES
    batch_size: int = config_default("certify.batch")
    timeout: float = float(config_default("certify.timeout"))  #: per-sample budget (s) of the complete stages
    recheck_threshold: float = 1e-2  #: bound decisions with 0 < margin ≤ this are re-checked in float64
    alpha_iterations: int = 20
    alpha_lr: float = 0.5
    pgd_steps: int = config_default("certify.falsifier.steps")
    pgd_restarts: int = config_default("certify.falsifier.restarts")
    pgd_loss: str = config_default("certify.falsifier.loss")  #: "margin" (default) or "ce" (the original's)
    pgd_targets: int = config_default("certify.falsifier.targets")  #: runner-up classes targeted in turn
    pgd_check_every: int = 10  #: steps between the falsifier's checks for confirmed counterexamples (0: none)
    bab_batch: int = 64
    bab_intermediate: str = "CROWN"
    bab_alpha_iterations: int = 5
    bab_max_domains: int = 20000
    bab_beta: bool = True  #: beta-CROWN multipliers of the split constraints in BaB's bounds
    bab_beta_lr: float = 0.5
    milp_tol: float = 1e-4
    abcrown_config: str = ""  #: optional alpha-beta-CROWN YAML merged under the generated keys
    complete_limit: int | None = None  #: only the first N samples may reach the complete stages (Table 1 †)
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "stages", check_stages(self.stages))  # a preset name → its stages
        if self.batch_size < 1:
            raise CTBenchError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.timeout > 0:
            raise CTBenchError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.pgd_steps < 0 or self.pgd_restarts < 1:
            raise CTBenchError("PGD needs steps >= 0 and restarts >= 1")
        if self.pgd_loss not in ("margin", "ce"):
            raise CTBenchError(f"the falsifier's loss must be margin or ce, got {self.pgd_loss!r}")
        if self.pgd_check_every < 0:
            raise CTBenchError(f"pgd_check_every must be >= 0, got {self.pgd_check_every}")
        if self.pgd_targets < 0:
            raise CTBenchError(f"pgd_targets must be >= 0, got {self.pgd_targets}")
        if self.abcrown_config:
            if not os.path.isfile(self.abcrown_config):
                raise CTBenchError(f"abcrown config {self.abcrown_config} does not exist")
            from ctbench.certify.external import load_base_config

            load_base_config(self.abcrown_config)  # a malformed file fails here, before any work
        if self.complete_limit is not None and self.complete_limit < 0:
            raise CTBenchError(f"complete limit must be >= 0, got {self.complete_limit}")
        if self.bab_intermediate not in ("CROWN", "IBP"):
            raise CTBenchError(f"bab_intermediate must be CROWN or IBP, got {self.bab_intermediate!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stages"] = list(self.stages)
        return d


def boxes(x: torch.Tensor, eps: float):
    """Float64 box ``[x−ε, x+ε] ∩ [0, 1]`` and its float32 roundings outward (bounds) and inward (attacks)."""
    x64 = x.double()
    lo, hi = (x64 - eps).clamp(0, 1), (x64 + eps).clamp(0, 1)
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=x.device)
    lo32, hi32 = lo.float(), hi.float()
    lo_out = torch.where(lo32.double() > lo, torch.nextafter(lo32, -inf), lo32)
    hi_out = torch.where(hi32.double() < hi, torch.nextafter(hi32, inf), hi32)
    lo_in = torch.where(lo32.double() < lo, torch.nextafter(lo32, inf), lo32)
    hi_in = torch.where(hi32.double() > hi, torch.nextafter(hi32, -inf), hi32)
    return lo, hi, lo_out, hi_out, lo_in, hi_in


# -------------------------------------------------------------------------------------------------
# state
# -------------------------------------------------------------------------------------------------


class _State(BatchState):
    """The cascade's per-sample vectors (saved as the resume state, see :mod:`.runner`)."""

    FIELDS = (
        "sample_index",
        "label",
        "pred",
        "nat_correct",
        "decision",
        "decided_by",
        "stage_margins",
        "time_s",
        "stage_time_s",
        "stage_samples",
        "stage_status",
    )

    def __init__(self, indices: np.ndarray, n_stages: int):
        N = len(indices)
        self.sample_index = indices.astype(np.int64)
        self.label = np.full(N, -1, np.int16)
        self.pred = np.full(N, -1, np.int16)
        self.nat_correct = np.zeros(N, bool)
        self.decision = np.full(N, UNDECIDED, np.int16)
        self.decided_by = np.full(N, -1, np.int8)
        self.stage_margins = np.full((N, n_stages), np.nan, np.float32)
        self.time_s = np.zeros(N, np.float64)
        self.stage_time_s = np.zeros(n_stages, np.float64)
        self.stage_samples = np.zeros(n_stages, np.int64)
        self.stage_status = np.full((N, n_stages), NOT_SEEN, np.uint8)
        self.batches_done = 0


# -------------------------------------------------------------------------------------------------
# driver
# -------------------------------------------------------------------------------------------------


def certify_model(
    model: torch.nn.Module,
    dataset,
    indices,
    settings: CertifySettings,
    out: str | os.PathLike,
    *,
    num_classes: int,
    attrs: dict | None = None,
    device: str | torch.device = "cpu",
    hook=None,
    resume: bool = True,
) -> dict:
    """Run the cascade on ``dataset[i] for i in indices`` and write ``out`` (certify.h5).

    ``model``: eval-mode ``nn.Sequential``; ``attrs``: provenance recorded as root attributes;
    ``hook(event, info)``: called after each persisted step (``"batch"``/``"sample"``), e.g. for
    progress or to simulate a kill in tests. Returns a dict of counts.
    """
    out = Path(out)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    settings, missing = _available_stages(settings)
    stages = list(settings.stages)
    stage_objs = [CERTIFY_STAGES.get(s) for s in stages]
    check_writable(out)
    indices = np.asarray(list(indices), dtype=np.int64)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ctx = Context(model, num_classes, settings, device)
    attrs = dict(attrs or {})
    fingerprint = run_fingerprint(
        {
            "settings": settings.to_dict(),
            "indices": [int(indices[0]) if len(indices) else 0, len(indices)],
            "model_sha256": attrs.get("model_sha256"),
            "dataset": attrs.get("dataset"),
            "split": attrs.get("split"),
            "format": hdf5.CERTIFY_FORMAT,
            "state": 2,  # the resume state's layout (2: per-stage verdicts)
        }
    )
    st = _State(indices, len(stages))
    run = BatchRun(out, st, fingerprint, n=len(indices), batch_size=settings.batch_size, desc=f"certify {out.name}",
                   resume_state=resume, hook=hook)
    t_start = time.perf_counter()
    activity = _Activity(out.name, st, settings, stage_objs, run.n_batches)
    logger.info("%s", activity.start_line())

    def load(b, sl):
        x, y = load_samples(dataset, indices[sl], device)
        activity.batch = b
        return Batch(x, y, *boxes(x, settings.eps), sample_index=indices[sl])

    def after(batch, b, sl):
        _complete_stages(ctx, st, sl, batch, stage_objs, run, activity)
        activity.set(None)

    try:
        run.run(load, lambda batch, b, sl: _batch_stages(ctx, st, sl, batch, stage_objs, b, activity), after=after,
                postfix=lambda sl: {"certified": int(np.isin(st.decision[: sl.stop], CERTIFIED_VALUES).sum())},
                status=activity.line)
    finally:
        ctx.close()  # an external verifier's workspace, on every way out (SIGTERM included)
    wall = time.perf_counter() - t_start
    run.finish(lambda: _write(out, st, settings, stages, stage_objs, attrs, device, wall, missing))
    return counts(st.decision, st.decided_by, stages)


def _available_stages(settings: CertifySettings) -> tuple[CertifySettings, list[str]]:
    """``(settings without the external stages whose verifier is not installed here, those stages)``."""
    stages = list(settings.stages)
    missing = [s for s in stages if s in EXTERNAL_STAGES and not external_available(s)]
    for name in missing:
        logger.warning("the external verifier of stage %s is not available here: skipping that stage", name)
        stages.remove(name)
    if missing:
        if not stages:
            raise CTBenchError(f"no certification stage left: {', '.join(missing)} not available here")
        settings = dataclasses.replace(settings, stages=tuple(stages))
    return settings, missing


class _Activity:
    """What the cascade is doing now, as the heartbeat's status line (read from another thread).

    The line names the stage and its samples, how long it has run, how many samples are decided, the
    elapsed time and the *worst case* left: every undecided sample that may still reach a complete stage
    can spend what is left of its budget (``timeout`` − its time so far), a sample not yet seen its whole
    budget. Without complete stages there is no per-sample budget and no worst case is claimed."""

    def __init__(self, name, st, settings, stage_objs, n_batches):
        self.name, self.st, self.settings, self.n_batches = name, st, settings, n_batches
        self.has_complete = any(s.kind == "sample" for s in stage_objs)
        self.batch = 0
        self.what = None
        self.since = self.t0 = time.monotonic()

    def set(self, what: str | None) -> None:
        self.what, self.since = what, time.monotonic()

    def _budgeted_rows(self) -> np.ndarray:
        n = len(self.st.decision)
        limit = self.settings.complete_limit
        return np.arange(n if limit is None else min(n, limit))

    def worst_case_s(self) -> float | None:
        """Upper estimate of the seconds left (None without complete stages)."""
        if not self.has_complete:
            return None
        rows = self._budgeted_rows()
        open_rows = rows[self.st.decision[rows] == UNDECIDED]
        return float(np.clip(self.settings.timeout - self.st.time_s[open_rows], 0, None).sum())

    def start_line(self) -> str:
        n = len(self.st.decision)
        stages = " → ".join(self.settings.stages)
        line = f"certify {self.name}: {n} samples, ε = {self.settings.eps_str}, stages {stages}"
        if self.has_complete:
            k = len(self._budgeted_rows())
            worst = self.settings.timeout * k
            line += (f"; budget {self.settings.timeout:g} s per sample: worst case {k} × {self.settings.timeout:g} s"
                     f" = {duration(worst)}")
        else:
            line += "; no complete stage (no per-sample budget)"
        return line

    def line(self) -> str | None:
        now = time.monotonic()
        st = self.st
        n = len(st.decision)
        decided = int((st.decision != UNDECIDED).sum())
        certified = int(np.isin(st.decision, CERTIFIED_VALUES).sum())
        falsified = int((st.decision == int(Status.FALSIFIED)).sum())
        parts = [f"certify {self.name}: batch {self.batch + 1}/{self.n_batches}"]
        if self.what:
            parts.append(f"{self.what} (running {duration(now - self.since)})")
        parts.append(f"decided {decided}/{n} (certified {certified}, falsified {falsified})")
        parts.append(f"elapsed {duration(now - self.t0)}")
        worst = self.worst_case_s()
        if worst is not None:
            parts.append(f"worst case left {duration(worst)}")
        return ", ".join(parts)


def _batch_stages(ctx, st, sl, batch, stage_objs, b, activity=None):
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = ctx.model(batch.x)
    if logits.dim() != 2 or logits.shape[1] != ctx.num_classes:
        raise CTBenchError(
            f"model output shape {tuple(logits.shape[1:])} does not match the dataset's {ctx.num_classes} classes"
        )
    pred = logits.argmax(1)
    correct = (pred == batch.y).cpu().numpy()
    n = len(correct)
    st.label[sl] = batch.y.cpu().numpy()
    st.pred[sl] = pred.cpu().numpy()
    st.nat_correct[sl] = correct
    dec = st.decision[sl]  # view
    dec[~correct] = int(Status.INCORRECT)
    st.time_s[sl] += (time.perf_counter() - t0) / n
    for j, stage in enumerate(stage_objs):
        if stage.kind != "batch":
            continue
        und = np.nonzero(dec == UNDECIDED)[0]
        if und.size == 0:
            continue
        torch.manual_seed(ctx.settings.seed + 7919 * b + j)  # deterministic (resume gives the same result)
        if activity is not None:
            activity.set(f"stage {stage.name} on {und.size} samples")
        t0 = time.perf_counter()
        res = stage.run(ctx, batch.subset(torch.as_tensor(und, device=batch.x.device)))
        dt = time.perf_counter() - t0
        rows = np.arange(sl.start, sl.stop)[und]
        st.stage_margins[rows, j] = res.margin
        decided = res.decision != UNDECIDED
        st.stage_status[rows, j] = np.where(decided, res.decision, int(Status.UNKNOWN))
        st.decision[rows[decided]] = res.decision[decided]
        st.decided_by[rows[decided]] = j
        st.time_s[rows] += dt / und.size
        st.stage_time_s[j] += dt
        st.stage_samples[j] += und.size


def _complete_stages(ctx, st, sl, batch, stage_objs, run: BatchRun, activity=None):
    """The complete stages, in order, on the batch's rows still undecided (see the module docstring)."""
    limit = ctx.settings.complete_limit
    rows = np.arange(sl.start, sl.stop)
    if limit is not None:
        rows = rows[rows < limit]
    for j, stage in enumerate(stage_objs):
        if stage.kind != "sample":
            continue
        todo = rows[(st.decision[rows] == UNDECIDED) & (st.stage_status[rows, j] == NOT_SEEN)]
        if todo.size == 0:
            continue
        if stage.run_many is not None:  # one call for all of them (an external verifier's batch mode)
            sub = batch.subset(torch.as_tensor(todo - sl.start, device=batch.x.device))
            budgets = ctx.settings.timeout - st.time_s[todo]
            if activity is not None:
                activity.set(f"stage {stage.name} on {todo.size} samples (budget up to {duration(budgets.max())} each)")
            t0 = time.perf_counter()
            results = stage.run_many(ctx, sub, budgets)
            st.stage_time_s[j] += time.perf_counter() - t0
            for r, (decision, margin, seconds) in zip(todo, results, strict=True):
                _record(st, r, j, decision, margin, seconds)
            run.save()
            run.event("sample", {"rows": todo.tolist(), "stage": stage.name})
            continue
        for r in todo:
            one = batch.subset(torch.tensor([r - sl.start], device=batch.x.device))
            t0 = time.perf_counter()
            budget = max(0.0, ctx.settings.timeout - st.time_s[r])
            deadline = time.monotonic() + budget
            if activity is not None:
                activity.set(f"stage {stage.name} on sample {int(st.sample_index[r])} "
                             f"(row {int(r) + 1}/{len(st.decision)}, budget {duration(budget)})")
            decision, margin = stage.run(ctx, one, deadline)
            dt = time.perf_counter() - t0
            st.stage_time_s[j] += dt
            _record(st, r, j, decision, margin, dt)
            run.save()
            run.event("sample", {"row": int(r), "stage": stage.name})


def _record(st, r, j, decision, margin, seconds):
    """One complete stage's answer for row r: its own verdict, margin and time; decides if it decided."""
    st.stage_margins[r, j] = margin
    st.stage_samples[j] += 1
    st.time_s[r] += seconds
    st.stage_status[r, j] = int(Status.UNKNOWN) if decision == UNDECIDED else int(decision)
    if decision != UNDECIDED:
        st.decision[r] = decision
        st.decided_by[r] = j


def counts(decision, decided_by, stages) -> dict:
    """Counts per final status and per deciding stage (``clean`` = misclassified)."""
    final = np.where(decision == UNDECIDED, int(Status.UNKNOWN), decision)
    c = {"n": int(len(decision))}
    c.update({s.label: int((final == int(s)).sum()) for s in Status})
    c["decided_by"] = {"clean": int((final == int(Status.INCORRECT)).sum())}
    for j, name in enumerate(stages):
        c["decided_by"][name] = int((decided_by == j).sum())
    c["decided_by"]["none"] = int(((decided_by < 0) & (final != int(Status.INCORRECT))).sum())
    return c


def best_margin_lb(stage_margins, decision, stage_objs) -> np.ndarray:
    """Best sound lower bound of the smallest margin per sample (NaN where none was computed)."""
    N = stage_margins.shape[0]
    best = np.full(N, -np.inf)
    for j, s in enumerate(stage_objs):
        col = stage_margins[:, j].astype(np.float64)
        if s.margin_kind == "lower_bound":
            ok = ~np.isnan(col)
        elif s.margin_kind == "complete":
            ok = ~np.isnan(col) & (decision != int(Status.FALSIFIED)) & np.isfinite(col)
        else:
            continue
        best = np.where(ok & (col > best), col, best)
    return np.where(np.isneginf(best), np.nan, best).astype(np.float32)


def _write(out, st, settings, stages, stage_objs, attrs, device, wall, skipped=()):
    final = np.where(st.decision == UNDECIDED, int(Status.UNKNOWN), st.decision).astype(np.uint8)
    datasets = {
        "sample_index": st.sample_index,
        "label": st.label,
        "pred": st.pred,
        "nat_correct": st.nat_correct,
        "status": final,
        "decided_by": st.decided_by,
        "margin_lb": best_margin_lb(st.stage_margins, final, stage_objs),
        "stage_margins": st.stage_margins,
        "time_s": st.time_s.astype(np.float32),
        "stage_time_s": st.stage_time_s,
        "stage_samples": st.stage_samples,
        "stage_status": st.stage_status,
    }
    settings_d = settings.to_dict()
    config_hash = run_fingerprint(
        {"settings": settings_d, "model": attrs.get("model_sha256"), "config": attrs.get("config")}
    )
    root = {
        **hdf5.provenance_attrs(hdf5.CERTIFY_FORMAT),
        **attrs,
        "eps": settings.eps_str,
        "eps_float": float(settings.eps),
        "settings": settings_d,
        "config_hash": config_hash,
        "stages": list(stages),
        "stage_margin_kinds": [s.margin_kind for s in stage_objs],
        "status_enum": STATUS_MAPPING,
        "n": int(len(final)),
        "device": str(device),
        "external_skipped": list(skipped),
        "wall_time_s": float(wall),
    }
    dattrs = {
        "stage_margins": {"stages": list(stages)},
        "stage_time_s": {"stages": list(stages)},
        "stage_samples": {"stages": list(stages)},
        "stage_status": {
            "stages": list(stages),
            "mapping": {**STATUS_MAPPING, "not_seen": NOT_SEEN},
            "note": "each stage's own verdict on each sample it saw (unknown: ran without deciding)",
        },
        "status": {"mapping": STATUS_MAPPING},
        "decided_by": {"stages": list(stages), "note": "index into stages; -1: clean check or undecided"},
    }
    hdf5.write_h5(out, datasets, root, dataset_attrs=dattrs)
