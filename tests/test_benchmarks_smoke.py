"""Smoke test of ``benchmarks/bounds.py``: the ``--small`` run works; its JSON has the documented keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {
    "standard",
    "ctbench IBP",
    "ctbench LF CROWN-IBP",
    "auto_LiRPA IBP",
    "auto_LiRPA LF CROWN-IBP",
    "cert ctbench CROWN-IBP",
    "cert auto_LiRPA CROWN-IBP",
    "ctbench AM CROWN-IBP",
    "ctbench AM CROWN-IBP nocut",
    "auto_LiRPA AM CROWN-IBP",
}


def test_bounds_benchmark_small_json():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bounds.py"), "--small", "--json", "--repeats", "1",
         "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert set(res) == {"machine", "config", "results", "speedups", "cut_point_cost", "targets"}
    assert {"cpu", "cores", "torch", "device"} <= set(res["machine"])
    assert set(res["results"]) == ROWS
    assert set(res["speedups"]) == {"IBP", "LF CROWN-IBP", "cert CROWN-IBP", "AM CROWN-IBP", "AM CROWN-IBP nocut"}
    assert set(res["targets"]) == {"ibp_ratio", "ibp_vs_lirpa", "lf_ratio", "lf_speedup", "cert_speedup",
                                   "ibp_speedup", "am_cut_cost", "am_speedup"}
    assert res["cut_point_cost"] > 0
    std = res["results"]["standard"]
    assert std["ratio"] == 1.0 and std["median_s"] > 0 and len(std["times_s"]) == 1
    for name, row in res["results"].items():
        if row is None:  # auto_LiRPA not installed
            assert name.startswith(("auto_LiRPA", "cert auto_LiRPA")) and not res["config"]["auto_lirpa"]
        else:
            assert row["median_s"] > 0
