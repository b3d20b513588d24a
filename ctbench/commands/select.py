"""``ctbench select``: model selection / SWA — ``train/candidates.pt`` → ``model.pt`` (see ctbench.select)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.commands._provenance import add_settings_arg, provenance, read_settings
from ctbench.threads import add_threads_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="pick the selected / SWA / last model of a training run", description=__doc__)
    p.add_argument("candidates", type=Path, help="train/candidates.pt written by `ctbench train`")
    p.add_argument("--out", type=Path, required=True, help="model file to write (model.pt)")
    add_settings_arg(p, "select")
    add_threads_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ctbench.io import check_writable
    from ctbench.select import select_model

    fingerprint, expect = provenance(read_settings(args, "select"))
    check_writable(args.out)  # "cannot write OUT: <why>" before loading anything
    result = select_model(args.candidates, args.out, fingerprint=fingerprint, expect=expect)
    print(f"{result['model_path']}: {result['selection']} (epoch {result['selected_epoch']})")
    return 0
