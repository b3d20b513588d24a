"""``ctbench report``: paper Table 1 and three-seed statistics from per-cell ``metrics.json`` files."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="build results/table1.csv|.md|.tex and results/seeds.csv", description=__doc__)
    p.add_argument("cells", nargs="+", type=Path,
                   help="results/{dataset}/{eps}/{model}/{method}/seed{seed}/metrics.json")
    p.add_argument("--literature", type=Path, default=Path("config/literature.yaml"),
                   help="literature values of Table 1 (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: %(default)s)")
    p.add_argument("--seed", type=int, help="seed reported in Table 1 (default: the smallest per cell)")
    p.add_argument("--manifest", type=Path,
                   help="results/cells.json (the workflow's current grid): refuse cells made under another "
                   "configuration; Table 1 = its Table 1 cells")
    p.add_argument("--tables", default="table1,ablations",
                   help="which tables: table1 (table1.csv|md|tex, seeds.csv), ablations (ablations.csv|md); "
                   "default both")
    p.add_argument("--hparams", type=Path, help="hyperparameter file, to say which rows are reduced-scale runs "
                   "(default: config/hparams.yaml)")
    p.set_defaults(func=_run)


def _tables(text: str) -> tuple[str, ...]:
    from ctbench.errors import CTBenchError

    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names or any(t not in ("table1", "ablations") for t in names):
        raise CTBenchError(f"bad --tables {text!r}: give table1, ablations or both, comma-separated")
    return names


def _run(args: argparse.Namespace) -> int:
    from ctbench.config import DEFAULT_HPARAMS
    from ctbench.io import check_writable
    from ctbench.report import table1_markdown, write_reports

    check_writable(args.out, directory=True)  # "cannot write OUT: <why>" before any work
    t1, _ = write_reports(args.cells, args.literature, args.out, args.seed, manifest=args.manifest,
                          hparams_path=args.hparams or DEFAULT_HPARAMS, tables=_tables(args.tables))
    if "table1" in _tables(args.tables):
        print(table1_markdown(t1), end="")
    return 0
