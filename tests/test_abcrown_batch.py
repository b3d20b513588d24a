"""The abCROWN stage as a batch (one alpha-beta-CROWN process per batch of samples), confined: killed with
ctbench on every exit, no temporary folder left, and a wrong model conversion gives no certificate.

Runs against ``tests/vnncomp/abcrown_like.py`` (alpha-beta-CROWN's CSV batch interface, Marabou behind it);
``test_certify_external.py::test_real_abcrown_agrees_with_milp`` runs the real one when it is installed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _certify_helpers import trained_model_path
from test_certify_external import ABCROWN_LIKE, CLASSES, _run, tiny_dataset, tiny_model

from ctbench.certify import Status
from ctbench.certify.cascade import CertifySettings, certify_model
from ctbench.certify.external import WORKSPACE_PREFIX, remove_stale_workspaces
from ctbench.certify.hdf5 import read_h5
from ctbench.certify.status import NOT_SEEN
from ctbench.errors import CTBenchError

pytest.importorskip("maraboupy", reason="Marabou (maraboupy) is a test dependency: pip install -e '.[test]'")


@pytest.fixture
def abcrown_like(monkeypatch, tmp_path):
    starts = tmp_path / "starts.txt"
    monkeypatch.setenv("CTBENCH_ABCROWN", str(ABCROWN_LIKE))
    monkeypatch.setenv("CTBENCH_ABCROWN_PYTHON", sys.executable)
    monkeypatch.setenv("ABCROWN_LIKE_STARTS", str(starts))
    monkeypatch.delenv("ABCROWN_LIKE_MODE", raising=False)
    return starts


def _starts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_one_process_per_batch_and_every_verdict_kept(abcrown_like, tmp_path):
    """20 samples, one batch: one alpha-beta-CROWN start for all undecided samples; with batches of 8, one
    per batch. Its own verdicts are kept per sample (stage_status) and agree with the exact MILP."""
    model = tiny_model(7)
    data = tiny_dataset(model, 20, seed=7)
    counts, status, _, _ = _run(model, data, ("IBP", "abCROWN"), tmp_path, "one", batch_size=256)
    assert _starts(abcrown_like) == 1
    d, attrs = read_h5(tmp_path / "one.h5")
    ss = d["stage_status"]
    assert list(attrs["stages"]) == ["IBP", "abCROWN"]
    seen = ss[:, 1] != NOT_SEEN
    assert seen.sum() == d["stage_samples"][1] >= 2  # abCROWN saw exactly the samples IBP left undecided
    assert np.array_equal(seen, d["nat_correct"] & (ss[:, 0] == int(Status.UNKNOWN)))
    assert np.array_equal(ss[seen, 1], status[seen])  # its verdict is the final one where it decided
    exact, st_milp, _, _ = _run(model, data, ("MILP",), tmp_path, "milp")
    assert np.array_equal(status == int(Status.CERTIFIED_ABCROWN), seen & (st_milp == int(Status.CERTIFIED_MILP)))
    _run(model, data, ("abCROWN",), tmp_path, "batches", batch_size=8)
    assert _starts(abcrown_like) == 1 + 3


def test_a_process_killed_on_one_row_costs_only_that_row(abcrown_like, monkeypatch, tmp_path):
    """alpha-beta-CROWN SIGKILLed on one sample (the kernel's OOM killer in its BaB on a CNN7): that sample
    stays undecided, a second process takes the samples after it, and every other verdict is the exact
    MILP's; a verifier that dies before finishing anything twice in a row ends the batch."""
    model = tiny_model(7)
    data = tiny_dataset(model, 8, seed=7)
    exact, st_milp, _, _ = _run(model, data, ("MILP",), tmp_path, "milp")
    monkeypatch.setenv("ABCROWN_LIKE_MODE", "crash_on")
    monkeypatch.setenv("ABCROWN_LIKE_CRASH_ON", "abCROWN_q1.")
    counts, status, _, _ = _run(model, data, ("abCROWN",), tmp_path, "killed")
    assert _starts(abcrown_like) == 2
    d, _ = read_h5(tmp_path / "killed.h5")
    asked = np.flatnonzero(d["nat_correct"])
    assert len(asked) >= 4
    killed = asked[1]
    assert status[killed] == int(Status.UNKNOWN)
    others = np.setdiff1d(asked, [killed])
    certified = st_milp[others] == int(Status.CERTIFIED_MILP)
    assert np.array_equal(status[others] == int(Status.CERTIFIED_ABCROWN), certified)
    assert np.array_equal(status[others] == int(Status.FALSIFIED), st_milp[others] == int(Status.FALSIFIED))
    monkeypatch.setenv("ABCROWN_LIKE_MODE", "crash")
    counts, status, _, _ = _run(model, data, ("abCROWN",), tmp_path, "crash")
    assert _starts(abcrown_like) == 2 + 2 and counts["unknown"] == len(asked)


def test_budgets_are_per_sample_and_spent_ones_are_timeouts(abcrown_like, monkeypatch, tmp_path):
    """A sample with less than a second left is a timeout without a start; the verifier gets the rest."""
    model = tiny_model(7)
    data = tiny_dataset(model, 6, seed=7)
    counts, status, _, _ = _run(model, data, ("abCROWN",), tmp_path, "b", timeout=0.5)
    assert counts["timeout"] == counts["n"] - counts["incorrect"] and _starts(abcrown_like) == 0
    d, _ = read_h5(tmp_path / "b.h5")
    assert np.all(d["stage_status"][d["nat_correct"], 0] == int(Status.TIMEOUT))


def test_a_wrong_conversion_gives_no_certificate(abcrown_like, monkeypatch, tmp_path, capsys):
    """alpha-beta-CROWN's "Model might not be converted correctly" (it goes on and answers "safe" about the
    wrong model): the certification fails with one clear line and writes no certify.h5."""
    from _certify_helpers import run_cli

    monkeypatch.setenv("ABCROWN_LIKE_MODE", "bad_conversion")
    model = tiny_model(7)
    with pytest.raises(CTBenchError, match="conversion is not to be trusted"):
        _run(model, tiny_dataset(model, 6, seed=7), ("abCROWN",), tmp_path, "bad")
    assert not (tmp_path / "bad.h5").exists()
    out = tmp_path / "cli.h5"
    rc = run_cli(["certify", "--model", str(trained_model_path_cached()), "--eps", "0.1", "--n", "4",
                  "--stages", "abCROWN", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line.lower()]  # before it: the cascade's start line (INFO)
    assert rc == 2 and len(errors) == 1 and errors[0] == err[-1], err
    assert errors[0].startswith("ctbench: error: ") and "Model might not be converted correctly" in errors[0], err
    assert not out.exists()


_MODEL = {}


def trained_model_path_cached():
    return _MODEL["path"]


@pytest.fixture(autouse=True)
def _model(tmp_path_factory):
    _MODEL["path"] = trained_model_path(tmp_path_factory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids, seconds=15.0) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_killing_certify_leaves_no_process_and_no_folder(abcrown_like, monkeypatch, tmp_path, sig):
    """`ctbench certify` killed while alpha-beta-CROWN runs (it has started a helper of its own): SIGTERM
    (scancel, Snakemake) and SIGINT (Ctrl-C) kill the whole process group and remove the temporary folder;
    after SIGKILL the kernel kills alpha-beta-CROWN (PR_SET_PDEATHSIG) and the next run removes the folder."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    pids_file = tmp_path / "pids.txt"
    env = {**os.environ, "TMPDIR": str(tmp), "ABCROWN_LIKE_MODE": "spawn", "ABCROWN_LIKE_PIDS": str(pids_file)}
    cmd = [sys.executable, "-m", "ctbench", "certify", "--model", str(trained_model_path_cached()), "--eps", "0.1",
           "--n", "4", "--stages", "abCROWN", "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "c.h5")]
    # SIGINT at its default in the child: a test run started in the background of a non-interactive shell
    # (`nohup bash .ci/run &`) inherits SIGINT ignored, and Python then keeps ignoring it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    helper = None
    try:
        end = time.monotonic() + 120
        while not (pids_file.exists() and pids_file.read_text().strip()) and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        leader, helper = map(int, pids_file.read_text().split())
        assert list(tmp.glob(f"{WORKSPACE_PREFIX}*")), "the workspace exists while the verifier runs"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        if sig == signal.SIGKILL:
            assert _wait_dead([leader]) == []  # PR_SET_PDEATHSIG
            os.kill(helper, signal.SIGKILL)  # a SIGKILLed parent cannot kill the rest of the group
            assert len(list(tmp.glob(f"{WORKSPACE_PREFIX}*"))) == 1
            assert len(remove_stale_workspaces(tmp)) == 1  # what the next run does first
        else:
            assert proc.returncode == 128 + sig if sig == signal.SIGTERM else proc.returncode == 130
            assert _wait_dead([leader, helper]) == []
        assert list(tmp.glob(f"{WORKSPACE_PREFIX}*")) == []
        assert not (tmp_path / "c.h5").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        if helper and _alive(helper):
            os.kill(helper, signal.SIGKILL)


def test_marabou_is_asked_one_sample_at_a_time():
    """Marabou has no batch mode: the cascade asks it about one sample at a time and saves its state after
    each (a long run resumes from the last sample); alpha-beta-CROWN gets the whole batch."""
    from ctbench.certify.stages import CERTIFY_STAGES

    assert CERTIFY_STAGES.get("Marabou").run_many is None
    assert CERTIFY_STAGES.get("abCROWN").run_many is not None


def test_certify_settings_accept_presets():
    s = CertifySettings(eps=0.1, eps_str="0.1", stages=("exact",))
    assert s.stages == ("IBP", "CROWN", "PGD", "MILP")
    assert CertifySettings(eps=0.1, eps_str="0.1").stages[-1] == "BaB"  # MILP is not in the paper preset
    assert CertifySettings(eps=0.1, eps_str="0.1", stages=("abcrown",)).stages[-1] == "abCROWN"


def test_a_bab_that_gives_up_hands_the_rest_of_the_budget_to_milp(tmp_path):
    """BaB stopping at its domain limit (unknown) is not final: MILP decides the sample in the time left;
    each stage's own verdict is kept."""
    model = tiny_model(3)
    data = tiny_dataset(model, 12, seed=3)
    s = CertifySettings(eps=0.25, eps_str="0.25", stages=("BaB", "MILP"), bab_max_domains=1, timeout=60)
    certify_model(model, data, range(len(data)), s, tmp_path / "c.h5", num_classes=CLASSES)
    d, _ = read_h5(tmp_path / "c.h5")
    gave_up = d["stage_status"][:, 0] == int(Status.UNKNOWN)
    assert gave_up.any()
    assert np.all(d["stage_status"][gave_up, 1] != NOT_SEEN) and np.all(d["decided_by"][gave_up] == 1)
    assert np.all(d["stage_status"][~gave_up, 1] == NOT_SEEN)


def test_a_workspace_never_closed_is_removed_when_collected(tmp_path, monkeypatch):
    import gc

    from ctbench.certify.external import Workspace

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    ws = Workspace(tiny_model(1), (1, 2, 3))
    assert ws.onnx.is_file()
    del ws
    gc.collect()
    assert list(tmp_path.glob(f"{WORKSPACE_PREFIX}*")) == []


def test_the_group_runner_sees_a_line_written_in_pieces(tmp_path):
    """The conversion alarm written in two pieces (a read between them) is still seen, whole, once."""
    from ctbench.certify.external import conversion_alarm
    from ctbench.certify.process import run_in_group

    script = ("import sys, time; sys.stdout.write('Model might not be '); sys.stdout.flush(); time.sleep(1.0); "
              "sys.stdout.write('converted correctly. Please check\\n'); sys.stdout.flush(); time.sleep(30)")
    seen = []

    def watch(text):
        seen.append(text)
        return conversion_alarm(text)

    run = run_in_group([sys.executable, "-c", script], cwd=tmp_path, log=tmp_path / "log", timeout_s=20,
                       watch=watch, poll_s=0.1)
    assert run.reason.startswith("Model might not be converted correctly") and run.seconds < 15
    assert all(t == "" or t.endswith("\n") for t in seen)
