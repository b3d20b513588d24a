"""The Snakemake DAG: dry run of the paper grid, a tiny end-to-end run, incremental re-runs, lint,
and a run through a real single-node SLURM cluster (tests/slurm/slurm_up.sh)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def make_workdir(tmp: Path) -> Path:
    """A copy of the workflow (Snakefile, workflow/, config/) to run in isolation."""
    work = tmp / "wf"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work / "Snakefile")
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copytree(ROOT / "config", work / "config")
    return work


def snakemake(work: Path, *args: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    # Rules call the `ctbench` console script: the one installed next to this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": path}
    r = subprocess.run([*SNAKEMAKE, *args], cwd=work, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n"
                             f"{r.stderr[-6000:]}")
    return r


def dry_run_jobs(work: Path, *args: str) -> dict[str, list[str]]:
    """rule -> list of job descriptors (wildcards) that `snakemake -n` would run."""
    r = snakemake(work, *args, "-n", "--quiet", "rules")
    counts = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) not in ("total", "all"):
            counts[m.group(1)] = int(m.group(2))
    return counts


def planned_jobs(work: Path, *args: str) -> list[tuple[str, str]]:
    """(rule, output) pairs of `snakemake -n` (detailed listing)."""
    r = snakemake(work, "-n", *args)
    jobs, rule = [], None
    for line in r.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
        m = re.match(r"^output: (.+)$", line.strip())
        if m and rule:
            jobs.append((rule, m.group(1).split(",")[0].strip()))
            rule = None
    return jobs


def test_full_grid_dry_run(tmp_path):
    """5 settings × 9 methods × 3 seeds = 135 cells, each train → select → certify → attack → summarize."""
    work = make_workdir(tmp_path)
    t0 = time.perf_counter()
    counts = dry_run_jobs(work, "results/table1.csv")
    elapsed = time.perf_counter() - t0
    assert counts == {"prepare_data": 3, "train": 135, "select": 135, "certify": 135, "attack": 135,
                      "summarize": 135, "report": 1}, counts
    print(f"dry run of the full grid: {sum(counts.values())} jobs in {elapsed:.1f} s")


def test_lint(tmp_path):
    work = make_workdir(tmp_path)
    r = snakemake(work, "--lint", "--configfile", "config/ci.yaml", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakefmt_clean():
    r = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_config_is_rejected_before_any_job(tmp_path):
    work = make_workdir(tmp_path)
    cfg = yaml.safe_load((work / "config/ci.yaml").read_text())
    cfg["methods"] = ["ibp", "no_such_method"]
    (work / "config/bad.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake(work, "-n", "--configfile", "config/bad.yaml", check=False)
    assert r.returncode != 0
    assert "no_such_method" in r.stdout + r.stderr
    assert not (work / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny CI configuration run end to end locally (shared by the tests below)."""
    work = make_workdir(tmp_path_factory.mktemp("local"))
    snakemake(work, "--cores", "2", "--configfile", "config/ci.yaml", timeout=1500)
    return work


def test_tiny_dag_end_to_end(tiny_run):
    table = pd.read_csv(tiny_run / "results/table1.csv", dtype={"eps": str})
    assert list(table.method) == ["Standard", "IBP"]
    assert set(table.dataset) == {"mnist_mini"} and set(table.eps) == {"0.1"}
    assert table.nat.between(0, 100).all()
    ibp = table[table.method == "IBP"].iloc[0]
    assert 0 <= ibp.cert <= ibp.adv <= ibp.nat  # sound certificates are never broken by the attack
    assert ibp.cert > 0  # the tiny run trains enough for IBP to certify samples the attack then tries
    for cell in ("standard", "ibp"):
        for seed in (0, 1):
            m = json.loads((tiny_run / f"results/mnist_mini/0.1/{cell}/seed{seed}/metrics.json").read_text())
            assert m["certified_but_attacked"] == 0, (cell, seed)
    assert ibp.cert_literature == 97.95 and ibp.nat_ctbench_paper == 98.87  # Table 1 values alongside
    assert r"\begin{tabular}" in (tiny_run / "results/table1.tex").read_text()
    seeds = pd.read_csv(tiny_run / "results/seeds.csv")
    assert list(seeds.n_seeds) == [2, 2]
    for cell in ("standard/seed0", "ibp/seed1"):
        d = tiny_run / "results/mnist_mini/0.1" / cell
        for name in ("model.pt", "certify.h5", "attack.h5", "metrics.json", "train/history.csv"):
            assert (d / name).is_file(), d / name
    # nothing left to do
    assert dry_run_jobs(tiny_run, "--configfile", "config/ci.yaml") == {}


