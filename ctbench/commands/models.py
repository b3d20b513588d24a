"""``ctbench models list``: the model registry with parameter counts per dataset."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered architectures", description=__doc__)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    lp = msub.add_parser("list", help="architectures and their parameter counts")
    lp.add_argument(
        "--datasets", nargs="+", default=["mnist", "cifar10", "tinyimagenet"], help="datasets to size the models for"
    )
    lp.set_defaults(func=_list)


def _list(args: argparse.Namespace) -> int:
    # Counted from the layer plans that ctbench.models builds the networks from (ctbench.architectures) and
    # the dataset registry: no network is built and torch is not imported, so listing is instant.
    from ctbench.architectures import PLANS, parameter_count, plan
    from ctbench.data import get_spec

    specs = [get_spec(ds) for ds in args.datasets]  # unknown names: CTBenchError listing the known
    header = ["model", *args.datasets]
    rows = [header]
    for name in sorted(PLANS):  # = ctbench.models.MODELS, in its (sorted) order
        rows.append([name, *(f"{parameter_count(plan(name, s.shape, s.num_classes)):,}" for s in specs)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0
