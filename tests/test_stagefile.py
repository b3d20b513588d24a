"""Stage settings files (ctbench/stagefile.py, issue 27): the grid writes what each stage job runs, the job
checks the file, takes every setting, and records the fingerprint of what it took."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctbench import stagefile
from ctbench.errors import CTBenchError
from ctbench.fingerprint import stage_fingerprint

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"stages": ["IBP", "PGD"], "timeout": 5, "n": 10, "batch": 4, "abcrown_config": None,
            "complete_limit": None, "falsifier": {"loss": "margin", "targets": 3, "steps": 20, "restarts": 1}}


def _write(tmp_path, data, name="certify.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _file(**change):
    args = {"stage": "certify", "cell": {"dataset": "mnist"}, "eps": "0.1", "version": 1,
            "parents": {"select": "abc"}, "settings": SETTINGS, **change}
    return stagefile.make(**args)


def _take_all(sf, keys=("stages", "timeout", "n", "batch", "abcrown_config", "complete_limit", "falsifier")):
    return [sf.take(k) for k in keys]


def test_a_file_read_back_gives_its_settings_and_the_fingerprint_of_what_was_taken(tmp_path):
    sf = stagefile.read(_write(tmp_path, _file()), "certify")
    assert (sf.stage, sf.eps, sf.parents) == ("certify", "0.1", {"select": "abc"})
    assert sf.take("falsifier.steps") == 20  # dotted keys reach into nested settings
    _take_all(sf)
    assert sf.applied() == stage_fingerprint("certify", 1, {"select": "abc"}, SETTINGS) == sf.fingerprint


@pytest.mark.parametrize("edit", [
    lambda d: d["settings"].update(timeout=50),       # a setting
    lambda d: d["settings"]["falsifier"].update(steps=1),
    lambda d: d.update(eps="0.3"),                    # what the settings do not fingerprint is in the checksum
    lambda d: d["parents"].update(select="other"),
    lambda d: d.update(fingerprint=stage_fingerprint("certify", 1, {"select": "abc"}, {})),
    lambda d: d.pop("checksum"),
])
def test_a_hand_edited_file_is_refused(tmp_path, edit):
    data = _file()
    edit(data)
    with pytest.raises(CTBenchError, match="changed after the workflow wrote it"):
        stagefile.read(_write(tmp_path, data), "certify")


def test_a_file_for_another_stage_or_not_a_stage_file_is_refused(tmp_path):
    with pytest.raises(CTBenchError, match="settings of stage 'certify', not of this job"):
        stagefile.read(_write(tmp_path, _file()), "attack")
    verifier = stagefile.read(_write(tmp_path, _file(stage="verifier_IBP")), ("certify", "verifier_"))
    assert verifier.stage == "verifier_IBP"
    with pytest.raises(CTBenchError, match="not a stage settings file"):
        stagefile.read(_write(tmp_path, {"format": "ctbench-cell/1"}), "certify")
    with pytest.raises(CTBenchError, match="not a readable"):
        (tmp_path / "broken.json").write_text("{")
        stagefile.read(tmp_path / "broken.json", "certify")
    with pytest.raises(CTBenchError, match="settings file not found"):
        stagefile.read(tmp_path / "missing.json", "certify")


def test_a_setting_the_job_does_not_take_is_refused_not_defaulted(tmp_path):
    """A key added to the schema (and so to the grid's settings) but not to the job: refused by name."""
    sf = stagefile.read(_write(tmp_path, _file(settings={**SETTINGS, "new_knob": 3})), "certify")
    _take_all(sf)
    with pytest.raises(CTBenchError, match="does not apply the certify setting.s. new_knob"):
        sf.applied()
    sf = stagefile.read(_write(tmp_path, _file()), "certify")
    _take_all(sf, keys=("stages", "timeout", "n", "batch", "abcrown_config", "complete_limit", "falsifier.steps"))
    with pytest.raises(CTBenchError, match="falsifier.loss, falsifier.restarts, falsifier.targets"):
        sf.applied()
    with pytest.raises(CTBenchError, match="have no 'falsifier.momentum'"):
        sf.take("falsifier.momentum")


def test_the_grid_writes_a_file_for_every_stage_job_and_its_fingerprint_is_the_grids():
    from ctbench.grid import Grid, load_yaml

    grid = Grid(load_yaml(ROOT / "config" / "ci.yaml"))
    cell = grid.table1_cells()[0]
    fp = grid.fingerprints(cell)
    for stage in ("select", "certify", "attack", "summarize"):
        assert grid.stage_file(cell, stage)["fingerprint"] == fp[stage]
    assert grid.stage_file(cell, "analysis_tightness")["fingerprint"] == grid.analysis_fingerprint(cell, "tightness")
    assert grid.stage_file(cell, "verifier_IBP")["fingerprint"] == grid.verifier_fingerprint(cell, "IBP")
    assert grid.stage_file(cell, "certify")["settings"]["timeout"] == 5  # config/ci.yaml's, not the default
    with pytest.raises(CTBenchError, match="no stage 'train_more'"):
        grid.stage_file(cell, "train_more")


@pytest.mark.parametrize("config", ["ci", "demo", "config", "mnist_small_quarter"])
def test_the_certify_and_attack_commands_take_every_setting_the_grid_resolves(config, tmp_path):
    """Every key of the config's certify/attack sections (schema defaults included) reaches the job."""
    from ctbench.commands import attack, certify
    from ctbench.grid import Grid, load_yaml

    grid = Grid(load_yaml(ROOT / "config" / f"{config}.yaml"))
    for cell in grid.cells[:3]:
        for stage, command in (("certify", certify), ("attack", attack)):
            sf = stagefile.read(_write(tmp_path, grid.stage_file(cell, stage)), stage)
            kwargs = command.applied(sf)
            assert sf.applied() == grid.fingerprints(cell)[stage]
        assert kwargs["steps"] == grid.attack_settings(cell)["steps"]


def test_the_flags_by_hand_build_the_same_settings_as_the_grid():
    """`ctbench certify` options → the settings the grid would write for the same values."""
    from ctbench.cli import build_parser
    from ctbench.commands import certify
    from ctbench.grid import Grid, load_yaml

    grid = Grid(load_yaml(ROOT / "config" / "ci.yaml"))
    cell = grid.table1_cells()[0]
    args = build_parser().parse_args(["certify", "--model", "m.pt", "--eps", "0.1", "--stages", "IBP,CROWN-IBP,PGD",
                                      "--timeout", "5", "--n", "100", "--batch", "100"])
    assert certify.settings_of_flags(args) == grid.certify_settings(cell)


def _ctbench(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("command", ["certify", "attack", "select", "summarize", "analyze"])
def test_the_commands_refuse_a_hand_edited_settings_file_in_one_line(command, tmp_path):
    from ctbench.grid import Grid, load_yaml

    grid = Grid(load_yaml(ROOT / "config" / "ci.yaml"))
    cell = grid.table1_cells()[0]
    stage = "analysis_utilization" if command == "analyze" else command
    data = grid.stage_file(cell, stage)
    key = next(iter(data["settings"]), None)
    if key:
        data["settings"][key] = 7
    else:
        data["parents"] = {k: "0" * 24 for k in data["parents"]}
    path = _write(tmp_path, data)
    args = {"certify": ["certify", "--model", "m.pt", "--settings", str(path), "--out", "c.h5"],
            "attack": ["attack", "--model", "m.pt", "--settings", str(path), "--out", "a.h5"],
            "select": ["select", "candidates.pt", "--settings", str(path), "--out", "model.pt"],
            "summarize": ["summarize", "--certify", "c.h5", "--settings", str(path), "--out", "s.parquet"],
            "analyze": ["analyze", "utilization", "--model", "m.pt", "--settings", str(path), "--out", "u.parquet"],
            }[command]
    r = _ctbench(*args, cwd=tmp_path)
    assert r.returncode != 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "changed after the workflow wrote it" in lines[0], r.stderr


def test_settings_options_beside_a_settings_file_are_refused(tmp_path):
    from ctbench.grid import Grid, load_yaml

    grid = Grid(load_yaml(ROOT / "config" / "ci.yaml"))
    cell = grid.table1_cells()[0]
    path = _write(tmp_path, grid.stage_file(cell, "certify"))
    r = _ctbench("certify", "--model", "m.pt", "--settings", str(path), "--timeout", "3", "--out", "c.h5",
                 cwd=tmp_path)
    assert r.returncode != 0 and "--timeout and --settings" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    path = _write(tmp_path, grid.stage_file(cell, "analysis_tightness"), "t.json")
    r = _ctbench("analyze", "tightness", "--model", "m.pt", "--settings", str(path), "--seed", "3",
                 "--out", "t.parquet", cwd=tmp_path)
    assert r.returncode != 0 and "--seed and --settings" in r.stderr, r.stderr
    r = _ctbench("certify", "--model", "m.pt", "--out", "c.h5", cwd=tmp_path)
    assert r.returncode != 0 and "--eps is required" in r.stderr, r.stderr


def test_intact_tells_a_written_file_from_an_edited_one():
    data = _file()
    assert stagefile.intact(data)
    assert not stagefile.intact({**data, "settings": {**SETTINGS, "timeout": 6}})
    assert not stagefile.intact({k: v for k, v in data.items() if k != "eps"})
