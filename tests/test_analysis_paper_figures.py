"""Issue 28: the paper's Fig. 1 (reduction in certified error), Table 5 (unstable neurons, sampled vs IBP) and
Table 11 (training cost relative to standard training, measured) as grid analyses — each against a hand
computation on tiny hand-made inputs — and their place in the workflow's DAG (dry runs of the demo and CI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from ctbench.analysis import cells as C
from ctbench.analysis import cost_ratio, error_reduction, unstable_neurons
from ctbench.cli import main as cli_main
from ctbench.errors import CTBenchError

ROOT = Path(__file__).resolve().parents[1]
LITERATURE = ROOT / "config" / "literature.yaml"


def write_metrics(path, cert, *, dataset="mnist", eps="0.3", model="cnn7", method="ibp", seed=0, n=100) -> Path:
    """metrics.json as `ctbench summarize` writes it (fractions, the ``cell`` key, ``n`` samples)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"dataset": dataset, "eps": eps, "model": model, "method": method, "variant": "", "seed": seed}
    path.write_text(json.dumps({**cell, "seed": str(seed), "cell": cell, "nat_acc": 0.99, "cert_acc": cert,
                                "adv_acc": cert, "n": n}))
    return path


# -- Fig. 1: reduction in certified error ------------------------------------------------------------------------


def test_relative_reduction_is_the_papers_definition():
    """§5.1: "(100-93.10)/(100-93.62)-1 = 8.15% relative certified error reduction"."""
    assert error_reduction.relative_reduction(100 - 93.10, 100 - 93.62) == pytest.approx(8.15, abs=0.005)
    assert error_reduction.relative_reduction(100 - 93.8, 100 - 93.95) == pytest.approx(2.48, abs=0.005)
    assert math.isinf(error_reduction.relative_reduction(5.0, 0.0))


@pytest.fixture
def two_ibp_seeds(tmp_path):
    return [write_metrics(tmp_path / f"ibp{s}/metrics.json", c, seed=s) for s, c in ((0, 0.94), (1, 0.95))]


def test_error_reduction_by_hand(tmp_path, two_ibp_seeds):
    """Two IBP seeds on MNIST 0.3 (CNN7) certify 94 % and 95 %: ours 94.5 % (error 5.5); the literature's 93.10
    (error 6.9) and the CTBench paper's 93.80 (error 6.2), Table 1."""
    mini = write_metrics(tmp_path / "mini/metrics.json", 0.80, dataset="mnist_mini", eps="0.1", model="cnn_small")
    pgd = write_metrics(tmp_path / "pgd/metrics.json", 0.0, method="pgd")
    rows = C.read_metrics([*two_ibp_seeds, mini, pgd])
    df = error_reduction.reduction_table(rows, C.load_literature(LITERATURE), C.method_filter("certified"))
    assert list(zip(df.dataset, df.method, strict=True)) == [("mnist", "ibp"), ("mnist_mini", "ibp")]  # no PGD
    r = df.set_index("dataset").loc["mnist"]
    assert (r.n_seeds, r.n_samples) == (2, "100")
    assert r.cert == pytest.approx(94.5) and r.cert_std == pytest.approx(math.sqrt(0.5))
    assert (r.err_literature, r.err_paper, r.err) == pytest.approx((6.9, 6.2, 5.5))
    assert r.reduction_pp == pytest.approx(6.9 - 5.5)
    assert r.reduction_rel_pct == pytest.approx(100 * (6.9 / 5.5 - 1))  # 25.45 %
    assert r.paper_reduction_pp == pytest.approx(0.7)
    assert r.paper_reduction_rel_pct == pytest.approx(100 * (6.9 / 6.2 - 1))  # 11.29 %
    assert r.comparable == "yes"
    mini_row = df.set_index("dataset").loc["mnist_mini"]
    assert mini_row.err_literature == pytest.approx(100 - 97.95)  # MNIST 0.1's literature value, marked:
    assert mini_row.comparable == "no: cnn_small (literature: CNN7), mnist_mini (literature: MNIST)"


def test_error_reduction_cli_writes_tables_and_figure(tmp_path, two_ibp_seeds):
    out = tmp_path / "out"
    argv = ["analyze", "error_reduction", "--metrics", *map(str, two_ibp_seeds), "--literature", str(LITERATURE),
            "--out-dir", str(out)]
    assert cli_main(argv) == 0
    for suffix in ("csv", "md", "tex", "png", "pdf"):
        assert (out / f"error_reduction.{suffix}").stat().st_size > 0, suffix
    md = (out / "error_reduction.md").read_text()
    assert "Data: ours from 2 cells' metrics.json (seeds per row: 2; certified test samples per cell: 100)" in md
    assert "literature.yaml `table1`" in md
    tex = (out / "error_reduction.tex").read_text()
    assert tex.startswith("% CTBench Fig. 1") and "& 6.90 & 6.20 & 5.50 & 11.3 & 25.5" in tex


