"""``ctbench report``: paper Table 1 and three-seed statistics from per-cell ``metrics.json`` files."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="build results/table1.csv|.md|.tex and results/seeds.csv", description=__doc__)
    p.add_argument("cells", nargs="+", type=Path, help="results/{dataset}/{eps}/{method}/seed{seed}/metrics.json")
    p.add_argument("--literature", type=Path, default=Path("config/literature.yaml"),
                   help="literature values of Table 1 (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: %(default)s)")
    p.add_argument("--seed", type=int, help="seed reported in Table 1 (default: the smallest per cell)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ctbench.report import to_markdown, write_reports

    t1, _ = write_reports(args.cells, args.literature, args.out, args.seed)
    print(to_markdown(t1, "Table 1"), end="")
    return 0
