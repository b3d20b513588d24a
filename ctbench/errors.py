"""The one error type the CLI turns into a clear one-line message and a non-zero exit."""


class CTBenchError(Exception):
    """A user-facing error: bad input, missing data, corrupt file.

    The CLI prints ``ctbench: error: <message>`` and exits with status 2; library callers may catch it.
    The message must say what was wrong and how to fix it, in one line.
    """
