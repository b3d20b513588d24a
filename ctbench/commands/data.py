"""``ctbench data``: list the dataset registry, prepare (stage / download / verify) a dataset, print stats.

Examples::

    ctbench data list
    ctbench data prepare mnist --source-dir /shared/MNIST/raw     # verify + stage, prints the location
    ctbench data prepare cifar10 --download
    ctbench data stats mnist --split train                       # N and per-channel mean/std
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``data`` and its subcommands ``list``, ``prepare``, ``stats``."""
    parser = subparsers.add_parser(
        "data",
        help="datasets: list, prepare (verify/stage/download), stats",
        description="Datasets (CTBench App. C.1). Data root: --root, else $CTBENCH_DATA_ROOT, else ./data; "
        "local source: --source-dir, else $CTBENCH_DATA_SOURCE.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("list", help="the dataset registry and whether each is present in the root")
    p.add_argument("--root", help="prepared-data root (default: $CTBENCH_DATA_ROOT or ./data)")
    p.set_defaults(func=_list)

    p = sub.add_parser("prepare", help="make a dataset present and verified; prints its location")
    p.add_argument("name", help="dataset name (see `ctbench data list`)")
    _add_source_args(p)
    p.set_defaults(func=_prepare)

    p = sub.add_parser(
        "stats", help="number of samples and per-channel mean/std of a split (no augmentation)"
    )
    p.add_argument("name", help="dataset name")
    p.add_argument("--split", default="train", help="train or test (default: train)")
    p.add_argument("--batch-size", type=int, default=1000)
    _add_source_args(p)
    p.set_defaults(func=_stats)
    return parser


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="prepared-data root (default: $CTBENCH_DATA_ROOT or ./data)")
    p.add_argument(
        "--source-dir", help="local folder with the official files (default: $CTBENCH_DATA_SOURCE)"
    )
    p.add_argument(
        "--download", action="store_true", help="download from the official source (needs internet)"
    )


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _list(args: argparse.Namespace) -> int:
    from ctbench.data import DATASETS, resolve_root

    root = resolve_root(args.root)
    header = ("name", "shape", "classes", "mean", "std", "present", "source")
    rows = [header]
    for name, spec in DATASETS.items():
        present = "yes" if spec.present(root) else "no"
        shape = "x".join(str(s) for s in spec.shape)
        rows.append(
            (name, shape, str(spec.num_classes), _fmt(spec.mean), _fmt(spec.std), present, spec.source)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"data root: {root}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ctbench.data import prepare_dataset

    print(prepare_dataset(args.name, args.root, source_dir=args.source_dir, download=args.download))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from ctbench.data import dataset_stats, get_spec, load_dataset
    from ctbench.errors import CTBenchError

    spec = get_spec(args.name)
    if args.batch_size < 1:
        raise CTBenchError(f"--batch-size must be >= 1, got {args.batch_size}")
    ds = load_dataset(
        args.name, args.split, args.root, source_dir=args.source_dir, download=args.download, augment=False
    )
    n, mean, std = dataset_stats(ds, args.batch_size)
    print(f"{args.name} {args.split}: N={n} mean={_fmt(mean.tolist())} std={_fmt(std.tolist())}")
    print(f"registry: mean={_fmt(spec.mean)} std={_fmt(spec.std)}")
    return 0
