"""Options every stage command of the workflow shares: its own fingerprint and its inputs' expected ones
(``ctbench.fingerprint``)."""

from __future__ import annotations

import argparse


def add_fingerprint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fingerprint", help="this stage's fingerprint, recorded in the output (the workflow sets it)")
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="STAGE=FP",
        help="refuse inputs whose recorded STAGE fingerprint differs (repeatable; the workflow sets it)",
    )
