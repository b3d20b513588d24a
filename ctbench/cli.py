"""``ctbench`` command line: one subcommand per pipeline stage (see DESIGN.md).

Each subcommand lives in ``ctbench/commands/<name>.py`` and exposes ``add_parser(subparsers)``, which
registers its parser and sets ``func`` (called with the parsed namespace). Heavy imports (torch) happen
inside the handlers so that ``ctbench --help`` is instant.

Errors: a :class:`~ctbench.errors.CTBenchError` (bad input, missing data, corrupt file) becomes one line
``ctbench: error: ...`` on stderr and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from ctbench import __version__
from ctbench.errors import CTBenchError, Terminated
from ctbench.logs import setup_logging

#: Subcommand modules under ``ctbench.commands``, in the order ``--help`` lists them.
COMMANDS = (
    "data", "models", "bounds", "grid", "train", "select", "certify", "attack", "summarize", "analyze", "report",
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctbench",
        description="Certified training benchmark (CTBench, ICML 2025): data, models, bounds, training, "
        "certification and the Snakemake pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"ctbench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"ctbench.commands.{name}").add_parser(sub)
    return parser


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind (kill children, remove temp files), then exit
        try:
            previous[sig] = signal.signal(sig, _raise_terminated)
        except ValueError:  # not the main thread (main() called from a library's thread)
            pass
    try:
        return _main(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        if "threads" in vars(args):  # a compute command: the CPUs the job was given (ctbench/threads.py)
            from ctbench.threads import apply_threads

            apply_threads(args.threads)
        return int(args.func(args) or 0)
    except CTBenchError as e:
        print(f"ctbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctbench: interrupted", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"ctbench: {e}", file=sys.stderr)
        return 128 + e.signum


if __name__ == "__main__":
    sys.exit(main())