# -- Table 5: unstable neurons ------------------------------------------------------------------------------------


def write_fragmentation(path, lower, ibp, *, method="ibp", seed=0, eps="2/255", eval_eps="2/255", dataset="cifar10",
                        model="cnn7", samples=50) -> Path:
    """A fragmentation.parquet as `ctbench analyze fragmentation` writes it, one row per input."""
    from ctbench.analysis.tables import write_table

    n = len(lower)
    df = pd.DataFrame({"dataset": dataset, "eps": eps, "model": model, "method": method, "seed": str(seed),
                       "variant": "", "eval_dataset": dataset, "eval_eps": C.eps_value(eval_eps),
                       "eval_eps_str": eval_eps, "index": range(n), "label": 0, "n_neurons": 1000,
                       "samples": samples, "unstable_lower_pct": lower, "unstable_ibp_pct": ibp})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(df, path, {"analysis": "fragmentation", "split": "test", "seed": 0, "n": n})
    return path


def test_unstable_neurons_by_hand(tmp_path):
    """Two IBP models (seeds) on CIFAR-10 2/255, two inputs each: lower (1, 2) and (3, 5) % → model means 1.5 and
    4.0 → 2.75 ± 1.77; IBP (2, 4) and (6, 6) → 3.0 and 6.0 → 4.5 ± 2.12; beside the paper's 0.97 / 1.26."""
    tables = unstable_neurons.read_tables([
        write_fragmentation(tmp_path / "s0.parquet", [1.0, 2.0], [2.0, 4.0], seed=0),
        write_fragmentation(tmp_path / "s1.parquet", [3.0, 5.0], [6.0, 6.0], seed=1),
        write_fragmentation(tmp_path / "other_eps.parquet", [7.0], [9.0], seed=0, eval_eps="8/255"),
    ])
    df = unstable_neurons.unstable_table(tables, C.load_literature(LITERATURE))
    assert list(df.eval_eps) == ["2/255", "8/255"]  # sorted by the evaluation ε's value
    r = df.iloc[0]
    assert (r.n_models, r.n_inputs, r.samples) == (2, "2", "50")
    assert r.lower_pct == pytest.approx(2.75) and r.lower_std == pytest.approx(math.sqrt(2 * 1.25**2))
    assert r.ibp_pct == pytest.approx(4.5) and r.ibp_std == pytest.approx(math.sqrt(2 * 1.5**2))
    assert r.gap_pp == pytest.approx(1.75)
    assert (r.paper_lower_pct, r.paper_ibp_pct) == (0.97, 1.26)
    other = df.iloc[1]  # evaluated at another ε than trained: not the paper's experiment
    assert (other.n_models, other.lower_pct, other.ibp_pct) == (1, 7.0, 9.0)
    assert math.isnan(other.paper_lower_pct) and math.isnan(other.lower_std)
    # another architecture: no paper value
    small = unstable_neurons.read_tables([write_fragmentation(tmp_path / "small.parquet", [1.0], [2.0],
                                                              model="cnn_small")])
    assert math.isnan(unstable_neurons.unstable_table(small, C.load_literature(LITERATURE)).paper_lower_pct[0])


