"""Error messages say the real reason (issue 29, point 5), run the way the user ran them: the ``ctbench`` CLI.

- an ε outside [0, 1] (2, -0.1, nan, inf, -2/255; ``--eps X`` and ``--eps=X``) gets the same message from
  every command that takes ``--eps``, before anything looks the ε up (``train`` no longer says "no
  hyperparameter setting"); a malformed ε says "cannot parse eps" with the accepted forms;
- a file that is not a ctbench model (HDF5, text, empty, truncated, NumPy, plain pickle, zip, directory)
  passed as ``--model`` says what it is — never "holds Python objects", which stays for real torch files
  with refused objects (still loaded with ``weights_only=True``);
- an ``--out`` under a regular file says "cannot write OUT: FILE is a file, not a directory"; a directory
  without write permission still says so.

Each case: exit status 2, one line ``ctbench: error: <reason>`` on stderr, no traceback, nothing written.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ctbench.cli import main

REPO = Path(__file__).resolve().parents[1]
LITERATURE = REPO / "config" / "literature.yaml"
MODEL_HINT = "(model.pt, written by ctbench train or ctbench select)"


def _ctbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command line: ``python -m ctbench ARGS`` in ``cwd``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "ctbench", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def cell(tmp_path_factory) -> Path:
    """A tiny trained cell (``ctbench train`` on mnist_mini, one step): model.pt, train/candidates.pt, plus its
    certify.h5 (IBP on two samples) and metrics.json (``ctbench summarize``)."""
    d = tmp_path_factory.mktemp("cell")
    for args in (
        ["train", "--dataset", "mnist_mini", "--eps", "0.1", "--method", "ibp", "--model", "cnn_small",
         "--scale-schedule", "0.02", "--max-steps", "1", "--subset", "64", "--device", "cpu", "--out", "."],
        ["certify", "--model", "model.pt", "--eps", "0.1", "--n", "2", "--stages", "IBP", "--device", "cpu",
         "--out", "certify.h5"],
        ["summarize", "--certify", "certify.h5", "--out", "summary/cell.csv"],
    ):
        r = _ctbench(*args, cwd=d)
        assert r.returncode == 0, r.stderr
    assert (d / "model.pt").is_file() and (d / "train" / "candidates.pt").is_file()
    assert (d / "summary" / "metrics.json").is_file()
    return d


def error_of(argv: list[str], capsys) -> str:
    """Run ``ctbench ARGV``; assert exit 2 and exactly one line ``ctbench: error: ...``; return the message."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and err.startswith("ctbench: error: "), err
    assert "Traceback" not in err
    return err.removeprefix("ctbench: error: ")


# ------------------------------------------------------------------------------------------------ ε

#: Every command that takes --eps, as (name, argv without --eps); ``{model}``/``{out}`` filled in per test.
EPS_COMMANDS = {
    "train": ["train", "--dataset", "mnist_mini", "--method", "ibp", "--device", "cpu", "--out", "{out}"],
    "train --setting": ["train", "--dataset", "mnist_mini", "--method", "ibp", "--setting", "mnist_0.1",
                        "--out", "{out}"],
    "certify": ["certify", "--model", "{model}", "--n", "2", "--device", "cpu", "--out", "{out}"],
    "attack": ["attack", "--model", "{model}", "--n", "2", "--device", "cpu", "--out", "{out}"],
    "analyze": ["analyze", "utilization", "--model", "{model}", "--n", "2", "--device", "cpu", "--out", "{out}"],
    "bounds check": ["bounds", "check", "--samples", "2"],
}


def _eps_argv(command: str, eps: str, form: str, model: Path, out: Path) -> list[str]:
    argv = [a.format(model=model, out=out) for a in EPS_COMMANDS[command]]
    return argv + ([f"--eps={eps}"] if form == "equals" else ["--eps", eps])


@pytest.mark.parametrize("command", list(EPS_COMMANDS))
@pytest.mark.parametrize("form", ["space", "equals"])
@pytest.mark.parametrize("eps", ["2", "-0.1", "nan", "inf", "-2/255", "3/2"])
def test_eps_outside_0_1_same_reason_in_every_command(command, form, eps, cell, tmp_path, capsys):
    out = tmp_path / "out"
    msg = error_of(_eps_argv(command, eps, form, cell / "model.pt", out), capsys)
    assert msg == f"eps must lie in [0, 1] (pixel space), got {eps}"
    assert not out.exists()


