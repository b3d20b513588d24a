"""The training loop (paper §4.1, App. C.3): one resolved config → ``model.pt``.

Per epoch: a loader seeded by (seed, epoch); per step: ε from the schedule (per global step),
``method.step`` (clean-batch BN statistics, robust hook, L1, warm-up regularizer, gradient
accumulation with full-batch statistics — ``ctbench.methods.base``), gradient clipping, one Adam step
(all parameters; the Normalization layer has buffers only), SWA update. After the epoch:
``MultiStepLR.step()``, population BN statistics (precise BN), validation at ``min(ε, test ε)`` with the
method's own robust-accuracy estimate — on the test split, as the original code and the paper's Table 1,
or with ``val_fraction`` on a held-out part of the training set (:func:`validation_split`) — model
selection (what it was made on is recorded in ``model.pt``'s provenance as ``selection_split``), an atomic
checkpoint and ``history.csv``. Re-running with the same config resumes from the checkpoint; the
result is bitwise identical to an uninterrupted run on CPU.

Wall time (paper App. C.6, Table 12): every call of :func:`train` is one *attempt*; its record (epochs it
started and ended at, seconds from the start of :func:`train` to its last saved state) is kept in the
checkpoint, so it survives a kill, a retry and a checkpoint restored from ``train/stale/``, and is written to
``train/attempts.csv``. Their sum is the training's total wall time, which a scheduler's per-job
measurement (Snakemake's ``benchmark:`` file holds the last job only) cannot give after a resume. Not
counted: the program's start-up before :func:`train` and the unfinished epoch of a killed attempt.

Outputs under ``out_dir``::

    train/checkpoint.pt   resumable state (see ctbench.checkpoint)
    train/history.csv     one row per epoch (HISTORY_COLUMNS; ``time_s``: the epoch's seconds)
    train/attempts.csv    one row per attempt, all attempts of this run (ATTEMPT_COLUMNS)
    train/candidates.pt   the finished run's selection candidates: last, best-by-metric, SWA average
    model.pt              the selected one (``ctbench.select``; skipped with ``select=False``, as the
                          Snakemake DAG does: its ``select`` rule writes it)
    config.yaml           the resolved config (written at the start)

A training run is identified by its fingerprint (``ctbench.fingerprint.train_fingerprint``: the
resolved config and the run-length limits ``subset`` / ``max_steps``); the checkpoint, the candidates
and ``model.pt`` carry it. A checkpoint of another run is refused, or — with
``on_config_change="restart"`` — moved to ``train/stale/`` and training starts afresh.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ctbench.checkpoint import (
    checkpoint_fingerprint,
    cpu_state_dict,
    get_rng_state,
    load_checkpoint,
    save_candidates,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from ctbench.config import config_hash, to_json
from ctbench.core import resolve_device
from ctbench.errors import CTBenchError
from ctbench.fingerprint import train_fingerprint
from ctbench.io import write_text
from ctbench.logs import duration, progress
from ctbench.methods import create_method
from ctbench.schedules import eps_schedule_from_config, make_lr_scheduler
from ctbench.select import select_model
from ctbench.swa import SWA, population_bn_stats

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "epoch",
    "lr",
    "eps",
    "train_nat_loss",
    "train_rob_loss",
    "train_reg_loss",
    "train_nat_acc",
    "train_rob_acc",
    "val_eps",
    "val_nat_acc",
    "val_rob_acc",
    "val_loss",
    "time_s",
)
ATTEMPT_COLUMNS = ("attempt", "start_epoch", "end_epoch", "wall_s")


@dataclass
class TrainOptions:
    """Run options that do not change the result's meaning (not part of the resolved config).

    ``max_epochs`` stops after that many completed epochs (checkpoint kept, no ``model.pt``): re-run
    without it to resume. ``select`` writes ``model.pt`` after training (the DAG runs ``ctbench select``
    as its own job instead). ``on_config_change``: what to do with a checkpoint written for another
    resolved config — ``"error"`` (default) or ``"restart"`` (the DAG: a changed cell trains afresh; the
    old checkpoint is kept in ``train/stale/``). ``max_steps`` caps the steps per epoch and ``subset``
    uses the first N train and test samples (quick runs, tests); both are part of the run's fingerprint.
    ``version`` is the workflow's train-stage version (part of the fingerprint). ``dtype`` float64 is
    for numerical checks.
    """

    device: str = "cpu"
    data_root: str | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    subset: int | None = None
    num_workers: int = 0
    dtype: torch.dtype = torch.float32
    show_progress: bool = True
    select: bool = True
    on_config_change: str = "error"
    version: int = 1

    def fingerprint(self, config: dict) -> str:
        """The training run's fingerprint: resolved config + run-length limits + stage version."""
        return train_fingerprint(config, {"subset": self.subset, "max_steps": self.max_steps}, self.version)