def test_incremental_one_cell(tiny_run):
    """Changing one method's hyperparameter for one (dataset, ε) re-runs exactly that cell (all seeds)
    and the tables — nothing else."""
    cfg = yaml.safe_load((tiny_run / "config/ci.yaml").read_text())
    cfg["overrides"]["mnist_0.1"] = {"ibp": {"l1": 1.0e-5}}
    (tiny_run / "config/changed.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(tiny_run, "--configfile", "config/changed.yaml")
    cell = "results/mnist_mini/0.1/ibp/seed{}"
    expected = {("report", "results/table1.csv")}
    for seed in (0, 1):
        expected |= {
            ("train", f"{cell.format(seed)}/train/candidates.pt"),
            ("select", f"{cell.format(seed)}/model.pt"),
            ("certify", f"{cell.format(seed)}/certify.h5"),
            ("attack", f"{cell.format(seed)}/attack.h5"),
            ("summarize", f"{cell.format(seed)}/metrics.json"),
        }
    assert set(jobs) == expected, sorted(set(jobs) ^ expected)


def test_stage_version_bump_reruns_that_stage_everywhere(tiny_run):
    cfg = yaml.safe_load((tiny_run / "config/ci.yaml").read_text())
    cfg["versions"]["attack"] = 2
    (tiny_run / "config/attack2.yaml").write_text(yaml.safe_dump(cfg))
    counts = dry_run_jobs(tiny_run, "--configfile", "config/attack2.yaml")
    assert counts == {"attack": 4, "summarize": 4, "report": 1}, counts


def _slurm_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the SLURM test starts slurmctld/slurmd and needs root"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "no apt-get to install slurm-wlm and no slurmctld present"
    return None


@pytest.mark.skipif(_slurm_skip_reason() is not None, reason=_slurm_skip_reason() or "")
def test_slurm_profile_on_a_real_cluster(tiny_run, tmp_path):
    """The tiny DAG through workflow/profiles/slurm on a real single-node cluster: GPU rules land on
    the gpu partition with a GPU request, the others on cpu, and the results equal the local run."""
    up = ROOT / "tests/slurm/slurm_up.sh"
    env = {**os.environ, "SLURM_CI_CPUS": "16", "SLURM_CI_MEM_MB": "128000"}
    r = subprocess.run(["bash", str(up), "up"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    try:
        work = make_workdir(tmp_path)
        cfg = yaml.safe_load((work / "config/ci.yaml").read_text())
        cfg.update(methods=["ibp"], seeds=[0])  # one cell: prepare → train → select → certify → attack → report
        (work / "config/slurm.yaml").write_text(yaml.safe_dump(cfg))
        snakemake(work, "--profile", "workflow/profiles/slurm", "--configfile", "config/slurm.yaml",
                  "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                  "--jobs", "4", timeout=1800)
        # The plugin names every job by the run's UUID and records the rule in the job's comment.
        jobs = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True,
                              check=True).stdout
        placed = {}
        for line in jobs.splitlines():
            rule = re.search(r"Comment=rule_(\w+?)_wildcards", line)
            part = re.search(r"Partition=(\S+)", line)
            if rule and part:
                gpu = "TresPerNode=gres:gpu:1" in line
                placed.setdefault(rule.group(1), set()).add((part.group(1), gpu))
        assert placed, f"no SLURM jobs found:\n{jobs[-3000:]}"
        for rule in ("train", "certify", "attack"):
            assert placed.get(rule) == {("gpu", True)}, (rule, placed)
        for rule in ("select",):
            assert placed.get(rule) == {("cpu", False)}, (rule, placed)
        # the same numbers as the local run
        for cell in ("ibp/seed0",):
            a = json.loads((tiny_run / "results/mnist_mini/0.1" / cell / "metrics.json").read_text())
            b = json.loads((work / "results/mnist_mini/0.1" / cell / "metrics.json").read_text())
            for key in ("nat_acc", "cert_acc", "adv_acc"):
                assert a[key] == b[key], (cell, key, a[key], b[key])
    finally:
        subprocess.run(["bash", str(up), "down"], env=env, capture_output=True, text=True, timeout=120)


def test_demo_config_plans_the_whole_pipeline(tmp_path):
    """config/demo.yaml (the README's demo) validates and plans every stage for its 6 methods."""
    work = make_workdir(tmp_path)
    counts = dry_run_jobs(work, "--configfile", "config/demo.yaml")
    assert counts == {"prepare_data": 1, "train": 6, "select": 6, "certify": 6, "attack": 6, "summarize": 6,
                      "report": 1}, counts


@pytest.mark.slow
def test_demo_runs_and_writes_table1(tmp_path):
    """The README's demo command end to end (about 10 minutes on 2 cores; -m slow)."""
    work = make_workdir(tmp_path)
    snakemake(work, "--cores", "all", "--configfile", "config/demo.yaml", timeout=3000)
    table = pd.read_csv(work / "results/table1.csv", dtype={"eps": str})
    assert len(table) == 6 and (table.cert <= table.adv + 1e-9).all() and (table.adv <= table.nat + 1e-9).all()


def test_external_verifier_settings_reach_the_certify_command(tmp_path):
    """abCROWN in the stage list and an alpha-beta-CROWN config: passed on, and the config is an input."""
    work = make_workdir(tmp_path)
    cfg = yaml.safe_load((work / "config/ci.yaml").read_text())
    cfg["certify"]["stages"] = ["IBP", "abCROWN"]
    cfg["certify"]["abcrown_config"] = "config/abcrown.yaml"
    (work / "config/ext.yaml").write_text(yaml.safe_dump(cfg))
    (work / "config/abcrown.yaml").write_text("solver: {batch_size: 8}\n")
    r = snakemake(work, "-n", "-p", "--configfile", "config/ext.yaml", "--forceall")
    certify_cmds = [line for line in r.stdout.splitlines() if "ctbench certify" in line]
    assert certify_cmds and all("--stages IBP,abCROWN" in c and "--abcrown-config config/abcrown.yaml" in c
                                for c in certify_cmds)
    cfg["certify"]["stages"] = ["IBP", "abcrown"]  # misspelt: rejected by the schema before any job
    (work / "config/bad.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake(work, "-n", "--configfile", "config/bad.yaml", check=False)
    assert r.returncode != 0 and "abcrown" in r.stdout + r.stderr
