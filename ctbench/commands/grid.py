"""``ctbench grid``: check a grid configuration and list its cells, without Snakemake.

Examples::

    ctbench grid check config/config.yaml          # one line per problem (file:line:column for broken YAML)
    ctbench grid cells config/demo.yaml            # every cell: its directory and training fingerprint

Snakemake's own message for a ``--configfile`` that is not valid YAML has no line number; this one has.
Relative paths inside the file (``hparams``, ``literature``) are read from the current folder, as the
workflow does from the repository root, or else from the grid file's folder or the first folder above it
that has them (``config/README.md``, "Paths"): ``ctbench grid check /repo/config/demo.yaml`` works anywhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="check a grid configuration, list its cells", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = p.add_subparsers(dest="grid_command", metavar="ACTION")
    gsub.required = True
    c = gsub.add_parser("check", help="validate a grid configuration (one line per problem)")
    c.add_argument("config", type=Path, help="grid configuration, e.g. config/config.yaml")
    c.set_defaults(func=_check)
    c = gsub.add_parser("cells", help="list the cells of a grid with their directories and fingerprints")
    c.add_argument("config", type=Path, help="grid configuration, e.g. config/config.yaml")
    c.set_defaults(func=_cells)


def _grid(path: Path):
    from ctbench.grid import Grid, load_yaml
    from ctbench.grid.load import resolve_paths

    return Grid(resolve_paths(load_yaml(path), path))


def _check(args: argparse.Namespace) -> int:
    grid = _grid(args.config)
    table1, ablations = len(grid.table1_cells()), len(grid.ablation_cells())
    print(f"{args.config}: valid; {len(grid.cells)} cells ({table1} in Table 1, {ablations} ablation cells)")
    return 0


def _cells(args: argparse.Namespace) -> int:
    grid = _grid(args.config)
    table1 = set(grid.table1_cells())
    for cell in grid.cells:
        kind = "table1" if cell in table1 else "ablation"
        print(f"{cell.dir}  {kind}  train {grid.fingerprints(cell)['train']}")
    return 0