@pytest.mark.parametrize("command", list(EPS_COMMANDS))
@pytest.mark.parametrize("eps", ["abc", "2/0", "0.1.2", ""])
def test_malformed_eps_cannot_parse(command, eps, cell, tmp_path, capsys):
    out = tmp_path / "out"
    msg = error_of(_eps_argv(command, eps, "equals", cell / "model.pt", out), capsys)
    assert msg.startswith(f"cannot parse eps {eps!r}") and "0.1" in msg and "2/255" in msg, msg
    assert not out.exists()


def test_accepted_eps_forms_agree():
    """The two parsers (training settings, evaluation) are one: same values, the path token 2_255 included."""
    from ctbench.core import eps_pair as eval_eps
    from ctbench.core import parse_eps

    for text, value in [("0.1", 0.1), ("2/255", 2 / 255), ("2_255", 2 / 255), ("1e-2", 0.01), ("1", 1.0),
                        ("0", 0.0), (" .5 ", 0.5)]:
        assert parse_eps(text) == eval_eps(text)[0] == pytest.approx(value, abs=0), text
    assert eval_eps("2_255") == (2 / 255, "2/255")


def test_train_eps_in_range_without_setting_still_says_so(tmp_path, capsys):
    """A valid ε with no hyperparameter setting keeps that (true) reason."""
    msg = error_of(["train", "--dataset", "mnist_mini", "--method", "ibp", "--eps", "0.25",
                    "--out", str(tmp_path / "o")], capsys)
    assert msg.startswith("no hyperparameter setting for dataset 'mnist_mini' at eps 0.25"), msg


# ------------------------------------------------------------------------------------ files as --model


