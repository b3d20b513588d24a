"""The one error type the CLI turns into a clear one-line message and a non-zero exit."""


class CTBenchError(Exception):
    """A user-facing error: bad input, missing data, corrupt file.

    The CLI prints ``ctbench: error: <message>`` and exits with status 2; library callers may catch it.
    The message must say what was wrong and how to fix it, in one line.
    """


class Terminated(BaseException):
    """SIGTERM/SIGHUP (``scancel``, Snakemake stopping a job) raised in the main thread, so that every
    ``finally`` and context manager runs: child processes are killed, temporary files removed. Like
    KeyboardInterrupt it is a BaseException, so ``except Exception`` blocks do not swallow it."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum
