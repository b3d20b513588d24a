"""The shared resumable batch loop (``ctbench.certify.runner``): skip what the state holds, save after each
batch, ``after`` on every batch, output written before the state is removed, another fingerprint starts over."""

from __future__ import annotations

import numpy as np
import pytest

from ctbench.certify.resume import state_path
from ctbench.certify.runner import BatchRun, BatchState


class _Squares(BatchState):
    FIELDS = ("value",)

    def __init__(self, n):
        self.value = np.full(n, -1, np.int64)
        self.batches_done = 0


class _Kill(Exception):
    pass


def _run(out, n=10, batch_size=4, fp="a", hook=None, calls=None, after=None):
    st = _Squares(n)
    run = BatchRun(out, st, fp, n=n, batch_size=batch_size, desc="test", hook=hook)
    calls = [] if calls is None else calls

    def work(item, b, sl):
        calls.append(b)
        st.value[sl] = np.arange(sl.start, sl.stop) ** 2

    run.run(lambda b, sl: b, work, after=after)
    run.finish(lambda: np.save(out, st.value))
    return st, calls


def test_kill_and_resume_skips_the_finished_batches(tmp_path):
    out = tmp_path / "o.npy"

    def kill_after_second(event, info):
        if event == "batch" and info["batch"] == 1:
            raise _Kill

    with pytest.raises(_Kill):
        _run(out, hook=kill_after_second)
    assert not out.exists() and state_path(out).exists()
    st, calls = _run(out)
    assert calls == [2] and st.batches_done == 3  # batches 0 and 1 came from the state
    assert np.array_equal(np.load(out), np.arange(10) ** 2) and not state_path(out).exists()


def test_after_sees_every_batch_and_another_fingerprint_starts_over(tmp_path):
    out = tmp_path / "o.npy"
    with pytest.raises(_Kill):
        _run(out, hook=lambda e, i: (_ for _ in ()).throw(_Kill()))
    seen = []
    _, calls = _run(out, after=lambda item, b, sl: seen.append((item, sl.start, sl.stop)))
    assert calls == [1, 2] and seen == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    with pytest.raises(_Kill):
        _run(out, hook=lambda e, i: (_ for _ in ()).throw(_Kill()))
    _, calls = _run(out, fp="b")  # the saved state belongs to another run
    assert calls == [0, 1, 2]


# ------------------------------------------------------------- rows of a table (the per-model analyses)

def test_rows_keep_their_types_across_a_kill_and_resume(tmp_path):
    """run_rows: the rows of the batches done before a kill come back from the state with their types; the
    resumed run calls work only for the rest and gives the same table as an uninterrupted one."""
    import pandas as pd

    from ctbench.certify.runner import run_rows

    def work(item, b, sl):
        if kill_at is not None and b == kill_at:
            raise _Kill
        calls.append(b)
        idx = np.arange(sl.start, sl.stop)
        return pd.DataFrame({"index": idx, "eps": "2/255", "ok": idx % 2 == 0, "value": idx / 3.0})

    calls, kill_at = [], None
    whole = run_rows(10, 4, lambda b, sl: b, work)  # no out: nothing saved
    out = tmp_path / "t.parquet"
    calls, kill_at = [], 2
    with pytest.raises(_Kill):
        run_rows(10, 4, lambda b, sl: b, work, out=out, key={"k": 1})
    assert state_path(out).is_file() and calls == [0, 1]
    calls, kill_at = [], None
    resumed = run_rows(10, 4, lambda b, sl: b, work, out=out, key={"k": 1})
    assert calls == [2]
    pd.testing.assert_frame_equal(resumed, whole)
    assert [str(whole[c].dtype) for c in ("index", "ok", "value")] == ["int64", "bool", "float64"]
    assert pd.api.types.is_string_dtype(whole["eps"]) and whole["eps"].tolist() == ["2/255"] * 10
    calls = []
    run_rows(10, 4, lambda b, sl: b, work, out=out, key={"k": 2})  # another key: starts over
    assert calls == [0, 1, 2]


@pytest.mark.parametrize("name", ["fragmentation", "utilization", "tightness", "corruption"])
def test_a_killed_per_model_analysis_resumes_and_writes_the_same_table(name, tmp_path, monkeypatch, capfd):
    """`ctbench analyze NAME` killed after its first batch resumes from <out>.partial.npz: the same table as
    an uninterrupted run, and the state is gone once the table is written."""
    from ctbench.analysis.tables import read_table
    from ctbench.certify import runner
    from ctbench.cli import main
    from ctbench.training import train_ibp_model

    model = train_ibp_model(tmp_path / "m", train_samples=200, epochs=1, eps=0.1)
    args = ["analyze", name, "--model", str(model), "--n", "12", "--batch", "5", "--device", "cpu"]
    args += ["--corruptions", "fog", "stripe"] if name == "corruption" else ["--eps", "0.1", "0.2"]
    assert main([*args, "--out", str(tmp_path / "whole.parquet")]) == 0
    out = tmp_path / "resumed.parquet"
    real_add = runner.RowsState.add

    def add_then_kill(self, df):
        real_add(self, df)
        if self.rows is not None and len(self.rows) and not getattr(self, "_killed", False):
            self._killed = True
            raise _Kill

    monkeypatch.setattr(runner.RowsState, "add", add_then_kill)
    with pytest.raises(_Kill):
        main([*args, "--out", str(out)])
    monkeypatch.setattr(runner.RowsState, "add", real_add)
    assert not state_path(out).exists()  # killed inside the first batch: nothing saved yet
    calls = []

    def add_once_then_kill(self, df):
        real_add(self, df)
        calls.append(len(df))
        if len(calls) == 2:
            raise _Kill

    monkeypatch.setattr(runner.RowsState, "add", add_once_then_kill)
    with pytest.raises(_Kill):
        main([*args, "--out", str(out)])
    assert state_path(out).is_file()  # the first batch was saved
    monkeypatch.setattr(runner.RowsState, "add", real_add)
    capfd.readouterr()
    assert main([*args, "--out", str(out)]) == 0
    assert "resuming from" in capfd.readouterr().err
    assert not state_path(out).exists()
    (whole, _), (resumed, _) = read_table(tmp_path / "whole.parquet"), read_table(out)
    import pandas as pd

    pd.testing.assert_frame_equal(resumed, whole)


def test_rows_refuse_a_string_they_would_truncate():
    import pandas as pd

    from ctbench.certify.runner import RowsState

    st = RowsState()
    st.add(pd.DataFrame({"name": ["fog"], "value": [1.0]}))
    with pytest.raises(ValueError, match="up to 128 characters"):
        st.add(pd.DataFrame({"name": ["x" * 129], "value": [2.0]}))