class _Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _make(kind: str, cell: Path, d: Path) -> Path:
    """A file of ``kind`` that is not a ctbench model file."""
    if kind == "hdf5":
        return cell / "certify.h5"
    path = d / {"text": "notes.txt", "numpy": "a.npy", "pickle": "p.pkl", "zip": "a.zip", "directory": "dir"}.get(
        kind, f"{kind}.pt")
    if kind == "text":
        path.write_text("model: cnn7\neps: 0.1\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = (cell / "model.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "numpy":
        np.save(path, np.zeros(3))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": [1, 2]}))
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hi")
    elif kind == "directory":
        path.mkdir()
    elif kind == "foreign_torch":
        torch.save({"weights": torch.zeros(1)}, path)
    elif kind == "candidates":
        path.write_bytes((cell / "train" / "candidates.pt").read_bytes())
    return path


MODEL_FILE_REASONS = {
    "hdf5": "{p} is an HDF5 file, not a ctbench model file " + MODEL_HINT,
    "text": "{p} is a text file, not a ctbench model file " + MODEL_HINT,
    "empty": "{p} is an empty file, not a ctbench model file " + MODEL_HINT,
    "truncated": "{p} is not a ctbench model file: it is a truncated or damaged PyTorch file",
    "numpy": "{p} is a NumPy array file, not a ctbench model file " + MODEL_HINT,
    "pickle": "{p} is a plain Python pickle (not written by torch.save), not a ctbench model file " + MODEL_HINT,
    "zip": "{p} is a zip archive but not a PyTorch file, so not a ctbench model file " + MODEL_HINT,
    "directory": "{p} is a directory, not a ctbench model file " + MODEL_HINT,
    "foreign_torch": "{p} is a PyTorch file but not a ctbench model file (no format ctbench-model/1; "
                     "model.pt, written by ctbench train or ctbench select)",
    "candidates": "{p} is a ctbench training file (ctbench-train-candidates), not a ctbench model file: "
                  "`ctbench select train/candidates.pt --out model.pt` makes one",
}


@pytest.mark.parametrize("command", ["certify", "attack", "analyze"])
@pytest.mark.parametrize("kind", list(MODEL_FILE_REASONS))
def test_not_a_model_file_says_what_it_is(kind, command, cell, tmp_path, capsys):
    path = _make(kind, cell, tmp_path)
    out = tmp_path / "out.h5"
    argv = {"certify": ["certify"], "attack": ["attack"], "analyze": ["analyze", "utilization"]}[command]
    msg = error_of([*argv, "--model", str(path), "--eps", "0.1", "--n", "2", "--device", "cpu", "--out", str(out)],
                   capsys)
    assert msg == MODEL_FILE_REASONS[kind].format(p=path)
    assert "Python objects" not in msg and "weights_only" not in msg
    assert not out.exists()


def test_hdf5_as_candidates_file(cell, tmp_path, capsys):
    msg = error_of(["select", str(cell / "certify.h5"), "--out", str(tmp_path / "m.pt")], capsys)
    assert msg == f"{cell / 'certify.h5'} is an HDF5 file, not a ctbench training-candidates file (train/candidates.pt)"


def test_torch_file_with_python_objects_is_still_refused(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": _Payload()}, path)
    rc = main(["certify", "--model", str(path), "--eps", "0.1", "--out", str(tmp_path / "c.h5")])
    captured = capsys.readouterr()
    assert rc == 2 and "this must never run" not in captured.out
    assert captured.err.strip() == (f"ctbench: error: {path} is not a ctbench model file: it holds Python objects "
                                    "that ctbench never writes (refused: loading them could run arbitrary code)")


# ------------------------------------------------------------------------------------------- --out


def _out_argv(command: str, out: Path, cell: Path) -> list[str]:
    m = str(cell / "model.pt")
    return {
        "train": ["train", "--dataset", "mnist_mini", "--eps", "0.1", "--method", "ibp", "--device", "cpu",
                  "--out", str(out / "cell")],
        "certify": ["certify", "--model", m, "--eps", "0.1", "--n", "2", "--device", "cpu",
                    "--out", str(out / "certify.h5")],
        "attack": ["attack", "--model", m, "--eps", "0.1", "--n", "2", "--device", "cpu",
                   "--out", str(out / "attack.h5")],
        "select": ["select", str(cell / "train" / "candidates.pt"), "--out", str(out / "model.pt")],
        "summarize": ["summarize", "--certify", str(cell / "certify.h5"), "--out", str(out / "cell.csv")],
        "analyze": ["analyze", "utilization", "--model", m, "--eps", "0.1", "--n", "2", "--device", "cpu",
                    "--out", str(out / "u.parquet")],
        "report": ["report", str(cell / "summary" / "metrics.json"), "--literature", str(LITERATURE),
                   "--out", str(out / "results")],
    }[command]


OUT_COMMANDS = ["train", "certify", "attack", "select", "summarize", "analyze", "report"]


def _out_path(argv: list[str]) -> str:
    return argv[argv.index("--out") + 1]


@pytest.mark.parametrize("command", OUT_COMMANDS)
@pytest.mark.parametrize("depth", ["child", "grandchild"])
def test_out_under_a_regular_file(command, depth, cell, tmp_path, capsys):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("keep me\n")
    under = blocker / "sub" if depth == "grandchild" else blocker
    argv = _out_argv(command, under, cell)
    msg = error_of(argv, capsys)
    assert msg == f"cannot write {_out_path(argv)}: {blocker} is a file, not a directory"
    assert "permission" not in msg and "File exists" not in msg
    assert blocker.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["somefile.txt"]


def test_train_out_is_a_file(cell, tmp_path, capsys):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("keep me\n")
    msg = error_of(["train", "--dataset", "mnist_mini", "--eps", "0.1", "--method", "ibp", "--out", str(blocker)],
                   capsys)
    assert msg == f"cannot write {blocker}: it is a file, not a directory"


@pytest.mark.parametrize("command", ["train", "certify", "attack", "select", "summarize", "report"])
def test_out_in_a_directory_without_write_permission(command, cell, tmp_path, capsys, monkeypatch):
    """A truly unwritable directory still says so (os.access denied for it: the tests may run as root)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    argv = _out_argv(command, locked, cell)
    msg = error_of(argv, capsys)
    assert msg == f"cannot write {_out_path(argv)}: no write permission on {locked}"
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_directory(cell, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        msg = error_of(_out_argv("certify", locked, cell), capsys)
        assert msg == f"cannot write {locked / 'certify.h5'}: no write permission on {locked}"
    finally:
        locked.chmod(0o755)


# ------------------------------------------------------------------------ the user's commands, verbatim


def test_reported_commands_in_a_subprocess(cell, tmp_path):
    """The three reports of issue 29 (point 5) as typed in a shell."""
    (tmp_path / "somefile.txt").write_text("x")
    cases = [
        (["train", "--dataset", "mnist_mini", "--method", "ibp", "--eps", "2", "--out", "t"],
         "eps must lie in [0, 1] (pixel space), got 2"),
        (["train", "--dataset", "mnist_mini", "--method", "ibp", "--eps", "-0.1", "--out", "t"],
         "eps must lie in [0, 1] (pixel space), got -0.1"),
        (["certify", "--model", str(cell / "certify.h5"), "--eps", "0.1", "--out", "c.h5"],
         f"{cell / 'certify.h5'} is an HDF5 file, not a ctbench model file {MODEL_HINT}"),
        (["certify", "--model", str(cell / "model.pt"), "--eps", "0.1", "--out", "somefile.txt/certify.h5"],
         "cannot write somefile.txt/certify.h5: somefile.txt is a file, not a directory"),
    ]
    for args, reason in cases:
        r = _ctbench(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr == f"ctbench: error: {reason}\n", (args, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile.txt"]