def _subset(ds, n: int | None):
    if n is None or n >= len(ds):
        return ds
    from ctbench.data import TensorImageDataset

    if isinstance(ds, TensorImageDataset):
        return TensorImageDataset(ds.images[:n], ds.labels[:n], ds.transform, ds.classes)
    return torch.utils.data.Subset(ds, range(n))


def validation_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train indices, validation indices)`` of ``n`` training images: ``round(fraction·n)`` (≥ 1) drawn
    without replacement by a generator seeded with ``seed``; both sorted, disjoint, covering ``range(n)``."""
    k = max(1, round(float(fraction) * n))
    if k >= n:
        raise CTBenchError(f"val_fraction {fraction} leaves no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    val = sorted(perm[:k].tolist())
    taken = set(val)
    return [i for i in range(n) if i not in taken], val


def selection_split(config: dict, n_val: int | None = None) -> str:
    """What validation and model selection used, in words (``model.pt`` provenance, Table 1's notes): the
    split, and the opt-in cheaper evaluation (``val_samples``, ``val_every``) when set. ``n_val``: the
    validation images used."""
    f = config.get("val_fraction")
    parts = ["test"]
    if f:
        size = f", {n_val} images" if n_val is not None and not config.get("val_samples") else ""
        parts = [f"held-out {100 * float(f):g}% of the training set (seed {int(config.get('val_seed') or 0)}{size})"]
    if config.get("val_samples"):
        parts.append(f"first {n_val if n_val is not None else int(config['val_samples'])} images")
    if (config.get("val_every") or 1) > 1:
        parts.append(f"every {int(config['val_every'])} epochs")
    return ", ".join(parts)


def validates(config: dict, epoch: int, epochs: int) -> bool:
    """Whether epoch ``epoch`` (0-based) of ``epochs`` is validated (``val_every``; the last one always)."""
    every = int(config.get("val_every") or 1)
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


def _split_datasets(config: dict, train_ds, opts: TrainOptions):
    """``(train set, validation set)``: the test split, or a held-out part of the training set."""
    from ctbench.data import load_dataset

    if not config.get("val_fraction"):
        test_ds = _subset(load_dataset(config["dataset"], "test", opts.data_root, augment=False), opts.subset)
        return train_ds, test_ds
    train_idx, val_idx = validation_split(len(train_ds), config["val_fraction"], config.get("val_seed") or 0)
    plain = _subset(load_dataset(config["dataset"], "train", opts.data_root, augment=False), opts.subset)
    return torch.utils.data.Subset(train_ds, train_idx), torch.utils.data.Subset(plain, val_idx)


def _loader(ds, batch_size: int, shuffle: bool, seed: int, opts: TrainOptions):
    from ctbench.data import make_loader

    return make_loader(ds, batch_size, shuffle=shuffle, seed=seed, num_workers=opts.num_workers)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + epoch) % (2**63)


def evaluate(method, model, loader, eps: float, device, dtype=torch.float32) -> dict:
    """Validation in eval mode (population statistics): natural and robust-estimate accuracy/loss."""
    model.eval()
    tot = {"nat_loss": 0.0, "rob_loss": 0.0, "nat_correct": 0, "rob_correct": 0, "n": 0}
    for x, y in loader:
        r = method.evaluate_batch(model, x.to(device, dtype), y.to(device), eps)
        for k in tot:
            tot[k] += r[k]
    model.train()
    n = max(tot["n"], 1)
    w = method.w_rob if eps > 0 else 0.0
    return {
        "nat_acc": tot["nat_correct"] / n,
        "rob_acc": tot["rob_correct"] / n,
        "loss": ((1 - w) * tot["nat_loss"] + w * tot["rob_loss"]) / n,
    }


def _csv(rows: list[dict], columns) -> str:
    """``rows`` as CSV text with exactly ``columns`` (history.csv, attempts.csv)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k) for k in columns})
    return buf.getvalue()


