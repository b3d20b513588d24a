"""Issue 28: Fig. 7's regularization sweeps (SABR/STAPS λ, TAPS/STAPS gradient scale, MTL-IBP α) in the grids
and the analysis regularization_tradeoff that draws them: a hand computation on made-up cells, the sweeps'
cells, and the analysis in the demo's and CI's workflow DAGs (dry runs)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctbench.analysis import cells as C
from ctbench.analysis import regularization_tradeoff as R
from ctbench.cli import main as cli_main
from ctbench.errors import CTBenchError
from ctbench.grid import Grid, load_yaml

ROOT = Path(__file__).resolve().parents[1]


def write_cell(root: Path, *, method: str, variant: str = "", seed: int = 0, nat: float, cert: float,
               adv: float | None = None, config: dict, dataset="mnist_mini", eps="0.1", model="cnn_small",
               n=500) -> Path:
    """A cell folder as the workflow leaves it: metrics.json (ctbench summarize) and cell.json (cell_config)."""
    run = f"{method}+{variant}" if variant else method
    d = root / dataset / eps / model / run / f"seed{seed}"
    d.mkdir(parents=True)
    cell = {"dataset": dataset, "eps": eps, "model": model, "method": method, "variant": variant, "seed": seed}
    (d / "metrics.json").write_text(json.dumps({"cell": cell, "nat_acc": nat, "cert_acc": cert,
                                                "adv_acc": cert if adv is None else adv, "n": n, "split": "test",
                                                "dataset": dataset, "method": method}))
    (d / "cell.json").write_text(json.dumps({"format": "ctbench-cell/1", "cell": cell,
                                             "config": {"method": method, **config}}))
    return d / "metrics.json"


@pytest.fixture
def sweep_cells(tmp_path):
    """SABR's λ around its base 0.4 (two seeds at 0.8 and at the base), MTL-IBP's α around 0.01, and cells no
    sweep owns: SABR seed 2 (no swept cell of that seed), IBP, and a plain variant."""
    w = lambda **kw: write_cell(tmp_path / "results", **kw)  # noqa: E731
    return [
        w(method="sabr", seed=0, nat=0.96, cert=0.85, config={"eps_shrink": 0.4}),
        w(method="sabr", seed=1, nat=0.94, cert=0.83, config={"eps_shrink": 0.4}),
        w(method="sabr", seed=2, nat=0.50, cert=0.10, config={"eps_shrink": 0.4}),
        w(method="sabr", variant="lambda_0.2", nat=0.97, cert=0.80, config={"eps_shrink": 0.2}),
        w(method="sabr", variant="lambda_0.8", seed=0, nat=0.93, cert=0.86, config={"eps_shrink": 0.8}),
        w(method="sabr", variant="lambda_0.8", seed=1, nat=0.91, cert=0.88, config={"eps_shrink": 0.8}),
        w(method="mtl_ibp", nat=0.97, cert=0.82, config={"ibp_coef": 0.01}),
        w(method="mtl_ibp", variant="alpha_0.03", nat=0.95, cert=0.80, config={"ibp_coef": 0.03}),
        w(method="ibp", nat=0.92, cert=0.83, config={"eps_shrink": None}),
        w(method="sabr", variant="wide", nat=0.1, cert=0.1, config={"eps_shrink": 0.4}),
    ]


SWEEPS = {"lambda": "eps_shrink", "alpha": "ibp_coef"}


def test_table_is_the_hand_computation(sweep_cells):
    rows = C.read_metrics(sweep_cells)
    df = R.regularization_table(rows, R.read_cell_configs(R.cell_files_beside(sweep_cells)), SWEEPS)
    got = [(r.sweep, r.key, r.method, r.value, r.base, round(r.nat, 6), round(r.cert, 6), r.n_seeds, r.n)
           for r in df.itertuples()]
    assert got == [
        ("lambda", "eps_shrink", "sabr", 0.2, False, 97.0, 80.0, 1, 500),
        ("lambda", "eps_shrink", "sabr", 0.4, True, 95.0, 84.0, 2, 500),  # base cells of seeds 0 and 1 only
        ("lambda", "eps_shrink", "sabr", 0.8, False, 92.0, 87.0, 2, 500),
        ("alpha", "ibp_coef", "mtl_ibp", 0.01, True, 97.0, 82.0, 1, 500),
        ("alpha", "ibp_coef", "mtl_ibp", 0.03, False, 95.0, 80.0, 1, 500),
    ]
    base = df[df.base & (df.method == "sabr")].iloc[0]
    assert math.isclose(base.nat_std, math.sqrt(2.0)) and math.isclose(base.cert_std, math.sqrt(2.0))  # ddof 1
    assert math.isnan(df.iloc[0].nat_std)  # one seed: no std
    assert set(df.dataset) == {"mnist_mini"} and set(df.eps) == {"0.1"} and set(df.model) == {"cnn_small"}
    assert "5 points from 7 cells" in R.notes(df)[0]  # the base cell of seed 2 is not drawn
    note = R.data_note(df)
    assert note.startswith("Samples (metrics.json): n = 500 ") and "MNIST (mini) test split" in note


def test_cli_writes_tables_and_figure(sweep_cells, tmp_path):
    out = tmp_path / "out"
    argv = ["analyze", "regularization_tradeoff", "--metrics", *map(str, sweep_cells), "--sweep", "lambda=eps_shrink",
            "--sweep", "alpha=ibp_coef", "--out-dir", str(out)]
    assert cli_main(argv) == 0
    for ext in ("csv", "md", "tex", "png", "pdf"):
        assert (out / f"regularization_tradeoff.{ext}").stat().st_size > 0, ext
    csv = pd.read_csv(out / "regularization_tradeoff.csv")
    assert list(csv.value) == [0.2, 0.4, 0.8, 0.01, 0.03] and list(csv.base) == [False, True, False, True, False]
    md = (out / "regularization_tradeoff.md").read_text()
    assert "| MNIST (mini) ε=0.1 | cnn_small | λ (eps_shrink) | SABR | 0.4 | base | 95.00 | 84.00 |" in md
    assert "Samples (metrics.json): n = 500 " in md and "MNIST (mini) test split" in md
    tex = (out / "regularization_tradeoff.tex").read_text()
    assert tex.startswith("% CTBench Fig. 7") and "0.4 (base)" in tex


def test_figure_one_panel_per_sweep_points_labelled_base_marked(sweep_cells):
    rows = C.read_metrics(sweep_cells)
    df = R.regularization_table(rows, R.read_cell_configs(R.cell_files_beside(sweep_cells)), SWEEPS)
    fig = R.draw(df)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    lam, alpha = axes
    assert "λ (eps_shrink)" in lam.get_title() and "α (ibp_coef)" in alpha.get_title()
    gids = {line.get_gid() for line in lam.lines if line.get_gid()}
    assert gids == {"lambda|sabr|0.2", "lambda|sabr|0.4|base", "lambda|sabr|0.8"}
    assert {t.get_text() for t in lam.texts} == {"0.2", "0.4", "0.8"}
    ring = [line for line in lam.lines if line.get_markeredgecolor() == "black" and len(line.get_xdata())]
    assert len(ring) == 1 and (ring[0].get_xdata()[0], ring[0].get_ydata()[0]) == (95.0, 84.0)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_sweep_of_takes_the_longest_fitting_name():
    sweeps = {"l1": "l1", "l1_big": "l1", "lambda": "eps_shrink"}
    assert R.sweep_of("l1_big_0.1", sweeps) == "l1_big" and R.sweep_of("l1_1e-05", sweeps) == "l1"
    assert R.sweep_of("wide", sweeps) is None and R.sweep_of("lambda_", sweeps) is None
    assert R.parse_sweeps(["lambda=eps_shrink"]) == {"lambda": "eps_shrink"}
    with pytest.raises(CTBenchError, match="NAME=HYPERPARAMETER"):
        R.parse_sweeps(["lambda"])


def test_errors_are_one_line(sweep_cells, tmp_path, capsys):
    (sweep_cells[3].with_name("cell.json")).unlink()
    argv = ["analyze", "regularization_tradeoff", "--metrics", *map(str, sweep_cells), "--sweep", "lambda=eps_shrink",
            "--out-dir", str(tmp_path / "out")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing 1 cell.json" in err and "rule `cell_config`" in err
    argv = ["analyze", "regularization_tradeoff", "--metrics", str(sweep_cells[0]), "--sweep", "lambda=eps_shrink",
            "--out-dir", str(tmp_path / "out")]
    assert cli_main(argv) == 2
    assert "no cell of the sweeps lambda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- the sweeps of the grids ------------------------------------------------------------------------------------


def grid(name: str) -> Grid:
    cwd = os.getcwd()
    os.chdir(ROOT)  # hparams paths are relative to the workflow's directory
    try:
        return Grid(load_yaml(ROOT / "config" / f"{name}.yaml"))
    finally:
        os.chdir(cwd)


def test_paper_grid_fig7_sweeps_expand_to_their_cells():
    """Fig. 7 (CIFAR-10 2/255, CNN7, seed 0): λ of SABR and STAPS, gradient scale of TAPS and STAPS, α of
    MTL-IBP; each value one variant cell at results/.../{method}+{sweep}_{value}/ with that value trained."""
    g = grid("config")
    assert g.sweeps() == {"l1": "l1", "lambda": "eps_shrink", "grad_scale": "taps_grad_scale", "alpha": "ibp_coef"}
    fig7 = {(c.method, c.variant): g.train_config(c) for c in g.cells
            if c.variant and not c.variant.startswith("l1_")}
    want = {**{(m, f"lambda_{v}"): ("eps_shrink", v) for m in ("sabr", "staps") for v in (0.05, 0.2, 0.4)},
            **{(m, f"grad_scale_{v}"): ("taps_grad_scale", v) for m in ("taps", "staps") for v in (1, 2, 10)},
            **{("mtl_ibp", f"alpha_{v}"): ("ibp_coef", v) for v in (0.003, 0.03, 0.1)}}
    assert set(fig7) == set(want)
    for (method, variant), (key, value) in want.items():
        assert fig7[(method, variant)][key] == value, (method, variant)
    cells = [c for c in g.cells if (c.method, c.variant) in want]
    assert {(c.dataset, c.eps, c.model, c.seed) for c in cells} == {("cifar10", "2_255", "cnn7", 0)}
    assert g.cell("cifar10", "2_255", "cnn7", "staps+lambda_0.05", 0).dir == \
        "results/cifar10/2_255/cnn7/staps+lambda_0.05/seed0"
    # the base cells (Table 8's values) are read beside them, same seed
    bases = {(c.method, g.train_config(c)["eps_shrink"], g.train_config(c)["taps_grad_scale"],
              g.train_config(c)["ibp_coef"]) for c in g.sweep_cells()
             if not c.variant and c.dataset == "cifar10" and c.eps == "2_255"}
    assert bases == {("sabr", 0.1, None, None), ("staps", 0.1, 5, None), ("taps", None, 5, None),
                     ("mtl_ibp", None, None, 0.01), ("ibp", None, None, None)}
    assert all(c.seed == 0 for c in g.sweep_cells())


def test_demo_and_ci_sweeps():
    demo = grid("demo")
    assert demo.sweeps() == {"lambda": "eps_shrink"}
    got = sorted((c.run, demo.train_config(c)["eps_shrink"]) for c in demo.sweep_cells())
    assert got == [("sabr", 0.4), ("sabr+lambda_0.2", 0.2), ("sabr+lambda_0.8", 0.8)]
    assert len(demo.cells) == 8 and len(demo.ablation_cells()) == 2
    assert "regularization_tradeoff" in demo.analysis()["grid"]
    ci = grid("ci")
    assert sorted(c.run for c in ci.sweep_cells()) == ["ibp", "ibp+l1_1e-05"]  # no extra cell
    assert all(c.seed == 0 for c in ci.sweep_cells())


# -- the workflow: the analysis in the demo's and CI's DAGs -------------------------------------------------------


def _dry_run(tmp_path: Path, config: str) -> str:
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work / "Snakefile")
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copytree(ROOT / "config", work / "config")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", config], cwd=work,
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("config, sweep, runs", [
    ("config/demo.yaml", "lambda=eps_shrink", ("sabr", "sabr+lambda_0.2", "sabr+lambda_0.8")),
    ("config/ci.yaml", "l1=l1", ("ibp", "ibp+l1_1e-05")),
])
def test_workflow_dag_runs_the_analysis(tmp_path, config, sweep, runs):
    out = _dry_run(tmp_path, config)
    for ext in ("csv", "md", "tex", "png", "pdf"):
        assert f"results/analysis/regularization_tradeoff.{ext}" in out, ext
    cmd = next(line for line in out.splitlines() if "ctbench analyze" in line and "regularization_tradeoff" in line)
    assert f"--sweep {sweep}" in cmd
    metrics = re.search(r"--metrics (.*?) --cells", cmd).group(1).split()
    cells = re.search(r"--cells (.*?) --sweep", cmd).group(1).split()
    want = [f"results/mnist_mini/0.1/cnn_small/{run}/seed0" for run in runs]
    assert sorted(metrics) == sorted(f"{d}/metrics.json" for d in want)
    assert sorted(cells) == sorted(f"{d}/cell.json" for d in want)


def test_grid_without_sweeps_has_no_such_job(tmp_path):
    """A grid without sweeps (CI's, its L1 sweep removed) plans the other analyses but not this one."""
    import yaml

    cfg = load_yaml(ROOT / "config/ci.yaml")
    cfg.pop("sweeps")
    (tmp_path / "nosweep.yaml").write_text(yaml.safe_dump(cfg))
    out = _dry_run(tmp_path, str(tmp_path / "nosweep.yaml"))
    assert "regularization_tradeoff" not in out and "results/analysis/tradeoff.csv" in out


def test_base_without_the_value_is_one_point(tmp_path):
    """A base cell whose configuration lacks the swept key (e.g. a sweep over a key its method leaves unset):
    its seeds make one point, value missing (``/``), drawn last on the curve."""
    w = lambda **kw: write_cell(tmp_path / "results", **kw)  # noqa: E731
    paths = [w(method="ibp", seed=s, nat=0.9, cert=0.8, config={"l1": None}) for s in (0, 1)]
    paths += [w(method="ibp", variant="l1_1e-05", seed=s, nat=0.8, cert=0.7, config={"l1": 1e-5}) for s in (0, 1)]
    df = R.regularization_table(C.read_metrics(paths), R.read_cell_configs(R.cell_files_beside(paths)), {"l1": "l1"})
    assert list(df.base) == [False, True] and list(df.n_seeds) == [2, 2]
    assert df.value.iloc[0] == 1e-5 and math.isnan(df.value.iloc[1]) and R.format_value(df.value.iloc[1]) == "/"
