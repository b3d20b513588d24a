"""Logging set-up for the CLI only (library modules use ``logging.getLogger(__name__)``)."""

from __future__ import annotations

import logging
import sys


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted, not the one it was set up
    with: a caller that swaps stderr (pytest's capture, a notebook) and closes the old one later does not
    turn every later log line into a "Logging error" traceback."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # set by StreamHandler.__init__; the property always reads sys.stderr
        pass


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger once: INFO by default, DEBUG with ``-v``, WARNING with ``-q``."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[StderrHandler()],
        force=True,
    )


#: Seconds between progress lines in log files (``CTBENCH_PROGRESS_INTERVAL`` overrides; 0 = every update).
PROGRESS_INTERVAL_S = 60.0


def duration(seconds: float) -> str:
    """``3h05m``, ``4m07s``, ``12s``."""
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class LogProgress:
    """tqdm's interface (update, set_postfix, close, iteration) as periodic log lines, for runs without a
    terminal (SLURM jobs, Snakemake logs): ``desc: n/total unit (p%), r unit/s, elapsed, ETA``."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, leave=True,
                 interval=None, logger_name="ctbench.progress", **_ignored):
        import os
        import time

        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.n = self._start = int(initial or 0)
        env = os.environ.get("CTBENCH_PROGRESS_INTERVAL")
        self.interval = float(env) if env else (PROGRESS_INTERVAL_S if interval is None else interval)
        self._clock = time.monotonic
        self._t0 = self._last = self._clock()
        self._postfix = ""
        self._log = logging.getLogger(logger_name)
        self._closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, refresh=True, **kwargs):
        self._postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def update(self, n=1):
        self.n += n
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def line(self, now=None) -> str:
        now = self._clock() if now is None else now
        elapsed = now - self._t0
        done = self.n - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {duration(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts)

    def _emit(self, now=None):
        self._log.info("%s", self.line(now))

    def close(self):
        if not self._closed and self.leave:
            self._emit()
        self._closed = True


class Heartbeat:
    """A status line every ``interval`` seconds while long work runs, from a daemon thread.

    ``status()`` returns the line (what runs now, what is decided, time spent, worst-case remaining); it
    is called from the thread, so it must only read. Used where one step can take minutes (a certification
    stage on a batch, branch and bound on one sample), which :class:`LogProgress` — updated after each
    step — would leave silent. ``CTBENCH_PROGRESS_INTERVAL`` overrides the interval (as for progress lines).
    Use as a context manager; nothing is logged after it exits."""

    def __init__(self, status, *, interval=None, logger_name="ctbench.progress"):
        import os
        import threading

        env = os.environ.get("CTBENCH_PROGRESS_INTERVAL")
        interval = float(env) if env else (PROGRESS_INTERVAL_S if interval is None else interval)
        self.interval = max(interval, 0.05)
        self._status = status
        self._log = logging.getLogger(logger_name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctbench-heartbeat", daemon=True)

    def _run(self):
        import signal

        # Signals go to the main thread, whose blocking calls they interrupt (SIGINT/SIGTERM unwind the run).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        while not self._stop.wait(self.interval):
            try:
                line = self._status()
            except Exception as e:  # a status that cannot be read now must not end the run
                line = f"(status unavailable: {type(e).__name__})"
            if line and not self._stop.is_set():
                self._log.info("%s", line)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def progress(iterable=None, **kwargs):
    """Progress of long work: a tqdm bar on a terminal; periodic log lines with rate and ETA otherwise
    (log files, Snakemake, SLURM; :class:`LogProgress`); nothing with ``disable=True``."""
    from tqdm.auto import tqdm

    if kwargs.get("disable") is True:
        return tqdm(iterable, **kwargs)
    if not sys.stderr.isatty():
        return LogProgress(iterable, **kwargs)
    kwargs.setdefault("disable", None)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
