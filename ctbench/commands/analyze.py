"""``ctbench analyze NAME ...``: one of the paper's analyses (ctbench.analysis); ``ctbench figure``
draws a per-model analysis' figure from its stored tables (re-drawing never re-runs an analysis).

Examples::

    ctbench analyze utilization --model results/mnist/0.1/cnn7/ibp/seed0/model.pt --eps 0.1 \\
        --out results/mnist/0.1/cnn7/ibp/seed0/analysis/utilization.parquet
    ctbench analyze fragmentation --help                      # the analysis' own options
    ctbench figure utilization results/*/*/*/*/seed0/analysis/utilization.parquet --out results/analysis/utilization
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.analysis import ANALYSES, get, load
from ctbench.commands._evaluation import accept_negative_numbers
from ctbench.errors import CTBenchError
from ctbench.threads import add_threads_argument


def _listing() -> str:
    width = max(map(len, ANALYSES))
    return "\n".join(f"  {name:<{width}}  [{e.kind}] {e.summary}" for name, e in ANALYSES.items())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="the paper's analyses of models and of the grid (see `ctbench analyze --help`)",
        description=f"{__doc__}\nAnalyses:\n{_listing()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_threads_argument(p)
    p.add_argument("name", metavar="NAME", help="analysis (listed above)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the analysis' options (NAME --help lists them)")
    p.set_defaults(func=_run)

    f = sub.add_parser("figure", help="draw a per-model analysis' figure (PNG + PDF) from its tables",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("name", metavar="NAME", help="analysis whose tables are drawn")
    f.add_argument("tables", nargs="+", type=Path, help="its Parquet tables (one per model)")
    f.add_argument("--metrics", nargs="+", type=Path, default=[],
                   help="the cells' metrics.json, matched to the tables by the model's sha256 (tightness: "
                   "Fig. 5's y-axis is the certification cascade's certified accuracy)")
    f.add_argument("--out", type=Path, required=True, help="output stem: writes STEM.png and STEM.pdf")
    f.set_defaults(func=_figure)


def _run(args: argparse.Namespace) -> int:
    entry = get(args.name)
    module = load(args.name)
    parser = argparse.ArgumentParser(prog=f"ctbench analyze {args.name}", description=entry.summary)
    accept_negative_numbers(parser)  # --eps -2/255 reaches the ε check
    module.add_arguments(parser)
    parsed = parser.parse_args(args.args)
    if getattr(parsed, "settings", None) is not None:  # a per-model analysis run by the workflow
        from ctbench.analysis import apply_settings

        apply_settings(parser, parsed, module.SETTINGS, f"analysis_{args.name}")
    return int(module.run(parsed) or 0)


def _figure(args: argparse.Namespace) -> int:
    from ctbench.analysis.tables import read_table

    if get(args.name).kind != "model":
        raise CTBenchError(f"analysis {args.name!r} has no figure drawn from stored tables: "
                           f"`ctbench analyze {args.name}` draws it")
    module = load(args.name)
    tables = [read_table(p) for p in args.tables]
    if args.metrics:
        if "metrics" not in module.FIGURE_INPUTS:
            raise CTBenchError(f"the {args.name} figure does not use --metrics")
        from ctbench.analysis.tables import with_certification

        frames = with_certification(tables, args.metrics)
    else:
        frames = [df for df, _ in tables]
    written = module.figure(frames, args.out)
    for path in written:
        print(f"wrote {path}")
    return 0
