"""One analysis protocol (ctbench.analysis.protocol): every registered analysis declares NAME, INPUTS, run and
one figure signature; the workflow takes each analysis' inputs from its declaration and never branches on an
analysis' name; the seed statistics are one computation (report and the analysis ``seeds``)."""

import argparse
import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest

import ctbench.analysis as A
from ctbench.analysis import protocol as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(A.ANALYSES))
def test_every_analysis_declares_the_protocol(name):
    module = A.load(name)
    decl = P.declaration(module)  # checks the form of INPUTS, FIGURE_INPUTS and ARGS
    assert decl["name"] == name
    assert decl["inputs"], f"{name} declares no input"
    for attr in ("add_arguments", "run", "figure"):
        assert callable(getattr(module, attr, None)), f"{name} has no {attr}"
    assert list(inspect.signature(module.figure).parameters) == ["tables", "out_stem"]
    for old in ("STEM", "USES_METRICS", "KIND"):
        assert not hasattr(module, old), f"{name} still defines {old}"
    kind = A.get(name).kind
    sets = set(P.cell_sets_read(decl["inputs"]))
    if kind == "model":
        assert sets == {"cell"}, f"a per-model analysis reads its own cell only: {name} reads {sets}"
        assert hasattr(module, "FIGURE_INPUTS")
        assert "cell" not in P.cell_sets_read(decl["figure_inputs"])
    else:
        assert "cell" not in sets and not decl["figure_inputs"]
    # every declared input and argument is an option the analysis takes
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    options = set(parser._option_string_actions)
    for option in decl["inputs"]:
        assert f"--{option}" in options, f"{name} declares input --{option} but does not take it"
    for arg in decl["args"]:
        assert arg.split()[0] in options, f"{name} declares {arg!r} but does not take it"
    for option in decl["settings"].values():
        assert option in options, f"{name} declares the setting option {option} but does not take it"
    assert bool(decl["settings"]) == (kind == "model")


def test_no_module_keeps_a_constant_nothing_reads():
    for path in (ROOT / "ctbench" / "analysis").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^(STEM|KIND|USES_METRICS) = ", text, re.M), path


def test_the_workflow_never_branches_on_an_analysis_name():
    """The analyses' inputs and options come from their declarations: no rule file names an analysis."""
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        for name in A.ANALYSES:
            found = re.findall(rf"""["']{name}["']""", text)
            assert not found, f"{path.relative_to(ROOT)} names the analysis {name!r}"
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "analysis_protocol.input_files" in common and "analysis_protocol.arguments" in common


CELL_SETS = {"all": ["r/a", "r/b"], "table1": ["r/a"], "base": ["r/a"], "sweep": [], "verifier": ["r/a"]}
VALUES = {"verifier": ["IBP", "CROWN-IBP"], "sweep": ["lambda=eps_shrink", "odd name=x"]}


def test_input_files_follow_the_declaration():
    inputs = {"certify": ("all", "certify.h5"), "benchmarks": ("table1", ("benchmarks/train.tsv", "b/attack.tsv")),
              "verifiers": ("verifier", "verifiers/{verifier}.h5"), "literature": "config:literature"}
    files = P.input_files(inputs, CELL_SETS, VALUES, {"literature": "config/literature.yaml"})
    assert list(files) == list(inputs)
    assert files == {"certify": ["r/a/certify.h5", "r/b/certify.h5"],
                     "benchmarks": ["r/a/benchmarks/train.tsv", "r/a/b/attack.tsv"],
                     "verifiers": ["r/a/verifiers/IBP.h5", "r/a/verifiers/CROWN-IBP.h5"],
                     "literature": "config/literature.yaml"}
    line = P.arguments(files, ("--fail-on-alarm", "--sweep {sweep}"), VALUES)
    assert line == ("--certify r/a/certify.h5 r/b/certify.h5 --benchmarks r/a/benchmarks/train.tsv r/a/b/attack.tsv"
                    " --verifiers r/a/verifiers/IBP.h5 r/a/verifiers/CROWN-IBP.h5 --literature config/literature.yaml"
                    " --fail-on-alarm --sweep lambda=eps_shrink --sweep 'odd name=x'")
    assert P.arguments({}) == ""


