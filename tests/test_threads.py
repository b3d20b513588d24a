"""Compute commands use the CPUs they were given (ctbench/threads.py), not every core of a shared node."""

import os
import shutil
import subprocess
import sys

import h5py
import pytest
from _certify_helpers import trained_model_path

from ctbench.errors import CTBenchError
from ctbench.threads import available_cpus, resolve_threads


def test_resolution_order():
    cpus = available_cpus()
    assert resolve_threads(None, {}) == (cpus, "CPU affinity")
    assert resolve_threads(None, {"SLURM_CPUS_PER_TASK": "1"}) == (1, "SLURM_CPUS_PER_TASK")
    assert resolve_threads(1, {"SLURM_CPUS_PER_TASK": "4"}) == (1, "--threads")  # the option wins
    assert resolve_threads(None, {"SLURM_CPUS_PER_TASK": "junk"}) == (cpus, "CPU affinity")
    n, source = resolve_threads(cpus + 7, {})  # never more than the affinity mask allows
    assert n == cpus and "capped" in source
    with pytest.raises(CTBenchError, match="--threads must be >= 1"):
        resolve_threads(0, {})


def _certify(model, out, *extra, env=None, prefix=()):
    cmd = [*prefix, sys.executable, "-m", "ctbench", "certify", "--model", str(model), "--eps", "0.1", "--n", "8",
           "--stages", "IBP,PGD", "--pgd-steps", "5", "--device", "cpu", "--out", str(out), *extra]
    environ = {k: v for k, v in os.environ.items() if k not in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS")}
    r = subprocess.run(cmd, env={**environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with h5py.File(out, "r") as f:
        return int(f.attrs["threads"]), str(f.attrs["threads_source"])


def test_certify_job_uses_its_thread_budget(tmp_path_factory, tmp_path):
    """Inside the job, torch.get_num_threads() (recorded in certify.h5) is the budget the job was given:
    --threads, SLURM_CPUS_PER_TASK, or the affinity mask (taskset, a batch system's cpuset)."""
    model = trained_model_path(tmp_path_factory)
    assert _certify(model, tmp_path / "a.h5", "--threads", "1") == (1, "--threads")
    assert _certify(model, tmp_path / "b.h5", env={"SLURM_CPUS_PER_TASK": "1"}) == (1, "SLURM_CPUS_PER_TASK")
    if shutil.which("taskset"):
        assert _certify(model, tmp_path / "c.h5", prefix=("taskset", "-c", "0")) == (1, "CPU affinity")
    if available_cpus() >= 2:  # without a budget a job takes the CPUs it may run on, not one
        assert _certify(model, tmp_path / "d.h5") == (available_cpus(), "CPU affinity")
