"""Smoke tests of the benchmarks: `bounds.py --small` (its JSON has the documented keys) and `grid_cost.py`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
needs_lirpa = pytest.mark.skipif(importlib.util.find_spec("auto_LiRPA") is None, reason="auto_LiRPA not installed")
ROWS = {
    "standard",
    "ctbench IBP",
    "ctbench LF CROWN-IBP",
    "auto_LiRPA IBP",
    "auto_LiRPA LF CROWN-IBP",
    "cert ctbench CROWN-IBP",
    "cert ctbench CROWN-IBP nocut",
    "cert auto_LiRPA CROWN-IBP",
    "ctbench AM CROWN-IBP",
    "ctbench AM CROWN-IBP nocut",
    "auto_LiRPA AM CROWN-IBP",
    "ctbench LF CROWN-IBP eager",
    "ctbench AM CROWN-IBP eager",
    "ctbench AM CROWN-IBP nocut eager",
}


def test_bounds_benchmark_small_json():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bounds.py"), "--small", "--json", "--repeats", "1",
         "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "CTBENCH_COMPILE"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    # default CTBENCH_COMPILE=auto: the tiny network stays below the size where compiling pays
    assert res["config"]["compile"] == "auto" and res["config"]["default_rows_compiled"] is False
    assert set(res) == {"machine", "config", "results", "speedups", "cut_point_cost", "cut_point_cost_eager",
                        "cut_point_cost_cert", "targets"}
    assert {"cpu", "cores", "torch", "device"} <= set(res["machine"])
    assert set(res["results"]) == ROWS
    assert set(res["speedups"]) == {"IBP", "LF CROWN-IBP", "cert CROWN-IBP", "AM CROWN-IBP", "AM CROWN-IBP nocut",
                                    "LF CROWN-IBP eager", "AM CROWN-IBP eager"}
    assert set(res["targets"]) == {"ibp_ratio", "ibp_vs_lirpa", "lf_ratio", "lf_speedup", "cert_speedup",
                                   "ibp_speedup", "am_cut_cost", "am_speedup", "lf_speedup_eager",
                                   "am_speedup_eager", "am_cut_cost_eager", "cert_cut_cost"}
    assert res["cut_point_cost"] > 0 and res["cut_point_cost_eager"] > 0 and res["cut_point_cost_cert"] > 0
    std = res["results"]["standard"]
    assert std["ratio"] == 1.0 and std["median_s"] > 0 and len(std["times_s"]) == 1
    for name, row in res["results"].items():
        if row is None:  # auto_LiRPA not installed
            assert name.startswith(("auto_LiRPA", "cert auto_LiRPA")) and not res["config"]["auto_lirpa"]
        else:
            assert row["median_s"] > 0


def test_grid_cost_projects_measured_steps(tmp_path):
    """``benchmarks/grid_cost.py`` on the CI grid with a complete stage added: every Table 1 group is
    measured once, and the hours follow from the measured seconds, the epochs, the seeds and the limits."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    cfg["certify"] = {"stages": ["IBP", "CROWN-IBP", "PGD", "BaB"], "timeout": 5, "n": 100, "batch": 100,
                      "complete_samples": {"standard": 10}, "falsifier": {"steps": 5, "restarts": 1}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grid_cost.py"), "--config", str(tmp_path / "grid.yaml"),
         "--json", "--repeats", "1", "--cert-batch", "2", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"standard", "ibp"}
    for r in rows.values():
        assert r["seeds"] == 2 and r["epochs"] == 2 and r["batch_size"] == 100 and r["step_s"] > 0
        assert set(r["certify_s_per_sample"]) == {"IBP", "CROWN-IBP", "PGD"}
        assert r["train_h_per_seed"] * 3600 / r["epochs"] == pytest.approx(r["epoch_s"])
        assert r["certify_bound_stages_h"] * 3600 == pytest.approx(100 * sum(r["certify_s_per_sample"].values()))
    # the complete stage: timeout x 1 % of the samples that may reach it (standard: the first 10 only)
    assert rows["ibp"]["complete_h_per_pct"] * 3600 == pytest.approx(0.01 * 100 * 5)
    assert rows["standard"]["complete_h_per_pct"] * 3600 == pytest.approx(0.01 * 10 * 5)
    (total,) = res["totals"].values()
    assert total["train_h"] == pytest.approx(sum(r["train_h_per_seed"] * 2 for r in rows.values()))
    assert total["attack_h"] == pytest.approx(sum(r["attack_h"] * 2 for r in rows.values()))


