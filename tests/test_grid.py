"""The grid (ctbench.grid): cells, one resolution per cell, stage fingerprints, config errors; the cell file
the train job trains from; file permissions; the SLURM schedulability check (ctbench.slurm)."""

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from ctbench.cli import main
from ctbench.errors import CTBenchError
from ctbench.grid import Grid, load_yaml
from ctbench.grid.cells import Cell
from ctbench.slurm import Node, Request, parse_gres_gpus, parse_sinfo, unschedulable

ROOT = Path(__file__).resolve().parents[1]


def grid(name="ci", **change):
    cfg = load_yaml(ROOT / "config" / f"{name}.yaml")
    cfg.update(change)
    cwd = os.getcwd()
    os.chdir(ROOT)  # hparams/literature paths are relative to the workflow's directory
    try:
        return Grid(cfg)
    finally:
        os.chdir(cwd)


def test_paper_grid_cells():
    g = grid("config")
    assert len(g.table1_cells()) == 5 * 9 * 3 and len(g.cells) == 135 + 3 + 16 + 15  # Table 18, Table 3, Fig. 7
    cnn5 = [c for c in g.cells if c.model == "cnn5"]
    assert {(c.dataset, c.eps, c.method, c.seed) for c in cnn5} == {("mnist", "0.3", m, 0) for m in
                                                                   ("ibp", "sabr", "mtl_ibp")}
    sweep = sorted({c.variant for c in g.cells if c.variant.startswith("l1_")})
    assert sweep == ["l1_0.0", "l1_1e-06", "l1_2e-06", "l1_5e-06"]
    c = g.cell("cifar10", "2_255", "cnn7", "ibp+l1_5e-06", 0)
    assert c.dir == "results/cifar10/2_255/cnn7/ibp+l1_5e-06/seed0" and g.train_config(c)["l1"] == 5e-6
    assert g.train_config(g.cell("cifar10", "2_255", "cnn5" if False else "cnn7", "ibp", 0))["model"] == "cnn7"
    assert g.certify_settings(g.cell("mnist", "0.1", "cnn7", "pgd", 0))["complete_limit"] == 10
    assert g.certify_settings(g.cell("mnist", "0.1", "cnn7", "ibp", 0))["complete_limit"] is None
    assert set(g.table1_cells()).isdisjoint(g.ablation_cells())
    with pytest.raises(CTBenchError, match="no cell"):
        g.cell("mnist", "0.1", "cnn5", "ibp", 0)


def _fps(g):
    return {c: g.fingerprints(c) for c in g.cells}


def test_fingerprints_change_exactly_downstream_of_a_change():
    base = grid()
    before = _fps(base)
    assert len({fp["train"] for fp in before.values()}) == len(before)  # every cell its own run
    # one cell's hyperparameter: all stages of that cell (all seeds), nothing else
    cfg = load_yaml(ROOT / "config/ci.yaml")
    over = copy.deepcopy(cfg["overrides"])
    over["mnist_0.1"] = {"standard": {"lr": 1e-3}}
    after = _fps(grid(overrides=over))
    for c, fp in after.items():
        changed = {s for s in fp if fp[s] != before[c][s]}
        assert changed == (set(fp) if c.method == "standard" and not c.variant else set()), (c, changed)
    # attack settings: attack and summarize everywhere, nothing upstream
    after = _fps(grid(attack={"steps": 11, "restarts": 1, "autoattack_methods": []}))
    assert all({s for s in fp if fp[s] != before[c][s]} == {"attack", "summarize"} for c, fp in after.items())
    # certification settings: certify, attack (it reads the certificates), summarize
    after = _fps(grid(certify={**cfg["certify"], "timeout": 6}))
    assert all({s for s in fp if fp[s] != before[c][s]} == {"certify", "attack", "summarize"}
               for c, fp in after.items())
    # a stage version
    after = _fps(grid(versions={**cfg["versions"], "select": 2}))
    assert all({s for s in fp if fp[s] != before[c][s]} == {"select", "certify", "attack", "summarize"}
               for c, fp in after.items())
    # a new variant adds cells and changes no existing cell's fingerprints
    after = _fps(grid(variants={"lr": {"set": {"lr": 1e-3}, "methods": ["ibp"]}}))
    assert {c for c in after if c not in before} == {Cell("mnist_mini", "0.1", "cnn_small", "ibp", "lr", s)
                                                     for s in (0, 1)}
    assert all(after[c] == before[c] for c in before)
    # run-length limits are part of the training run
    after = _fps(grid(train={"subset": 1000, "max_steps": None}))
    assert all(after[c]["train"] != before[c]["train"] for c in before)


