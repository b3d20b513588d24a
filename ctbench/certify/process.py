"""An external tool's run that never outlives ours: own process group, killed on every way out.

alpha-beta-CROWN is a Python program that may start helpers of its own. :func:`run_in_group` starts it
as the leader of a new process group (``start_new_session``) and, on Linux, asks the kernel to kill
it when our process dies (``PR_SET_PDEATHSIG``, which covers even SIGKILL). Every way out of the
call — normal exit, timeout, a watched log line, an exception, Ctrl-C, SIGTERM from ``scancel`` or
Snakemake (raised as :class:`~ctbench.errors.Terminated` by the CLI) — ends with the whole group
killed: SIGTERM, a short grace, then SIGKILL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Seconds between SIGTERM and SIGKILL when a group is stopped.
KILL_GRACE_S = 3.0
_PR_SET_PDEATHSIG = 1


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class GroupResult:
    returncode: int | None  #: None if we killed it
    reason: str  #: "exit", "timeout" or the watch function's message
    seconds: float


def kill_group(pgid: int, grace: float = KILL_GRACE_S, reap=None) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds.

    ``reap``: called while waiting (our child's ``poll``), so that a dead leader does not linger as a
    zombie member of the group."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if reap is not None:
            reap()
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_in_group(cmd, *, cwd, log: Path, timeout_s: float, watch=None, poll_s: float = 0.2, env=None) -> GroupResult:
    """Run ``cmd`` (stdout and stderr to ``log``) in its own process group and wait for it.

    ``watch(new_log_lines) -> str | None``: called with the log's new complete lines (a line split
    across two reads is passed whole, once); a message stops the run at once (reason = that message).
    Returns when the leader exits, the timeout passes or the watch fires; the group is killed in every
    case (leftover helpers included)."""
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent if _LIBC is not None else None, env=env,
        )  # fmt: skip
    pgid = proc.pid  # the session leader's pid is its group id
    reason = "exit"
    pending = b""

    def new_lines(final: bool = False) -> str:
        nonlocal pending
        data = pending + reader.read()
        cut = len(data) if final else data.rfind(b"\n") + 1
        pending = data[cut:]
        return data[:cut].decode(errors="replace")

    try:
        with open(log, "rb") as reader:
            while proc.poll() is None:
                if watch is not None:
                    msg = watch(new_lines())
                    if msg:
                        reason = msg
                        break
                if time.monotonic() - t0 > timeout_s:
                    reason = "timeout"
                    break
                time.sleep(poll_s)
            if reason == "exit" and watch is not None:
                msg = watch(new_lines(final=True))
                reason = msg or reason
    finally:
        kill_group(pgid, reap=proc.poll)
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    code = proc.returncode if reason == "exit" else None
    return GroupResult(code, reason, time.monotonic() - t0)
