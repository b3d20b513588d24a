"""``ctbench report``: Table 1 (CSV, Markdown, LaTeX) and the seed statistics from cell summaries."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _certify_helpers import run_cli

from ctbench.errors import CTBenchError
from ctbench.report import latex_escape, read_cells, table1, to_latex, write_reports

ROOT = Path(__file__).resolve().parents[1]
LITERATURE = ROOT / "config" / "literature.yaml"
RNG = np.random.default_rng(0)
CELLS = [("mnist", "0.1", m) for m in ("standard", "ibp", "sabr")] + [("cifar10", "2_255", m) for m in ("ibp", "taps")]


@pytest.fixture
def cell_files(tmp_path):
    """metrics.json for 5 cells × 3 seeds with random accuracies; returns (paths, {cell: {seed: values}})."""
    paths, values = [], {}
    for dataset, eps, method in CELLS:
        for seed in (2, 0, 1):  # unordered on purpose
            nat, cert, adv = sorted(RNG.uniform(0.2, 1.0, 3), reverse=True)
            cert = None if method == "standard" else cert
            path = tmp_path / "results" / dataset / eps / "cnn7" / method / f"seed{seed}" / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"nat_acc": nat, "cert_acc": cert, "adv_acc": adv, "extra": 1}))
            paths.append(path)
            values.setdefault((dataset, eps, method), {})[seed] = (nat, cert, adv)
    return paths, values


def test_table1_reports_the_first_seed_beside_the_literature(cell_files, tmp_path):
    paths, values = cell_files
    t1, stats = write_reports(paths, LITERATURE, tmp_path / "out")
    assert list(t1.method) == ["Standard", "IBP", "SABR", "IBP", "TAPS"]
    assert list(t1.eps) == ["0.1"] * 3 + ["2/255"] * 2
    for row, cell in zip(t1.itertuples(), CELLS, strict=True):
        nat, cert, adv = values[cell][0]
        assert row.seed == 0 and row.nat == pytest.approx(100 * nat) and row.adv == pytest.approx(100 * adv)
        assert (row.cert is None or np.isnan(row.cert)) if cert is None else row.cert == pytest.approx(100 * cert)
    ibp = t1.iloc[1]
    assert (ibp.nat_literature, ibp.nat_ctbench_paper, ibp.cert_literature, ibp.cert_ctbench_paper) == (
        98.84, 98.87, 97.95, 98.26)  # fmt: skip
    assert t1.iloc[0].nat_literature == 99.50 and t1.iloc[0].source == "/"
    on_disk = pd.read_csv(tmp_path / "out" / "table1.csv", dtype={"eps": str})
    assert list(on_disk.columns) == list(t1.columns) and len(on_disk) == 5
    assert (tmp_path / "out" / "table1.md").read_text().count("\n| ") == 6  # header + 5 rows

    assert table1(read_cells(paths), {}, seed=2).seed.tolist() == [2] * 5  # --seed picks another seed


def test_seed_statistics_are_mean_and_sample_std(cell_files, tmp_path):
    paths, values = cell_files
    _, stats = write_reports(paths, LITERATURE, tmp_path / "out")
    for row, cell in zip(stats.itertuples(), CELLS, strict=True):
        nat = np.array([values[cell][s][0] for s in (0, 1, 2)]) * 100
        assert row.n_seeds == 3
        assert row.nat_mean == pytest.approx(nat.mean()) and row.nat_std == pytest.approx(nat.std(ddof=1))
    assert pd.read_csv(tmp_path / "out" / "seeds.csv").shape[0] == 5


def test_latex_table_layout(cell_files, tmp_path):
    paths, _ = cell_files
    write_reports(paths, LITERATURE, tmp_path / "out")
    tex = (tmp_path / "out" / "table1.tex").read_text()
    body = [line for line in tex.splitlines() if line.endswith(r"\\") and not line.startswith("Dataset")]
    body = [line for line in body if "multicolumn" not in line]
    assert len(body) == 5 and all(line.count("&") == 10 for line in body)
    assert tex.count(r"\midrule") == 2  # one block per (dataset, eps)
    assert r"\begin{tabular}{lllrrrrrrrr}" in tex and tex.rstrip().endswith(r"\end{tabular}")
    assert "MNIST & $0.1$ & Standard & 99.50 & / &" in tex  # no certified accuracy for standard training
    assert "CIFAR-10 & $2/255$ & IBP & 66.84 & 52.85 & 67.49 & 55.99 & 56.10 &" in tex
    assert latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"
    odd = pd.DataFrame([{"dataset": "my_set", "eps": "0.1", "method": "new_method", **dict.fromkeys(
        ["nat_literature", "cert_literature", "nat_ctbench_paper", "cert_ctbench_paper", "adv_ctbench_paper",
         "nat", "cert", "adv"], None)}])  # fmt: skip
    assert r"my\_set & $0.1$ & new\_method & / & / & / & / & / & / & / & / \\" in to_latex(odd)


def test_bad_cell_paths_and_files_give_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "somewhere" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{}")
    with pytest.raises(CTBenchError, match="does not follow"):
        read_cells([bad])
    broken = tmp_path / "results" / "mnist" / "0.1" / "ibp" / "seed0" / "metrics.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    rc = run_cli(["report", str(broken), "--literature", str(LITERATURE), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read cell summary" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- the current configuration: manifest, †, reduced-scale notes, ablations ---------------------------------


def _cell_summary(root: Path, cell: dict, nat: float, cert, adv: float, fingerprint: str, **extra) -> Path:
    run = cell["method"] + (f"+{cell['variant']}" if cell["variant"] else "")
    cell_dir = root / "results" / cell["dataset"] / cell["eps"] / cell["model"] / run / f"seed{cell['seed']}"
    path = cell_dir / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cell": cell, "nat_acc": nat, "cert_acc": cert, "adv_acc": adv,
                                "fingerprints": {"summarize": fingerprint}, **extra}))
    return path


def _manifest(tmp_path: Path, entries: list[tuple[dict, str, bool, str]]) -> Path:
    path = tmp_path / "cells.json"
    path.write_text(json.dumps({"format": "ctbench-grid/1", "cells": [
        {"cell": c, "table1": t1, "changes": ch, "fingerprints": {"summarize": fp}} for c, fp, t1, ch in entries]}))
    return path


def _cell(method, seed=0, model="cnn7", variant="", dataset="mnist", eps="0.3"):
    return {"dataset": dataset, "eps": eps, "model": model, "method": method, "variant": variant, "seed": seed}


def test_report_refuses_cells_made_under_another_configuration(tmp_path, capsys):
    a, b = _cell("ibp"), _cell("sabr")
    paths = [_cell_summary(tmp_path, a, 0.9, 0.8, 0.85, "fp-a"), _cell_summary(tmp_path, b, 0.9, 0.8, 0.85, "old-b")]
    manifest = _manifest(tmp_path, [(a, "fp-a", True, ""), (b, "new-b", True, "")])
    rc = run_cli(["report", *map(str, paths), "--manifest", str(manifest), "--literature", str(LITERATURE),
                  "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "1 cell summaries do not match the current configuration" in err
    assert "mnist/0.3/cnn7/sabr/seed0" in err and "old-b" in err and "new-b" in err and "/ibp/" not in err
    assert not (tmp_path / "out").exists()
    # a summary of a cell the current grid does not have is refused too
    other = _cell_summary(tmp_path, _cell("taps"), 0.9, 0.8, 0.85, "fp-t")
    manifest = _manifest(tmp_path, [(a, "fp-a", True, "")])
    with pytest.raises(CTBenchError, match="taps/seed0 \\(not a cell of the current configuration\\)"):
        write_reports([paths[0], other], LITERATURE, tmp_path / "out", manifest=manifest)
    # all current: written
    t1, _ = write_reports([paths[0]], LITERATURE, tmp_path / "out", manifest=manifest)
    assert list(t1.method) == ["IBP"]


def test_dagger_and_reduced_scale_notes(tmp_path):
    from ctbench.config import load_hparams

    pgd = _cell("pgd")
    paths = [_cell_summary(tmp_path, pgd, 0.99, 0.0, 0.93, "p", n=10000, complete_limit=10, epochs=70),
             _cell_summary(tmp_path, _cell("ibp", dataset="mnist_mini", model="cnn_small"), 0.9, 0.8, 0.85, "i",
                           n=500, epochs=5, train_subset=2000)]
    t1, _ = write_reports(paths, LITERATURE, tmp_path / "out", hparams_path=ROOT / "config" / "hparams.yaml")
    pgd_row, ibp_row = t1.iloc[0], t1.iloc[1]
    assert pgd_row.cert_dagger == "complete verification on the first 10 samples only" and pgd_row.note == ""
    assert ibp_row.cert_dagger == ""
    assert ibp_row.note == ("reduced scale: mnist_mini (6,000/1,000-image MNIST subset), cnn_small (paper: CNN7), "
                            f"5 epochs (paper: {load_hparams()['settings']['mnist_0.3']['epochs']}), "
                            "first 2000 training images, 500 test samples")
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "| 0.00 † |" in md and "† complete verification on the first 10 samples only" in md
    assert "[1] reduced scale: mnist_mini" in md
    assert r"0.00$^\dagger$" in (tmp_path / "out" / "table1.tex").read_text()


def test_ablations_put_variants_and_extra_cells_beside_their_base_cells(tmp_path):
    base = [_cell("ibp", seed=s) for s in (0, 1)]
    l1 = [_cell("ibp", seed=s, variant="l1_1e-06") for s in (0, 1)]
    cnn5 = _cell("ibp", model="cnn5")
    paths = [_cell_summary(tmp_path, c, nat, 0.5, 0.6, f"f{i}") for i, (c, nat) in
             enumerate([(base[0], 0.90), (base[1], 0.92), (l1[0], 0.80), (l1[1], 0.84), (cnn5, 0.70)])]
    manifest = _manifest(tmp_path, [(c, f"f{i}", i < 2, ["", "", "l1=1e-06", "l1=1e-06", "model=cnn5"][i])
                                    for i, c in enumerate([*base, *l1, cnn5])])
    t1, stats = write_reports(paths, LITERATURE, tmp_path / "out", manifest=manifest)
    assert len(t1) == 1 and stats.n_seeds.tolist() == [2]
    abl = pd.read_csv(tmp_path / "out" / "ablations.csv")
    assert abl.variant.fillna("").tolist() == ["l1_1e-06", ""] and abl.changes.tolist() == ["l1=1e-06", "model=cnn5"]
    assert abl.nat_mean.tolist() == pytest.approx([82.0, 70.0], abs=0.01)
    assert abl.base_nat.tolist() == pytest.approx([91.0, 91.0], abs=0.01) and abl.base_model.tolist() == ["cnn7"] * 2
    assert "l1=1e-06" in (tmp_path / "out" / "ablations.md").read_text()


def test_tables_state_their_sample_count_and_data_source(tmp_path):
    """table1.md and ablations.md say how many samples each cell's accuracies rest on and from which split
    (issue 28), as each metrics.json records them — a range where cells differ, 'not recorded' where absent."""
    paths = [_cell_summary(tmp_path, _cell("ibp", seed=0), 0.9, 0.8, 0.85, "a", n=1000, split="test"),
             _cell_summary(tmp_path, _cell("sabr", seed=0), 0.9, 0.8, 0.85, "b", n=500, split="test"),
             _cell_summary(tmp_path, _cell("ibp", dataset="mnist_mini", model="cnn_small"), 0.9, 0.8, 0.85, "c"),
             _cell_summary(tmp_path, _cell("ibp", seed=0, variant="l1_1e-06"), 0.8, 0.7, 0.75, "d", n=200,
                           split="test")]
    manifest = _manifest(tmp_path, [(_cell("ibp", seed=0), "a", True, ""), (_cell("sabr", seed=0), "b", True, ""),
                                    (_cell("ibp", dataset="mnist_mini", model="cnn_small"), "c", True, ""),
                                    (_cell("ibp", seed=0, variant="l1_1e-06"), "d", False, "l1=1e-06")])
    write_reports(paths, LITERATURE, tmp_path / "out", manifest=manifest)
    md = (tmp_path / "out" / "table1.md").read_text()
    assert ("Samples: n = 500–1,000 samples per cell (MNIST test split); n not recorded "
            "(mnist_mini (shipped MNIST subset), split not recorded); nat, cert and adv of the same samples.") in md
    abl = (tmp_path / "out" / "ablations.md").read_text()
    assert "Samples: n = 200 samples per cell (MNIST test split)" in abl
    # and the CSVs the HTML report shows carry them as columns
    t1 = pd.read_csv(tmp_path / "out" / "table1.csv", dtype={"eps": str})
    assert t1.n.tolist()[:2] == [1000, 500] and t1.split.tolist()[:2] == ["test", "test"]
    seeds = pd.read_csv(tmp_path / "out" / "seeds.csv", dtype={"n_samples": str})
    assert sorted(seeds.n_samples.fillna("").tolist()) == ["", "1000", "500"]
    assert pd.read_csv(tmp_path / "out" / "ablations.csv").n_samples.tolist() == [200]