@pytest.mark.parametrize(("change", "message"), [
    ({"settings": [{"dataset": "mnist", "eps": "0.2"}]}, "settings.0: no hyperparameter setting"),
    ({"overrides": {"mnist_0.1": {"ibp": {"model": "cnn7"}}}}, "the architecture is an axis of the grid"),
    ({"variants": {"a+b": {"set": {"l1": 0.1}}}}, "variants: 'a+b' does not match"),
    ({"variants": {"v": {"set": {"l1": 0.1}, "settings": ["cifar10_2_255"]}}},
     "'cifar10_2_255' is not a setting of this grid"),
    ({"sweeps": {"l1": {"key": "l1", "values": [-1.0]}}}, "l1: -1.0 is less than the minimum of 0"),
    ({"sweeps": {"l1": {"key": "l12", "values": [1.0]}}}, "unknown hyperparameter; did you mean 'l1'?"),
    ({"extra_cells": [{"models": ["cnn5"], "method": ["ibp"]}]}, "extra_cells.0.method: unknown key"),
])
def test_config_errors_are_one_line(change, message):
    with pytest.raises(CTBenchError, match="^config: ") as e:
        grid(**change)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_yaml_errors_name_line_and_column(tmp_path):
    (tmp_path / "c.yaml").write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(CTBenchError, match=r"c\.yaml:3:2: "):
        load_yaml(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("- 1\n")
    with pytest.raises(CTBenchError, match="expected a mapping"):
        load_yaml(tmp_path / "d.yaml")


def test_cell_file_is_what_train_trains(tmp_path, capsys):
    g = grid()
    c = g.cell("mnist_mini", "0.1", "cnn_small", "ibp+l1_1e-05", 0)
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(g.cell_file(c)))
    assert main(["train", "--cell", str(path), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(g.train_config(c)))
    assert printed["l1"] == 1e-5 and printed["variant"] == "l1_1e-05" and printed["model"] == "cnn_small"
    # flags that would change what the cell says are refused
    assert main(["train", "--cell", str(path), "--epochs", "3", "--out", str(tmp_path / "o")]) == 2
    assert "--cell is the complete configuration: drop --epochs" in capsys.readouterr().err
    # a hand-edited cell file no longer matches its fingerprint
    edited = json.loads(path.read_text())
    edited["config"]["l1"] = 0.5
    path.write_text(json.dumps(edited))
    assert main(["train", "--cell", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "does not match its content" in capsys.readouterr().err
    path.write_text(json.dumps({"format": edited["format"], "config": {}}))  # truncated by hand
    assert main(["train", "--cell", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a complete ctbench cell file" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_atomic_writes_follow_the_umask(tmp_path):
    from ctbench.io import write_text

    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


SINFO = """cpu*|2|7000|(null)
gpu|2|7000|gpu:2
gpu|16|128000|gpu:a100:4(S:0-1)
"""


def test_slurm_check_names_requests_no_node_can_satisfy():
    partitions, default = parse_sinfo(SINFO)
    assert default == "cpu" and partitions["gpu"][1] == Node(16, 128000, 4)
    assert parse_gres_gpus("gpu:1,shard:4") == 1 and parse_gres_gpus("(null)") == 0
    ok = [Request("train", "gpu", 8, 16000, 1), Request("select", None, 1, 4000, 0)]
    assert unschedulable(ok, partitions, default) == []
    bad = [Request("train", "gpu", 32, 16000, 1)] * 3 + [Request("select", None, 4, 4000, 0),
                                                        Request("x", "big", 1, 1, 0)]
    problems = unschedulable(bad, partitions, default)
    assert problems == [
        "rule select (1 job) asks partition cpu for cpus_per_task=4 (largest node: 2 CPUs)",
        "rule train (3 jobs) asks partition gpu for cpus_per_task=32 (largest node: 16 CPUs)",
        "rule x (1 job) asks for partition 'big', which has no nodes here (partitions: cpu, gpu)",
    ]
    # resources that exist only on different nodes do not fit one job
    split = {"p": [Node(16, 1000, 0), Node(2, 64000, 0)]}
    assert "no single node has all" in unschedulable([Request("r", "p", 8, 32000, 0)], split, "p")[0]


def _schema_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, sub in (schema.get("properties") or {}).items():
        key = f"{prefix}{name}"
        keys.append(key)
        if sub.get("type") == "object" and "properties" in sub:
            keys += _schema_keys(sub, f"{key}.")
    return keys


def test_config_readme_documents_every_key_and_its_examples_are_valid():
    import re

    text = (ROOT / "config" / "README.md").read_text()
    schema = load_yaml(ROOT / "ctbench" / "schemas" / "config.schema.yaml")
    missing = [k for k in _schema_keys(schema) if f"`{k}`" not in text and f"`{k}." not in text]
    assert missing == [], f"config/README.md does not document {missing}"
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        g = grid("config", **yaml.safe_load(block))
        assert any(c.variant or c.model != "cnn7" for c in g.cells)


def test_schema_names_match_the_registries():
    """The config schema lists names for did-you-mean messages; they must be the registries' names."""
    from ctbench import analysis
    from ctbench.architectures import PLANS
    from ctbench.certify.stages import CERTIFY_STAGES
    from ctbench.methods import method_names

    schema = load_yaml(ROOT / "ctbench" / "schemas" / "config.schema.yaml")
    props = schema["properties"]
    assert set(props["models"]["items"]["enum"]) == set(PLANS)
    assert set(props["methods"]["items"]["enum"]) == set(method_names())
    assert set(props["certify"]["properties"]["stages"]["items"]["enum"]) == set(CERTIFY_STAGES)
    a = props["analysis"]["properties"]
    assert tuple(a["model"]["items"]["enum"]) == analysis.MODEL_ANALYSES
    assert set(a["grid"]["items"]["enum"]) == set(analysis.GRID_ANALYSES) - {"verifier_agreement"}
    assert set(a["verifiers"]["properties"]["stages"]["items"]["enum"]) == {
        s for s in CERTIFY_STAGES if s != "PGD"}


def test_grid_cli_checks_and_lists(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["grid", "check", "config/config.yaml"]) == 0
    assert "169 cells (135 in Table 1, 34 ablation cells)" in capsys.readouterr().out
    assert main(["grid", "cells", "config/ci.yaml"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[-1].startswith("results/mnist_mini/0.1/cnn_small/ibp+l1_1e-05/seed0  ablation")
    (tmp_path / "bad.yaml").write_text((ROOT / "config/ci.yaml").read_text().replace("seeds: [0, 1]", "seeds: [0, 1"))
    assert main(["grid", "check", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"ctbench: error: {tmp_path / 'bad.yaml'}:")


def test_mnist_small_is_the_papers_mnist_schedule_with_cnn_small():
    """config/mnist_small.yaml: all nine methods at MNIST 0.1 and 0.3 on real MNIST, the paper's schedule and
    Tables 6-7 values unchanged (only the architecture differs) but for TAPS's classifier_size at 0.1: Table 6's 3
    is CNN7's last three of six ReLU layers, every ReLU layer of cnn_small (which TAPS warns about)."""
    from ctbench.config import resolve

    g = grid("mnist_small")
    cells = g.table1_cells()
    assert len(cells) == 18 and {c.dataset for c in cells} == {"mnist"} and {c.model for c in cells} == {"cnn_small"}
    assert {c.method for c in cells} == {"standard", "pgd", "edac", "ibp", "crown_ibp", "sabr", "taps", "staps",
                                         "mtl_ibp"}
    for c in cells:
        cfg = g.train_config(c)
        paper = resolve(c.setting, c.method, seed=c.seed)
        assert cfg["epochs"] == 70 and cfg["lr_milestones"] == [50, 60] and cfg["eps_end_epoch"] == 20
        ignored = {"model", "dataset", "variant"}
        if (c.eps, c.method) == ("0.1", "taps"):
            assert (cfg["classifier_size"], paper["classifier_size"]) == (1, 3)
            ignored.add("classifier_size")
        assert {k: v for k, v in cfg.items() if k not in ignored} == {
            k: v for k, v in paper.items() if k not in ignored}


def test_mnist_small_quarter_is_mnist_small_on_a_quarter_schedule():
    """config/mnist_small_quarter.yaml (the CPU run recorded in benchmarks/README.md): the cells of
    config/mnist_small.yaml it keeps, with every schedule scaled by 0.25 together and nothing else changed."""
    g, full = grid("mnist_small_quarter"), grid("mnist_small")
    cells = g.table1_cells()
    certified = ("ibp", "crown_ibp", "sabr", "taps", "staps", "mtl_ibp")
    assert {(c.eps, c.method) for c in cells} == {(e, m) for e in ("0.1", "0.3") for m in certified}
    assert sorted((c.eps, c.method) for c in g.ablation_cells()) == [
        ("0.1", "pgd"), ("0.3", "edac"), ("0.3", "pgd"), ("0.3", "standard")]
    by_key = {(c.eps, c.method): c for c in full.table1_cells()}
    for c in cells + g.ablation_cells():
        cfg, ref = g.train_config(c), full.train_config(by_key[(c.eps, c.method)])
        assert (cfg["epochs"], cfg["eps_end_epoch"], cfg["lr_milestones"]) == (18, 5, [12, 15])
        assert cfg["schedule_scale"] == 0.25 and ref["schedule_scale"] is None
        changed = {k for k in cfg if cfg[k] != ref[k]}
        assert changed <= {"epochs", "eps_end_epoch", "lr_milestones", "swa_start", "schedule_scale"}, changed