def _history_csv(rows: list[dict]) -> str:
    return _csv(rows, HISTORY_COLUMNS)


def _attempts_csv(attempts: list[dict]) -> str:
    return _csv(attempts, ATTEMPT_COLUMNS)


class _Attempt:
    """This call's record among the run's attempts (``start_epoch`` → ``end_epoch``, ``wall_s`` since
    :func:`train` began); earlier attempts come from the checkpoint."""

    def __init__(self, t_start: float, earlier: list[dict], start_epoch: int):
        self.t_start = t_start
        self.record = {"attempt": len(earlier) + 1, "start_epoch": start_epoch, "end_epoch": start_epoch,
                       "wall_s": 0.0}
        self.all = [*earlier, self.record]

    def update(self, end_epoch: int) -> list[dict]:
        """Mark ``end_epoch`` reached now; returns all attempts (plain dicts, for the checkpoint)."""
        self.record.update(end_epoch=end_epoch, wall_s=round(time.monotonic() - self.t_start, 3))
        return [dict(a) for a in self.all]


def _better(selection: str, metric: float, best: dict | None) -> bool:
    if best is None:
        return True
    return metric > best["metric"] if selection == "robust_accu" else metric < best["metric"]


def train(config: dict, out_dir: str | Path, options: TrainOptions | None = None) -> dict:
    """Train one cell described by a resolved config; returns a summary dict.

    Returns ``{"status": "done" | "interrupted", "epochs_done", "model_path", "history", "attempts", ...}``.
    """
    t_start = time.monotonic()
    run = _setup(config, Path(out_dir), options or TrainOptions())
    write_text(run.out / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    _resume(run)
    attempt = _Attempt(t_start, run.earlier, run.start_epoch)
    write_text(run.attempts_path, _attempts_csv(attempt.update(run.start_epoch)))
    stop = run.epochs if run.opts.max_epochs is None else min(run.epochs, run.opts.max_epochs)
    run_times: list[float] = []
    for epoch in range(run.start_epoch, stop):
        row = _epoch(run, epoch)
        run_times.append(row["time_s"])
        _log_epoch(run, row, sum(run_times) / len(run_times))
        _save_checkpoint(run, epoch, attempt)
    write_text(run.hist_path, _history_csv(run.history))  # also when nothing was left to train (a resumed finished run)
    return _finish(run, attempt)


@dataclass
class _Run:
    """One call of :func:`train`: the resolved config, its data, model, optimizer, schedules and the progress
    so far (``start_epoch``, ``global_step``, the best state for selection, the history, earlier attempts)."""

    config: dict
    opts: TrainOptions
    out: Path
    device: torch.device
    seed: int
    train_ds: object
    val_ds: object
    test_loader: object
    steps_per_epoch: int
    model: torch.nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    method: object
    schedule: object
    swa: SWA | None
    selection: str
    epochs: int
    fingerprint: str
    start_epoch: int = 0
    global_step: int = 0
    best: dict | None = None
    history: list = field(default_factory=list)
    earlier: list = field(default_factory=list)

    @property
    def ckpt_path(self) -> Path:
        return self.out / "train" / "checkpoint.pt"

    @property
    def hist_path(self) -> Path:
        return self.out / "train" / "history.csv"

    @property
    def attempts_path(self) -> Path:
        return self.out / "train" / "attempts.csv"

    def train_loader(self, shuffle: bool, seed: int):
        return _loader(self.train_ds, int(self.config["batch_size"]), shuffle, seed, self.opts)


def _setup(config: dict, out: Path, opts: TrainOptions) -> _Run:
    """Seed, data (train / validation split), model, optimizer, LR and ε schedules, method, SWA."""
    from ctbench.data import load_dataset
    from ctbench.models import create_model

    device = resolve_device(opts.device)
    seed = int(config.get("seed") or 0)
    seed_everything(seed)

    train_ds = _subset(load_dataset(config["dataset"], "train", opts.data_root), opts.subset)
    train_ds, val_ds = _split_datasets(config, train_ds, opts)
    if config.get("val_samples") and config["val_samples"] < len(val_ds):  # opt-in cheaper evaluation
        val_ds = torch.utils.data.Subset(val_ds, range(int(config["val_samples"])))
    test_loader = _loader(val_ds, int(config["test_batch_size"]), False, 0, opts)
    steps_per_epoch = math.ceil(len(train_ds) / int(config["batch_size"]))
    if opts.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, opts.max_steps)

    model = create_model(config["model"], config["dataset"], init=config["init"], seed=seed).to(
        device, opts.dtype
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=float(config["lr"]))
    scheduler = make_lr_scheduler(optimizer, config["lr_milestones"], float(config["lr_decay"]))
    method = create_method(config)
    schedule = eps_schedule_from_config(config, steps_per_epoch)
    swa = SWA(model, config["swa_start"], config["swa_freq"]) if config.get("swa_start") is not None else None
    return _Run(config=config, opts=opts, out=out, device=device, seed=seed, train_ds=train_ds, val_ds=val_ds,
                test_loader=test_loader, steps_per_epoch=steps_per_epoch, model=model, params=params,
                optimizer=optimizer, scheduler=scheduler, method=method, schedule=schedule, swa=swa,
                selection=config.get("model_selection") or "robust_accu", epochs=int(config["epochs"]),
                fingerprint=opts.fingerprint(config))


