"""CPU threads of a compute command: the CPUs the job was given, not the machine's core count.

torch's default intra-op thread count is the number of physical cores of the machine. On a node that
several jobs share (a SLURM node running a few of our certify jobs, a laptop running the test suite
beside a training run) every process then spins that many OpenMP threads over the same cores, and small
per-sample work (PGD on a few undecided samples, BaB's bound passes) slows down by two orders of
magnitude. Every compute command (train, certify, attack, analyses) therefore sets its threads once, at
start-up, from, in this order:

1. ``--threads N`` (the workflow passes Snakemake's ``{threads}``, which the SLURM profile turns into
   ``--cpus-per-task``, so the two always agree);
2. ``SLURM_CPUS_PER_TASK`` (a job started by hand with ``srun``/``sbatch``);
3. the CPU affinity mask (``os.sched_getaffinity``: ``taskset``, cgroups/cpusets of a batch system),
   falling back to ``os.cpu_count()``.

and never more than the affinity mask allows. ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` are set to the
same number for child processes (an external verifier inherits the budget).
"""

from __future__ import annotations

import logging
import os

from ctbench.errors import CTBenchError

logger = logging.getLogger(__name__)

#: Environment variables of the thread pools a child process may use (set to the resolved count).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int | None = None, environ=None) -> tuple[int, str]:
    """``(threads, source)``: the thread count a compute command uses and where it came from."""
    env = os.environ if environ is None else environ
    cpus = available_cpus()
    if requested is not None:
        if requested < 1:
            raise CTBenchError(f"--threads must be >= 1, got {requested}")
        return min(requested, cpus), "--threads" if requested <= cpus else f"--threads (capped at {cpus} CPUs)"
    slurm = env.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm:
        try:
            n = int(slurm)
        except ValueError:
            n = 0
        if n >= 1:
            return min(n, cpus), "SLURM_CPUS_PER_TASK"
    return cpus, "CPU affinity"


def add_threads_argument(parser) -> None:
    """The ``--threads`` option of a compute command."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads (default: SLURM_CPUS_PER_TASK, else the CPUs this process may run on)",
    )


_applied: dict = {}


def apply_threads(requested: int | None = None) -> int:
    """Resolve and set torch's intra- and inter-op threads and the child-process variables; returns N.

    Called once per process before any torch work (inter-op threads cannot change afterwards; a
    second call only adjusts the intra-op count)."""
    import torch

    n, source = resolve_threads(requested)
    torch.set_num_threads(n)
    if not _applied:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # parallel work already started in this process
            pass
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    _applied.update(threads=n, source=source)
    logger.debug("using %d CPU thread%s (%s)", n, "" if n == 1 else "s", source)
    return n


def thread_info() -> dict:
    """``{"threads", "source"}`` as applied (recorded in outputs' provenance); torch's count if unset."""
    if _applied:
        return dict(_applied)
    import torch

    return {"threads": torch.get_num_threads(), "source": "torch default"}
