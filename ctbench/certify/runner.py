"""The resumable batch loop shared by the per-sample stages (``certify``, ``attack``) and the per-model
analyses (:func:`run_rows`).

A stage walks ``n`` samples in batches of ``batch_size`` (batch ``b`` holds rows ``b·B … (b+1)·B − 1``).
Its per-sample vectors live in a :class:`BatchState`; after every finished batch the state is written
atomically to ``<out>.partial.npz`` (:mod:`ctbench.certify.resume`) with a fingerprint of everything that
determines the result. A rerun with the same fingerprint skips the batches the state holds; a different
or unreadable state is ignored (the run starts over). Progress is reported as samples passed (a tqdm bar
or periodic log lines, :func:`ctbench.logs.progress`), optionally with a heartbeat status line while a
batch runs (:class:`ctbench.logs.Heartbeat`). :meth:`BatchRun.finish` writes the output (atomically) and
removes the state.

A stage whose result per batch is rows of a table (the per-model analyses) keeps them in a
:class:`RowsState` through :func:`run_rows`. Without an ``out`` path nothing is saved (a library call).

Work that is resumable at a finer grain than a batch (the cascade's complete stages, one sample at a time)
runs in ``after``, which is called for *every* batch, done or not, and saves the state itself
(:meth:`BatchRun.save`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ctbench.certify import resume
from ctbench.logs import Heartbeat, progress

logger = logging.getLogger(__name__)


class BatchState:
    """Per-sample vectors (the attributes named in ``FIELDS``) and ``batches_done``; subclasses set them up."""

    FIELDS: tuple[str, ...] = ()
    batches_done: int = 0

    def names(self) -> list[str]:
        """The arrays of the saved state."""
        return [*self.FIELDS, "batches_done"]

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{k: getattr(self, k) for k in self.FIELDS}, "batches_done": np.array(self.batches_done)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        for k in self.FIELDS:
            setattr(self, k, arrays[k])
        self.batches_done = int(arrays["batches_done"])


class RowsState(BatchState):
    """Rows of a table appended batch by batch, kept as one structured array (strings as fixed-width
    unicode, so the saved state needs no pickle)."""

    FIELDS = ("rows",)
    STRING = "<U128"

    def __init__(self):
        self.rows: np.ndarray | None = None

    def add(self, df) -> None:
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        strings = {c: self.STRING for c in df.columns if not (is_numeric_dtype(df[c]) or is_bool_dtype(df[c]))}
        width = int(self.STRING[2:])
        too_long = [c for c in strings if df[c].astype(str).str.len().max() > width]
        if too_long:
            raise ValueError(f"RowsState keeps strings of up to {width} characters; column(s) {too_long} hold longer")
        records = df.to_records(index=False, column_dtypes=strings)
        self.rows = records if self.rows is None else np.concatenate([self.rows, records])

    def frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.rows) if self.rows is not None else pd.DataFrame()


def load_samples(dataset, idx, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``idx`` of a Dataset of ``(x, y)`` as ``x (B, C, H, W)`` float and ``y (B,)`` int64 on ``device``."""
    xs, ys = zip(*(dataset[int(i)] for i in idx), strict=True)
    return torch.stack(xs).float().to(device), torch.as_tensor(ys, dtype=torch.int64).to(device)


def run_rows(n: int, batch_size: int, load: Callable, work: Callable, *, out=None, key: dict | None = None,
             desc: str = "", hook: Callable | None = None):
    """The rows (a DataFrame) ``work(item, b, rows)`` returns for every batch ``item = load(b, rows)`` of ``n``
    items, in order. With ``out``, resumable from ``<out>.partial.npz`` (fingerprint of ``key``); the caller
    writes ``out`` and then removes the state (``resume.state_path(out).unlink()``)."""
    state = RowsState()
    run = BatchRun(out, state, resume.fingerprint(key or {}), n=n, batch_size=batch_size, desc=desc, hook=hook)
    run.run(load, lambda item, b, sl: state.add(work(item, b, sl)))
    return state.frame()


class BatchRun:
    """One resumable pass of a stage over ``n`` samples; ``state`` is restored from ``<out>.partial.npz``
    when ``resume`` is set and the saved fingerprint matches.

    ``hook(event, info)`` is called after each persisted batch (``"batch"``, ``{"batch", "n_batches"}``) and
    by the stage's own finer steps (:meth:`event`): progress, or a simulated kill in tests."""

    def __init__(self, out, state: BatchState, fingerprint: str, *, n: int, batch_size: int, desc: str,
                 resume_state: bool = True, hook: Callable | None = None):
        self.out, self.state, self.fingerprint = (Path(out) if out is not None else None), state, fingerprint
        self.n, self.batch_size, self.desc, self.hook = n, batch_size, desc, hook
        self.n_batches = math.ceil(n / batch_size)
        self.path = resume.state_path(self.out) if out is not None else None  # None: nothing is saved
        loaded = resume.load_state(self.path, fingerprint, state.names()) if resume_state and self.path else None
        if loaded is not None:
            state.restore(loaded)
            if state.batches_done:
                logger.info("resuming from %s: %d batches done", self.path, state.batches_done)

    def rows(self, b: int) -> slice:
        return slice(b * self.batch_size, min(self.n, (b + 1) * self.batch_size))

    def save(self) -> None:
        if self.path is not None:
            resume.save_state(self.path, self.fingerprint, self.state.arrays())

    def event(self, name: str, info: dict) -> None:
        if self.hook:
            self.hook(name, info)

    def run(self, load: Callable, work: Callable, *, after: Callable | None = None,
            postfix: Callable | None = None, status: Callable | None = None) -> None:
        """For each batch: ``item = load(b, rows)``; if the state does not hold it yet, ``work(item, b, rows)``,
        then the state is saved and the hook told; then ``after(item, b, rows)`` if given.

        Without ``after`` the batches already done are neither loaded nor visited. ``postfix(rows)``: the
        progress line's extra fields after a batch; ``status()``: a heartbeat line while the loop runs."""
        first = 0 if after is not None else self.state.batches_done
        initial = min(self.n, first * self.batch_size)
        bar = progress(total=self.n, initial=initial, unit="sample", desc=self.desc)
        with Heartbeat(status) if status is not None else nullcontext():
            for b in range(first, self.n_batches):
                sl = self.rows(b)
                item = load(b, sl)
                if b >= self.state.batches_done:
                    work(item, b, sl)
                    self.state.batches_done = b + 1
                    self.save()
                    self.event("batch", {"batch": b, "n_batches": self.n_batches})
                if after is not None:
                    after(item, b, sl)
                bar.update(sl.stop - sl.start)
                if postfix is not None:
                    bar.set_postfix(**postfix(sl), refresh=False)
        bar.close()

    def finish(self, write: Callable[[], None]) -> None:
        """``write()`` the output (atomically), then remove the resume state."""
        write()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