def test_grid_cost_cert_stages_measures_a_subset(tmp_path):
    """``--cert-stages`` measures only the named certify stages; the certify total is then unknown (None),
    never the partial sum, and the per-stage hours follow from the measured seconds."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    cfg["certify"] = {"stages": ["IBP", "CROWN-IBP", "CROWN", "PGD"], "n": 100, "batch": 100,
                      "falsifier": {"steps": 5, "restarts": 1}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "grid_cost.py"), "--config", str(tmp_path / "grid.yaml"),
           "--repeats", "1", "--cert-batch", "2", "--threads", "1", "--stages", "certify",
           "--methods", "ibp", "--cert-stages", "IBP,PGD"]
    proc = subprocess.run(cmd + ["--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    (row,) = res["rows"]
    assert set(row["certify_s_per_sample"]) == {"IBP", "PGD"}
    assert row["certify_stages_not_measured"] == ["CROWN-IBP", "CROWN"]
    assert row["certify_bound_stages_h"] is None
    for stage, s in row["certify_s_per_sample"].items():
        assert s > 0 and row["certify_stage_h"][stage] * 3600 == pytest.approx(100 * s)
    (total,) = res["totals"].values()
    assert total["certify_bound_stages_h"] is None and total["train_h"] is None
    text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "not measured: CROWN-IBP, CROWN" in text.stdout

    bad = subprocess.run(cmd[:-1] + ["IBP,CROWM"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("grid_cost.py: error: --cert-stages: unknown CROWM;")


def test_grid_cost_out_of_memory_leaves_one_group_unmeasured(monkeypatch, capsys):
    """A cell group that runs out of device memory is reported as such (hours unknown, totals unknown)
    while the other groups are still measured — one OOM must not lose a GPU run's whole table."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import grid_cost

    real = grid_cost.train_costs

    def flaky(cfg, *args, **kwargs):
        if cfg["method"] == "ibp":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.7 GiB")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(grid_cost, "train_costs", flaky)
    threads = torch.get_num_threads()
    try:
        rc = grid_cost.main(["--config", str(ROOT / "config" / "ci.yaml"), "--json", "--stages", "train",
                             "--repeats", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["ibp"]["error"] == "train: out of memory" and rows["ibp"]["train_h_per_seed"] is None
    assert rows["standard"]["error"] is None and rows["standard"]["train_h_per_seed"] > 0
    (total,) = res["totals"].values()
    assert total["train_h"] is None  # unknown, not the standard cells' hours alone


def test_grid_cost_bad_filter_one_line():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grid_cost.py"), "--config", "config/ci.yaml",
         "--methods", "nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "grid_cost.py: error: no Table 1 cell matches --settings/--methods"


def test_device_check_fits_one_device_call():
    """benchmarks/device.sh's parts are each capped by `timeout N`; together they must fit one 600-s device call
    (with room for the setup lines), so a slow part can never cost the rest of the GPU check."""
    script = (ROOT / "benchmarks" / "device.sh").read_text()
    caps = [int(n) for n in re.findall(r"^\s*timeout (\d+) ", script, flags=re.M)]
    runs = [line for line in script.splitlines() if "$py " in line and not line.lstrip().startswith("#")]
    # tests, bounds.py, training, grid_cost train, certify cheap stages + attack, CROWN/alpha-CROWN
    assert len(caps) == 6, caps
    assert all(line.lstrip().startswith("timeout ") for line in runs
               if "pytest" in line or "benchmarks/" in line or "ctbench train" in line), runs
    assert sum(caps) <= 570, f"device.sh parts sum to {sum(caps)} s: over one 600-s device call"


def _cascade_vs_abcrown():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cascade_vs_abcrown
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return cascade_vs_abcrown


def test_cascade_comparison_finds_conflicts_and_one_sided_decisions():
    """The comparison flags a sample certified by one run and falsified by the other, whichever way round."""
    import numpy as np

    cmp_mod = _cascade_vs_abcrown()

    def run(verdicts, wall):
        return {"verdicts": np.array(verdicts, dtype=object), "index": np.arange(10, 10 + len(verdicts)),
                "wall_s": wall}

    ours = run(["certified", "falsified", "undecided", "incorrect", "certified", "falsified"], 10.0)
    ref = run(["certified", "certified", "falsified", "incorrect", "undecided", "falsified"], 40.0)
    cmp = cmp_mod.compare(ours, ref)
    assert cmp["conflicts"] == [11]
    assert cmp["only_ctbench_decided"] == [14] and cmp["only_reference_decided"] == [12]
    assert cmp["decided"] == {"ctbench": 4, "reference": 4} and cmp["wall_ratio"] == 0.25
    ref["verdicts"][4] = "falsified"
    assert cmp_mod.compare(ours, ref)["conflicts"] == [11, 14]
    with pytest.raises(Exception, match="same samples"):
        cmp_mod.compare(ours, run(["certified"] * 6, 1.0) | {"index": np.arange(6)})


@pytest.mark.parametrize("parallel", [False, True])
def test_cascade_vs_reference_on_a_small_model(parallel, tmp_path):
    """benchmarks/cascade_vs_abcrown.py end to end with MILP standing in for alpha-beta-CROWN (exact on
    cnn_small), one after the other and --parallel (two pinned worker processes): both runs see the same
    samples, agree on the misclassified ones, never conflict, and the
    kept files and summary say so."""
    if parallel and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("--parallel needs 2 CPUs; this process may use one")
    from ctbench.training import train_ibp_model

    model = train_ibp_model(tmp_path / "m", train_samples=600, epochs=1, eps=0.1)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cascade_vs_abcrown.py"), "--model", str(model), "--eps", "0.1",
         "--n", "12", "--timeout", "2", "--reference", "MILP", "--threads", "1", "--json", "--out",
         str(tmp_path / "cmp"), *(["--parallel"] if parallel else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["ctbench"]["stages"] == ["IBP", "CROWN-IBP", "CROWN", "alpha-CROWN", "PGD", "BaB"]
    assert res["reference"]["stages"] == ["MILP"]
    for run in ("ctbench", "reference"):
        assert sum(res[run]["counts"].values()) == 12 and res[run]["wall_s"] > 0
    assert res["ctbench"]["counts"]["incorrect"] == res["reference"]["counts"]["incorrect"]
    cmp = res["comparison"]
    assert cmp["conflicts"] == [] and cmp["incorrect_mismatch"] == []
    decided = {k: res[k]["counts"]["certified"] + res[k]["counts"]["falsified"] for k in ("ctbench", "reference")}
    assert cmp["decided"] == {"ctbench": decided["ctbench"], "reference": decided["reference"]}
    assert json.loads((tmp_path / "cmp" / "summary.json").read_text()) == res
    assert (tmp_path / "cmp" / "ctbench.h5").is_file() and (tmp_path / "cmp" / "reference.h5").is_file()


def test_cascade_vs_reference_missing_model_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cascade_vs_abcrown.py"), "--model", str(tmp_path / "no.pt"),
         "--eps", "0.1"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "model file not found" in proc.stderr


@pytest.mark.parametrize("trained", [False, True])
def test_bounds_benchmark_full_crown(trained, tmp_path):
    """`bounds.py --full-crown` (ours vs auto_LiRPA's CROWN, the issue-25 row) on a random tiny CNN7 and on a
    trained model's test images: both bounds agree and the report says what was bounded."""
    extra = ["--small"]
    if trained:
        from ctbench.training import train_ibp_model

        extra = ["--model", str(train_ibp_model(tmp_path, train_samples=600, epochs=1, eps=0.1)), "--eps", "0.1"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bounds.py"), "--full-crown", "--json", "--threads", "1",
         "--batch", "3", *extra], cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert set(res["results"]) == {"cert ctbench CROWN", "cert auto_LiRPA CROWN"}
    assert res["config"]["batch"] == 3
    assert res["config"]["weights"].startswith("trained (ibp)" if trained else "random")
    assert res["config"]["input"] == ([1, 28, 28] if trained else [3, 16, 16])
    if res["config"]["auto_lirpa"]:
        assert res["max_bound_difference"] < 1e-4
        assert len(set(res["certified_margins"].values())) == 1
        assert res["speedups"]["full CROWN"] > 0


def test_bounds_full_crown_reports_a_row_out_of_memory(monkeypatch):
    """A CPU allocation failure in one engine's row becomes that row's "out of memory"; the other row's time
    and the peak memory are kept (auto_LiRPA's CROWN needs > 16 GB on two CIFAR-shaped CNN7 inputs)."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bounds as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    if not bench.lirpa.lirpa_available():
        pytest.skip("auto_LiRPA not installed")

    def no_memory(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2030043136 bytes")

    monkeypatch.setattr(bench.lirpa, "compute_bounds_lirpa", no_memory)
    args = argparse.Namespace(small=True, batch=1, eps=2 / 255, device="cpu", model=None, data_root=None)
    res = bench.run_full_crown(args)
    ours, theirs = res["results"]["cert ctbench CROWN"], res["results"]["cert auto_LiRPA CROWN"]
    assert ours["median_s"] > 0 and ours["peak_rss_gb"] > 0 and "error" not in ours
    assert theirs == {"median_s": None, "error": "out of memory", "peak_rss_gb": theirs["peak_rss_gb"]}
    assert res["speedups"]["full CROWN"] is None and res["max_bound_difference"] is None

    def other_error(*a, **k):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(bench.lirpa, "compute_bounds_lirpa", other_error)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        bench.run_full_crown(args)


def _audit(cell, *extra):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "audit_cell.py"), str(cell), "--json", "--threads", "1", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


def _set_status(src, dst, index: int, status: int):
    import shutil

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        row = int(np.flatnonzero(f["sample_index"][:] == index)[0])
        f["status"][row] = status


@needs_lirpa
def test_audit_cell_confirms_certificates_and_catches_wrong_ones(tmp_path):
    """benchmarks/audit_cell.py on a small IBP-trained cell: auto_LiRPA confirms the real cascade's certificates
    (no conflict). Each wrong certify.h5 gives exit 1 and names its sample: a certificate on a misclassified
    input, a certificate on a sample the falsifier broke (the MILP reference finds the counterexample), and
    a 'falsified' on a sample auto_LiRPA certifies."""
    from ctbench.certify import certify_file
    from ctbench.certify.hdf5 import read_h5
    from ctbench.certify.status import Status
    from ctbench.training import train_ibp_model

    cell, bad = tmp_path / "cell", tmp_path / "bad"
    model = train_ibp_model(cell, train_samples=3000, epochs=3, eps=0.05)
    certify_file(model, cell / "certify.h5", eps=0.05, n=40, stages=("IBP", "CROWN-IBP", "CROWN", "PGD"),
                 device="cpu")
    rc, clean, err = _audit(cell)
    assert rc == 0, err[-2000:]
    assert clean["conflicts"] == [] and clean["clean_mismatch"] == [] and clean["samples"] == 40
    assert sum(r["certified"] for r in clean["by_stage"].values()) == clean["certified"] > 0
    assert len(clean["confirmed_by"]) + len(clean["unconfirmed"]) == clean["certified"]

    data, _ = read_h5(cell / "certify.h5")
    first = {v: int(data["sample_index"][data["status"] == int(v)][0]) for v in (Status.INCORRECT, Status.FALSIFIED)}
    confirmed = int(next(i for i, c in clean["confirmed_by"].items() if c in ("auto_LiRPA IBP", "auto_LiRPA CROWN")))
    bad.mkdir()
    (bad / "model.pt").write_bytes(model.read_bytes())
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import audit_cell
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for index, status, reference in (
        (first[Status.INCORRECT], Status.CERTIFIED_IBP, None),
        (first[Status.FALSIFIED], Status.CERTIFIED_IBP, "MILP"),
        (confirmed, Status.FALSIFIED, None),
    ):
        _set_status(cell / "certify.h5", bad / "certify.h5", index, int(status))
        res = audit_cell.audit(bad, None, reference, timeout=30, batch=50, iterations=50)
        assert res["conflicts"] == [index], (index, status)


def test_audit_cell_bad_input_one_line(tmp_path):
    rc, res, err = _audit(tmp_path)
    assert rc == 2 and res is None and err.strip().count("\n") == 0 and "model.pt not found" in err
    rc, res, err = _audit(tmp_path, "--batch", "0")
    assert rc == 2 and res is None and err.strip().count("\n") == 0 and "--batch must be >= 1" in err
