"""``ctbench summarize``: certify.h5 (+ attack.h5) → one table row (Parquet/CSV) and metrics.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.commands._provenance import add_settings_arg, provenance, read_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summarize", help="per-cell table from certify.h5 / attack.h5", description=__doc__)
    p.add_argument("--certify", type=Path, required=True, help="certify.h5")
    p.add_argument("--attack", type=Path, help="attack.h5 (optional)")
    p.add_argument("--out", type=Path, required=True, help="cell table: .parquet or .csv")
    p.add_argument("--metrics", type=Path, help="metrics.json (default: next to --out)")
    add_settings_arg(p, "summarize")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ctbench.certify.summarize import summarize, write_summary
    from ctbench.io import check_writable

    fingerprint, expect = provenance(read_settings(args, "summarize"))
    metrics = args.metrics or args.out.with_name("metrics.json")
    for path in (args.out, metrics):
        check_writable(path)  # "cannot write PATH: <why>" before reading anything
    row = summarize(args.certify, args.attack, fingerprint=fingerprint, expect=expect)
    write_summary(row, args.out, metrics)
    keys = ("n", "nat_acc", "ibp_acc", "crown_ibp_acc", "cert_acc", "adv_acc")
    print("  ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys))
    print(f"wrote {args.out}, {metrics}")
    return 0