def _resume(run: _Run) -> None:
    """Continue from ``train/checkpoint.pt`` if there is one of this run (another run's: refused, or set aside
    with ``on_config_change="restart"``): model, optimizer, schedules, SWA, RNG, best state, history."""
    if run.opts.on_config_change == "restart":
        _set_aside_if_stale(run.ckpt_path, run.fingerprint)
    if not run.ckpt_path.exists():
        return
    ckpt = load_checkpoint(run.ckpt_path, run.fingerprint)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["lr_scheduler"])
    if run.swa is not None and ckpt.get("swa") is not None:
        run.swa.load_state_dict(ckpt["swa"])
    run.start_epoch, run.global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
    run.best, run.history = ckpt.get("best"), list(ckpt.get("history") or [])
    run.earlier = list(ckpt.get("attempts") or [])  # none in checkpoints written before attempts were kept
    set_rng_state(ckpt["rng"])
    logger.info("resuming %s from epoch %d", run.out, run.start_epoch)


def _epoch(run: _Run, epoch: int) -> dict:
    """One epoch: the training steps, the LR step, population BN statistics, validation and selection;
    returns its history row (also appended to ``run.history``)."""
    t0 = time.time()
    lr = run.optimizer.param_groups[0]["lr"]
    sums, eps = _train_steps(run, epoch)
    run.global_step = (epoch + 1) * run.steps_per_epoch
    run.scheduler.step()
    if run.config.get("pop_bn_stats", True):
        population_bn_stats(run.model, run.train_loader(False, 0), run.device)
    val_eps = min(eps, float(run.config["eps"])) if eps > 0 else 0.0
    nan = {"nat_acc": math.nan, "rob_acc": math.nan, "loss": math.nan}  # an epoch val_every skips
    val = evaluate(run.method, run.model, run.test_loader, val_eps, run.device, run.opts.dtype) if validates(
        run.config, epoch, run.epochs) else nan
    n = max(sums["n"], 1)
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        "eps": eps,
        "train_nat_loss": sums["nat"] / n,
        "train_rob_loss": sums["rob"] / n,
        "train_reg_loss": sums["reg"] / n,
        "train_nat_acc": sums["nat_c"] / n,
        "train_rob_acc": sums["rob_c"] / n,
        "val_eps": val_eps,
        "val_nat_acc": val["nat_acc"],
        "val_rob_acc": val["rob_acc"],
        "val_loss": val["loss"],
        "time_s": round(time.time() - t0, 3),
    }
    run.history.append(row)
    if val is not nan:
        _select(run, epoch, val)
    return row


