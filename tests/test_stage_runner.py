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