@pytest.mark.parametrize("config", ["ci", "demo", "config"])
def test_every_grid_setting_of_a_model_analysis_is_applied_from_its_settings_file(config, tmp_path):
    """The job takes every setting of its stage file (one is left over: refused), through the option's type."""
    import argparse
    import json

    from ctbench.analysis._model_cli import apply_settings
    from ctbench.grid import Grid, load_yaml

    grid = Grid(load_yaml(ROOT / "config" / f"{config}.yaml"))
    cell = grid.table1_cells()[0]
    for name in A.MODEL_ANALYSES:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(grid.stage_file(cell, f"analysis_{name}")))
        parser = argparse.ArgumentParser()
        A.load(name).add_arguments(parser)
        args = parser.parse_args(["--model", "m.pt", "--out", "o.parquet", "--settings", str(path)])
        apply_settings(parser, args, A.load(name).SETTINGS, f"analysis_{name}")
        settings = grid.analysis_settings(cell, name)
        assert args.eps == settings["eps"] and args.seed == settings["seed"] and args.n == settings["n"]
        assert args.fingerprint == grid.analysis_fingerprint(cell, name)
        assert args.expect == {"select": grid.fingerprints(cell)["select"]}


def test_an_analysis_runs_only_with_cells_to_read():
    assert P.runs({"metrics": ("table1", "metrics.json"), "literature": "config:literature"}, CELL_SETS)
    assert not P.runs({"metrics": ("sweep", "metrics.json")}, CELL_SETS)


@pytest.mark.parametrize("inputs, args", [
    ({"x": ("nowhere", "a.h5")}, ()),
    ({"x": "literature"}, ()),
    ({"x": ("all", "{unknown}.h5")}, ()),
    ({"x": ("all", "a.h5")}, ("--opt {unknown}",)),
    ({"x": ["all", "a.h5"]}, ()),
])
def test_a_malformed_declaration_is_refused(inputs, args):
    with pytest.raises(ValueError):
        P.check("bad", inputs, args)


def _metrics(tmp_path, cells):
    paths = []
    for k, (dataset, eps, method, seed, nat, cert, adv) in enumerate(cells):
        p = tmp_path / f"{k}" / "metrics.json"
        p.parent.mkdir()
        p.write_text(json.dumps({"cell": {"dataset": dataset, "eps": eps, "model": "cnn7", "method": method,
                                          "variant": "", "seed": seed},
                                 "nat_acc": nat, "cert_acc": cert, "adv_acc": adv, "n": 1000, "split": "test"}))
        paths.append(p)
    return paths


def test_report_and_the_seeds_analysis_give_the_same_statistics(tmp_path):
    from ctbench import report
    from ctbench.analysis import cells as C
    from ctbench.analysis import seeds

    paths = _metrics(tmp_path, [
        ("mnist", "0.1", "ibp", 0, 0.9912, 0.9731, 0.9802), ("mnist", "0.1", "ibp", 1, 0.9901, 0.9744, 0.9811),
        ("mnist", "0.1", "ibp", 2, 0.9923, 0.9702, 0.9799), ("mnist", "0.1", "standard", 0, 0.9931, None, 0.0),
        ("mnist", "0.1", "standard", 1, 0.9929, None, 0.01), ("cifar10", "2_255", "sabr", 0, 0.79, 0.62, 0.65),
    ])
    ours = report.seed_statistics(report.read_cells(paths))
    analysis = seeds.seed_table(C.read_metrics(paths), C.load_literature(ROOT / "config" / "literature.yaml"))
    columns = [f"{m}_{s}" for m in ("nat", "cert", "adv") for s in ("mean", "std")] + ["n_seeds"]
    key = ["dataset", "model", "n_seeds"]
    a = ours.sort_values(key).reset_index(drop=True)[columns]
    b = analysis.sort_values(key).reset_index(drop=True)[columns]
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert b["cert_mean"].isna().tolist() == [False, True, False]  # standard training: no certified accuracy


def test_figure_of_a_grid_analysis_takes_its_table_and_note(tmp_path):
    from ctbench.analysis import seeds
    from ctbench.analysis.gridtables import one_table, with_note

    df = pd.DataFrame({"a": [1.0]})
    assert one_table([with_note(df, "Samples: n = 3.")]) == (df, "Samples: n = 3.")
    assert seeds.figure.__doc__


def test_ctbench_figure_refuses_a_grid_analysis(tmp_path, capsys):
    from ctbench.cli import main

    assert main(["figure", "seeds", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "x")]) == 2
    assert "ctbench analyze seeds" in capsys.readouterr().err