def _train_steps(run: _Run, epoch: int) -> tuple[dict, float]:
    """The epoch's steps (a loader seeded by (seed, epoch)); returns the summed losses and counts and the
    last step's ε."""
    loader = run.train_loader(True, _epoch_seed(run.seed, epoch))
    sums = {"nat": 0.0, "rob": 0.0, "reg": 0.0, "nat_c": 0, "rob_c": 0, "n": 0}
    eps = run.schedule(epoch * run.steps_per_epoch)
    bar = progress(
        total=run.steps_per_epoch,
        desc=f"epoch {epoch + 1}/{run.epochs}",
        unit="step",
        leave=False,
        disable=None if run.opts.show_progress else True,
    )
    for batch_idx, (x, y) in enumerate(loader):
        if batch_idx >= run.steps_per_epoch:
            break
        run.global_step = epoch * run.steps_per_epoch + batch_idx
        eps = run.schedule(run.global_step)
        res = _step(run, epoch, x, y, eps)
        b = res.n
        sums["nat"] += res.nat_loss * b
        sums["rob"] += res.rob_loss * b
        sums["reg"] += res.reg_loss * b
        sums["nat_c"] += res.nat_correct
        sums["rob_c"] += res.rob_correct
        sums["n"] += b
        bar.update(1)
        bar.set_postfix(eps=f"{eps:.4g}", loss=f"{res.loss:.3f}")
    bar.close()
    return sums, eps


def _step(run: _Run, epoch: int, x, y, eps: float):
    """One optimizer step at ``run.global_step``: the method's step, gradient clipping, Adam, SWA update."""
    x, y = x.to(run.device, run.opts.dtype), y.to(run.device)
    run.optimizer.zero_grad(set_to_none=True)
    res = run.method.step(
        run.model,
        x,
        y,
        eps,
        optimizer=run.optimizer,
        warmup=not run.schedule.ramp_done(run.global_step),
        accumulation_batch=run.config.get("grad_accu_batch"),
    )
    if run.config.get("grad_clip"):
        torch.nn.utils.clip_grad_norm_(run.params, float(run.config["grad_clip"]))
    run.optimizer.step()
    if run.swa is not None:
        run.swa.maybe_update(run.model, epoch, run.global_step)
    return res


def _select(run: _Run, epoch: int, val: dict) -> None:
    """Keep the epoch's state as the best if it is eligible (ε ramp done) and better by the selection metric."""
    if run.selection != "last" and run.schedule.ramp_done(run.global_step - 1):
        metric = val["rob_acc"] if run.selection == "robust_accu" else val["loss"]
        if _better(run.selection, metric, run.best):
            run.best = {"epoch": epoch + 1, "metric": float(metric), "state_dict": cpu_state_dict(run.model)}


def _log_epoch(run: _Run, row: dict, per_epoch: float) -> None:
    logger.info(
        "epoch %d/%d eps %.5g lr %.3g | train nat %.4f rob %.4f | val(eps %.5g) nat %.4f rob %.4f | "
        "%.1f s/epoch, %.3g steps/s, ETA %s",
        row["epoch"],
        run.epochs,
        row["eps"],
        row["lr"],
        row["train_nat_acc"],
        row["train_rob_acc"],
        row["val_eps"],
        row["val_nat_acc"],
        row["val_rob_acc"],
        row["time_s"],
        run.steps_per_epoch / max(row["time_s"], 1e-9),
        duration(per_epoch * (run.epochs - row["epoch"])),
    )