def test_unstable_neurons_cli_and_bad_input(tmp_path, capsys):
    paths = [write_fragmentation(tmp_path / f"{m}.parquet", [1.0, 3.0], [2.0, 4.0], method=m)
             for m in ("sabr", "ibp")]
    out = tmp_path / "out"
    assert cli_main(["analyze", "unstable_neurons", "--tables", *map(str, paths), "--literature", str(LITERATURE),
                     "--out-dir", str(out)]) == 0
    for suffix in ("csv", "md", "tex", "png", "pdf"):
        assert (out / f"unstable_neurons.{suffix}").stat().st_size > 0, suffix
    assert list(pd.read_csv(out / "unstable_neurons.csv").method) == ["ibp", "sabr"]  # the paper's order
    md = (out / "unstable_neurons.md").read_text()
    assert "Data: 2 fragmentation table(s)" in md and "inputs per model: 2 (the first inputs of the test split of " \
        "cifar10); sampled points per input: 50" in md
    tex = (out / "unstable_neurons.tex").read_text()
    assert "lower bound & upper bound (IBP)" in tex and "& IBP & 2.00 & 3.00 & 0.97 & 1.26" in tex
    missing = tmp_path / "c/analysis/fragmentation.parquet"
    assert cli_main(["analyze", "unstable_neurons", "--tables", str(missing), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "rule `analyze_model`" in err
    bad = tmp_path / "bad.parquet"
    from ctbench.analysis.tables import write_table

    write_table(pd.DataFrame({"x": [1]}), bad, {})
    with pytest.raises(CTBenchError, match="not a fragmentation table"):
        unstable_neurons.read_tables([bad])


# -- Table 11: training cost relative to standard training --------------------------------------------------------


def write_cell(cell_dir, times, eps, *, method, dataset="mnist", setting_eps="0.1", model="cnn7", seed=0,
               batch_size=100, attack_steps=5, attack_restarts=1) -> tuple[Path, Path]:
    """``cell.json`` (as the workflow's rule cell_config writes it) and ``train/history.csv`` of one cell."""
    cell_dir = Path(cell_dir)
    (cell_dir / "train").mkdir(parents=True, exist_ok=True)
    cell = {"dataset": dataset, "eps": setting_eps, "model": model, "method": method, "variant": "", "seed": seed}
    config = {"method": method, "batch_size": batch_size, "attack_steps": attack_steps,
              "attack_restarts": attack_restarts}
    (cell_dir / "cell.json").write_text(json.dumps({"format": "ctbench-cell/1", "cell": cell, "config": config}))
    pd.DataFrame({"epoch": range(1, len(times) + 1), "eps": eps, "time_s": times}).to_csv(
        cell_dir / "train/history.csv", index=False)
    return cell_dir / "cell.json", cell_dir / "train/history.csv"


def test_epochs_used_skip_the_first_and_the_ramp():
    hist = pd.DataFrame({"eps": [0.01, 0.05, 0.1, 0.1], "time_s": [9, 9, 1, 1]})
    assert cost_ratio.epochs_used(hist) == [2, 3]
    assert cost_ratio.epochs_used(pd.DataFrame({"eps": [0.0] * 3})) == [1, 2]  # standard: one ε (0) throughout
    assert cost_ratio.epochs_used(pd.DataFrame({"eps": [0.05, 0.1]})) == [1]
    assert cost_ratio.epochs_used(pd.DataFrame({"eps": [0.02, 0.05, 0.1]})) == [2]  # ramp ends at the last
    assert cost_ratio.epochs_used(pd.DataFrame({"eps": [0.1]})) == [0]


def test_cost_ratio_by_hand(tmp_path):
    """Standard: epochs of 10, 2, 2, 2 s at ε 0 → epochs 2-4, 2.0 s. IBP: 20, 6, 5, 7 s, ramp over the first two
    epochs → epochs 3-4, 6.0 s: 3.0× standard per sample; at half standard's batch size 1.5× per batch (Table 11:
    2T). SABR in another setting has no standard cell: no ratio, but Table 11's (M+2)T with M = 5 × 2."""
    files = [write_cell(tmp_path / "std", [10, 2, 2, 2], [0, 0, 0, 0], method="standard"),
             write_cell(tmp_path / "ibp", [20, 6, 5, 7], [0.01, 0.05, 0.1, 0.1], method="ibp", batch_size=50),
             write_cell(tmp_path / "sabr", [5, 4], [0.3, 0.3], method="sabr", setting_eps="0.3", attack_restarts=2)]
    cells = cost_ratio.read_cells([c for c, _ in files], [h for _, h in files])
    df = cost_ratio.ratio_table(cells).set_index("method")
    assert list(df.index) == ["standard", "ibp", "sabr"]
    assert df.loc["standard", "epoch_s"] == 2.0 and df.loc["standard", "epochs_used"] == "2-4"
    assert df.loc["ibp", "epoch_s"] == 6.0 and df.loc["ibp", "epochs_used"] == "3-4"
    assert df.loc["ibp", "ratio"] == pytest.approx(3.0) and df.loc["ibp", "step_ratio"] == pytest.approx(1.5)
    assert (df.loc["ibp", "paper_cost"], df.loc["ibp", "paper_ratio"]) == ("2T", 2.0)
    assert df.loc["ibp", "reference"] == "standard (1 seed)"
    assert math.isnan(df.loc["sabr", "ratio"]) and df.loc["sabr", "reference"].startswith("missing: no standard cell")
    assert (df.loc["sabr", "attack_m"], df.loc["sabr", "paper_ratio"]) == (10, 12.0)
    assert df.loc["sabr", "epoch_s"] == 4.0 and df.loc["sabr", "epochs_used"] == "2"


def test_cost_ratio_averages_seeds_and_cli(tmp_path):
    """Two seeds per method: the means of their epoch times are compared (standard 2 and 4 s → 3; IBP 6 and 12 →
    9; ratio 3), and the CLI writes every output with the data source in the notes."""
    files = [write_cell(tmp_path / f"{m}{s}", [99, t], [0.1, 0.1], method=m, seed=s)
             for m, s, t in (("standard", 0, 2), ("standard", 1, 4), ("ibp", 0, 6), ("ibp", 1, 12))]
    df = cost_ratio.ratio_table(cost_ratio.read_cells([c for c, _ in files], [h for _, h in files]))
    ibp = df.set_index("method").loc["ibp"]
    assert (ibp.n_seeds, ibp.epoch_s, ibp.ratio) == (2, 9.0, 3.0) and ibp.epoch_s_std == pytest.approx(math.sqrt(18))
    assert ibp.reference == "standard (2 seeds)"
    out = tmp_path / "out"
    argv = ["analyze", "cost_ratio", "--cells", *(str(c) for c, _ in files), "--histories", *(str(h) for _, h in files),
            "--hardware", "test CPU", "--out-dir", str(out)]
    assert cli_main(argv) == 0
    for suffix in ("csv", "md", "tex", "png", "pdf"):
        assert (out / f"cost_ratio.{suffix}").stat().st_size > 0, suffix
    md = (out / "cost_ratio.md").read_text()
    assert "Data: `time_s` of train/history.csv of 4 cells (seeds per row: 2;" in md and "hardware: test CPU" in md
    assert r"$2T$ & 2.0 & 3.00 & 3.00" in (out / "cost_ratio.tex").read_text()


def test_cost_ratio_needs_the_cell_file_beside_the_history(tmp_path):
    _, history = write_cell(tmp_path / "a", [1, 1], [0, 0], method="standard")
    other, _ = write_cell(tmp_path / "b", [1, 1], [0, 0], method="ibp")
    with pytest.raises(CTBenchError, match="has no cell file"):
        cost_ratio.read_cells([other], [history])


# -- the workflow: the three analyses are in the demo's and CI's DAG ----------------------------------------------


NEW = ("error_reduction", "unstable_neurons", "cost_ratio")


@pytest.mark.parametrize("config", ["config/demo.yaml", "config/ci.yaml"])
def test_demo_and_ci_plan_the_new_analyses(tmp_path, config):
    """A dry run plans each new table (and so its figure, the same job) and the report bundles them (captions)."""
    from test_workflow import make_workdir, planned_jobs

    work = make_workdir(tmp_path)
    jobs = set(planned_jobs(work, "--configfile", config))
    for name in NEW:
        assert ("analyze_grid", f"results/analysis/{name}.csv") in jobs, name
    # Table 5 reads the fragmentation tables, Table 11 the training histories: both are made first
    assert any(rule == "analyze_model" and out.endswith("analysis/fragmentation.parquet") for rule, out in jobs)
    caption = (ROOT / "workflow/report/grid_analysis.rst").read_text()
    for name in NEW:
        assert f'grid_analysis == "{name}"' in caption, name


def test_tables_and_figures_state_sample_count_and_source(tmp_path, two_ibp_seeds):
    """Each new table's Markdown, its LaTeX (a % comment) and its figure (PNG metadata) carry the data note."""
    from PIL import Image

    out = tmp_path / "out"
    frags = [write_fragmentation(tmp_path / f"f{s}.parquet", [1.0, 2.0, 3.0], [2.0, 3.0, 4.0], seed=s) for s in (0, 1)]
    cells = [write_cell(tmp_path / m, [9, 1, 1], [0.1, 0.1, 0.1], method=m) for m in ("standard", "ibp")]
    runs = {
        "error_reduction": (["--metrics", *map(str, two_ibp_seeds), "--literature", str(LITERATURE)],
                            "Samples (metrics.json): n = 100 evaluated samples per cell — MNIST"),
        "unstable_neurons": (["--tables", *map(str, frags), "--literature", str(LITERATURE)],
                             "Samples (fragmentation.parquet): n = 3 test inputs per model — CIFAR-10 test split, "
                             "the first 3 (sample_index 0–2). Each input: 50 sampled points"),
        "cost_ratio": (["--cells", *(str(c) for c, _ in cells), "--histories", *(str(h) for _, h in cells)],
                       "Samples (train/history.csv): n = 2 timed epochs per cell, 2 cells"),
    }
    for name, (args, expected) in runs.items():
        assert cli_main(["analyze", name, *args, "--out-dir", str(out)]) == 0, name
        assert expected in (out / f"{name}.md").read_text(), name
        assert f"% {expected}" in (out / f"{name}.tex").read_text(), name
        assert expected.split(" — ")[0] in Image.open(out / f"{name}.png").info["Description"], name
