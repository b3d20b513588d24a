"""ctbench.grid.stale: which existing outputs of a cell or table are stale because their inputs are gone or
were replaced (the workflow re-makes them; tests/test_workflow.py runs that end to end)."""

import json
from pathlib import Path

import numpy as np

from ctbench.certify.hdf5 import write_h5
from ctbench.grid import stale


def _cell(tmp_path, fps=None, files=("model.pt", "certify.h5", "attack.h5", "metrics.json")):
    fps = fps or {"certify": "c" * 64, "attack": "a" * 64, "summarize": "s" * 64}
    d = tmp_path / "results/mnist/0.1/cnn7/ibp/seed0"
    d.mkdir(parents=True)
    for name in files:
        if name.endswith(".h5"):
            write_h5(d / name, {"x": np.zeros(2)}, {"fingerprints": {k: fps[k] for k in ("certify", "attack")
                                                                     if k == "certify" or name == "attack.h5"}})
        elif name == "metrics.json":
            (d / name).write_text(json.dumps({"fingerprints": fps}))
        else:
            (d / name).write_bytes(b"model")
    return d, fps


def test_a_consistent_cell_has_no_problems(tmp_path):
    d, _ = _cell(tmp_path)
    assert stale.cell_problems(d) == {}
    assert stale.cell_problems(tmp_path / "nothing-here") == {}


def test_missing_inputs_make_every_output_made_from_them_stale(tmp_path):
    d, _ = _cell(tmp_path)
    (d / "certify.h5").unlink()
    assert stale.cell_problems(d) == {"attack": "certify.h5 is missing", "summarize": "certify.h5 is missing"}
    (d / "model.pt").unlink()
    assert stale.cell_problems(d)["attack"] == "model.pt and certify.h5 are missing"


def test_a_file_from_another_cell_or_run_is_stale(tmp_path):
    """Another cell's attack.h5 (made from another certify.h5) put in place: the attack and the summary are
    stale; a certify.h5 replaced by another makes the attack and the summary stale."""
    d, fps = _cell(tmp_path)
    write_h5(d / "attack.h5", {"x": np.zeros(2)}, {"fingerprints": {"certify": "d" * 64, "attack": "b" * 64}})
    problems = stale.cell_problems(d)
    assert problems["attack"] == ("certify.h5 (fingerprint cccccccccccc) is not the file attack.h5 was made from "
                                  "(dddddddddddd)")
    assert problems["summarize"] == ("attack.h5 (fingerprint bbbbbbbbbbbb) is not the file metrics.json was made "
                                     "from (aaaaaaaaaaaa)")
    d2, _ = _cell(tmp_path / "other")
    write_h5(d2 / "certify.h5", {"x": np.zeros(2)}, {"fingerprints": {"certify": "e" * 64}})
    assert set(stale.cell_problems(d2)) == {"attack", "summarize"}


def test_tables_are_stale_when_a_summary_they_were_made_from_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d, _ = _cell(tmp_path)
    d = d.relative_to(tmp_path)
    table, manifest = Path("results/table1.csv"), Path("results/manifest/table1.json")
    assert stale.table_problem(table, manifest) is None  # no table yet: nothing to re-make
    table.write_text("x\n")
    assert stale.table_problem(table, manifest) is None  # no manifest: its rule re-makes it and the table
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"cells": [{"dir": str(d)}]}))
    assert stale.table_problem(table, manifest) is None
    (d / "metrics.json").unlink()
    assert stale.table_problem(table, manifest) == f"{d}/metrics.json is missing"
    manifest.write_text(json.dumps({"cells": [{"dir": str(d)}, {"dir": "results/b"}]}))
    assert stale.table_problem(table, manifest) == f"{d}/metrics.json and those of 1 more cells are missing"


def test_redo_notes_change_on_every_write(tmp_path):
    note = stale.redo_note(tmp_path / "cell", "summarize")
    assert note == f"{tmp_path}/cell/logs/redo-summarize.txt"
    stale.write_redo_note(note, "metrics.json", "certify.h5 is missing")
    first = open(note).read()
    stale.write_redo_note(note, "metrics.json", "certify.h5 is missing")
    lines = open(note).read().splitlines()
    assert len(lines) == 2 and lines[0] == first.strip() and lines[1] != lines[0]
    assert lines[1].endswith("Z metrics.json is re-made: certify.h5 is missing")