def _save_checkpoint(run: _Run, epoch: int, attempt: _Attempt) -> None:
    """The resumable state after ``epoch`` (atomic), then ``history.csv`` and ``attempts.csv``."""
    save_checkpoint(
        run.ckpt_path,
        {
            "fingerprint": run.fingerprint,
            "config_hash": config_hash(run.config),
            "config": to_json(run.config),
            "epoch": epoch + 1,
            "global_step": run.global_step,
            "model": cpu_state_dict(run.model),
            "optimizer": run.optimizer.state_dict(),
            "lr_scheduler": run.scheduler.state_dict(),
            "swa": run.swa.state_dict() if run.swa is not None else None,
            "rng": get_rng_state(),
            "best": run.best,
            "history": run.history,
            "attempts": attempt.update(epoch + 1),
        },
    )
    write_text(run.hist_path, _history_csv(run.history))
    write_text(run.attempts_path, _attempts_csv(attempt.all))


def _finish(run: _Run, attempt: _Attempt) -> dict:
    """The summary; for a finished run also the selection candidates (last, best, SWA average) and, with
    ``select``, ``model.pt``."""
    epochs, history, opts = run.epochs, run.history, run.opts
    done = len(history) >= epochs
    summary = {"status": "done" if done else "interrupted", "epochs_done": len(history), "history": history,
               "attempts": attempt.all}
    if not done:
        logger.info("stopped after epoch %d of %d; re-run the same command to resume", len(history), epochs)
        return summary

    candidates = {
        "last": {"epoch": epochs, "state_dict": cpu_state_dict(run.model)},
        "best": run.best,
        "swa": None,
        "limits": {"subset": opts.subset, "max_steps": opts.max_steps},
        "selection_split": selection_split(run.config, len(run.val_ds)),
    }
    if run.swa is not None:
        averaged = run.swa.final_model(run.model, run.train_loader(False, 0), run.device)
        candidates["swa"] = {"epoch": epochs, "n_averaged": run.swa.n_averaged,
                             "state_dict": cpu_state_dict(averaged)}
    cand_path = run.out / "train" / "candidates.pt"
    save_candidates(cand_path, run.config, candidates, run.fingerprint)
    summary["candidates_path"] = str(cand_path)
    if opts.select:
        summary.update(select_model(cand_path, run.out / "model.pt"))
    write_text(run.attempts_path, _attempts_csv(attempt.update(len(history))))  # with SWA, candidates, model.pt
    return summary


def _set_aside_if_stale(ckpt_path: Path, fingerprint: str) -> None:
    """Move a checkpoint of another training run to ``train/stale/`` (kept, never silently deleted); if
    ``train/stale/`` holds this run's own checkpoint (a change that was reverted), bring it back."""
    stale_dir = ckpt_path.parent / "stale"
    if ckpt_path.exists():
        old = checkpoint_fingerprint(ckpt_path)
        if old == fingerprint:
            return
        stale_dir.mkdir(parents=True, exist_ok=True)
        kept = stale_dir / f"checkpoint-{(old or 'unreadable')[:12]}.pt"
        ckpt_path.replace(kept)
        logger.warning("%s was written for another configuration: kept as %s", ckpt_path, kept)
    mine = stale_dir / f"checkpoint-{fingerprint[:12]}.pt"
    if mine.exists() and checkpoint_fingerprint(mine) == fingerprint:
        mine.replace(ckpt_path)
        logger.info("restored this configuration's own checkpoint from %s", mine)


def train_ibp_model(out_dir: str | Path, *, train_samples: int, epochs: int, eps: float, seed: int = 0) -> Path:
    """A small IBP-trained model for tests, benchmarks and examples: ``cnn_small`` on ``mnist_mini``
    (first ``train_samples`` images), ε ramped (smooth schedule) over all but the last epoch, w_rob 0.5,
    Adam 1e-3; the MNIST 0.1 setting otherwise. Returns the path of ``model.pt``."""
    from ctbench.config import resolve

    overrides = {
        "model": "cnn_small", "epochs": epochs, "eps_start_epoch": 0, "eps_end_epoch": max(epochs - 1, 0),
        "lr": 1e-3, "lr_milestones": [], "batch_size": 128, "w_rob": 0.5, "train_eps": repr(float(eps)),
        "l1": 0.0,
    }
    config = resolve(("mnist_mini", "0.1"), "ibp", overrides, seed=seed)
    config["dataset"] = "mnist_mini"
    train(config, out_dir, TrainOptions(subset=train_samples, show_progress=False))
    return Path(out_dir) / "model.pt"
