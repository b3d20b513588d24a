"""``ctbench train``: train one (dataset, ε, method, seed) cell with the paper's hyperparameters.

Example::

    ctbench train --dataset mnist_mini --eps 0.1 --method pgd --seed 0 --model cnn_small --out results/x \\
        --set l1=1e-5 --scale-schedule 0.05     # 4 epochs: ramp and LR milestones shrunk with them

    ctbench train --cell results/mnist/0.1/cnn7/ibp/seed0/cell.json --out results/mnist/0.1/cnn7/ibp/seed0

Writes ``OUT/config.yaml`` (the resolved config, at the start), ``OUT/train/checkpoint.pt``,
``OUT/train/history.csv`` (per epoch), ``OUT/train/attempts.csv`` (wall time of every call that trained the
run, kept across resumes: ``ctbench analyze cost`` adds them up), ``OUT/train/candidates.pt`` and
``OUT/model.pt`` (unless ``--no-select``). Re-running the same command resumes from the checkpoint.
Hyperparameters come from ``config/hparams.yaml`` (``--hparams``): the setting of (dataset, ε) —
``mnist_mini`` uses the MNIST settings — or ``--setting``; ``--set key=value`` overrides any of them.
``--cell`` trains exactly the resolved config of a workflow cell (``cell.json``, written by the Snakemake
rule ``cell_config``).

Schedule checks (``ctbench.config.check_schedule``): a run whose ε ramp ends after its last epoch, whose LR
milestones or SWA start lie beyond it, is refused before anything is written (``--epochs 35`` alone keeps the
paper's milestones [50, 60]); ``--scale-schedule F`` shortens epochs, ramp, milestones and SWA together.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.commands._evaluation import accept_negative_numbers
from ctbench.errors import CTBenchError
from ctbench.io import check_writable
from ctbench.threads import add_threads_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one cell (dataset, eps, method, seed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    accept_negative_numbers(p)  # --eps -2/255 reaches the ε check
    p.add_argument("--cell", type=Path, help="a workflow cell's cell.json: train exactly its resolved config")
    p.add_argument("--dataset", help="dataset name (mnist, cifar10, tinyimagenet, mnist_mini)")
    p.add_argument("--eps", default=None, help="test eps of the setting, e.g. 0.1, 2/255 or 2_255")
    p.add_argument("--method", help="training method (standard, pgd, edac, ibp, ...)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--model", default=None, help="architecture (default: the setting's, cnn7)")
    p.add_argument("--out", help="output directory of the cell (required unless --print-config)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    p.add_argument("--hparams", default=None, help="hyperparameter file (default: config/hparams.yaml)")
    p.add_argument(
        "--setting", default=None, help="setting key, e.g. mnist_0.1 (default: from dataset and eps)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter (repeatable), e.g. --set l1=1e-5",
    )
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--scale-schedule", type=float, default=None, metavar="F",
                   help="quick run: multiply epochs, the eps ramp, the LR milestones and swa_start by F in (0, 1] "
                        "together (config key schedule_scale)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default auto)")
    p.add_argument(
        "--data-root", default=None, help="prepared data root (default $CTBENCH_DATA_ROOT or ./data)"
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="stop after this many completed epochs (checkpoint kept; re-run to resume)",
    )
    add_threads_argument(p)
    p.add_argument("--max-steps", type=int, default=None, help="cap the steps per epoch (quick runs, tests)")
    p.add_argument("--subset", type=int, default=None, help="use only the first N train and test samples")
    p.add_argument("--no-select", dest="select", action="store_false",
                   help="stop at train/candidates.pt; `ctbench select` writes model.pt (the DAG does this)")
    p.add_argument("--on-config-change", choices=["error", "restart"], default="error",
                   help="a checkpoint from another config: refuse (default) or train afresh (the DAG)")
    p.set_defaults(func=run)


def _cell_config(args: argparse.Namespace) -> tuple[dict, dict]:
    """``(config, run options)`` from a cell.json; refuses flags that would change what it says."""
    import json

    from ctbench.fingerprint import train_fingerprint
    from ctbench.grid import CELL_FORMAT

    given = [f"--{k.replace('_', '-')}" for k in ("dataset", "eps", "method", "model", "setting", "epochs",
                                                  "scale_schedule", "subset", "max_steps", "hparams")
             if getattr(args, k) is not None]
    if given or args.overrides:
        raise CTBenchError(f"--cell is the complete configuration: drop {', '.join(given) or '--set'}")
    try:
        cell = json.loads(args.cell.read_text())
    except (OSError, ValueError) as e:
        raise CTBenchError(f"cannot read cell file {args.cell}: {e}") from None
    if not isinstance(cell, dict) or cell.get("format") != CELL_FORMAT:
        raise CTBenchError(f"{args.cell} is not a ctbench cell file (format {CELL_FORMAT})")
    try:
        config, limits, version = dict(cell["config"]), dict(cell.get("limits") or {}), int(cell["versions"]["train"])
        recorded = cell["fingerprints"]["train"]
    except (KeyError, TypeError, ValueError) as e:
        raise CTBenchError(f"{args.cell} is not a complete ctbench cell file (missing or bad {e}); "
                           "let the workflow rewrite it") from None
    if train_fingerprint(config, limits, version) != recorded:
        raise CTBenchError(f"{args.cell}: its fingerprint does not match its content (edited by hand?); "
                           "let the workflow rewrite it")
    return config, {"subset": limits.get("subset"), "max_steps": limits.get("max_steps"), "version": version}


def build_config(args: argparse.Namespace) -> dict:
    """Validate the command line and resolve the config (raises CTBenchError; writes nothing)."""
    from ctbench.config import find_setting, load_hparams, parse_overrides, resolve
    from ctbench.core import SETTING_DATASET, parse_eps
    from ctbench.data import get_spec
    from ctbench.methods import get_method
    from ctbench.models import MODELS

    if args.dataset is None or args.method is None:
        raise CTBenchError("give --dataset and --method (or --cell)")
    get_method(args.method)
    get_spec(args.dataset)
    if args.model is not None:
        MODELS.get(args.model)
    for name, value in (
        ("--epochs", args.epochs),
        ("--max-epochs", args.max_epochs),
        ("--max-steps", args.max_steps),
        ("--subset", args.subset),
    ):
        if value is not None and value < 1:
            raise CTBenchError(f"{name} must be >= 1, got {value}")
    if args.eps is None and args.setting is None:
        raise CTBenchError("give --eps (or --setting)")
    eps = parse_eps(args.eps) if args.eps is not None else None
    hparams = load_hparams(args.hparams)
    if args.setting is not None:
        setting = args.setting
        if setting not in hparams["settings"]:
            raise CTBenchError(
                f"unknown setting {setting!r}; known: {', '.join(sorted(hparams['settings']))}"
            )
        s_data = hparams["settings"][setting]["dataset"]
        if SETTING_DATASET.get(args.dataset, args.dataset) != s_data:
            raise CTBenchError(
                f"--dataset {args.dataset} does not match setting {setting} (dataset {s_data})"
            )
        s_eps = parse_eps(hparams["settings"][setting]["eps"])
        if eps is not None and abs(s_eps - eps) > 1e-12:
            raise CTBenchError(f"--eps {args.eps} does not match setting {setting} (eps {s_eps:g})")
    else:
        setting = find_setting(hparams, args.dataset, eps)
    overrides = parse_overrides(args.overrides)
    if args.model is not None:
        overrides["model"] = args.model
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.scale_schedule is not None:
        if not 0 < args.scale_schedule <= 1:
            raise CTBenchError(f"--scale-schedule must lie in (0, 1], got {args.scale_schedule}")
        overrides["schedule_scale"] = args.scale_schedule
    config = resolve(setting, args.method, overrides, hparams=hparams, seed=args.seed)
    config["dataset"] = args.dataset
    return config


def run(args: argparse.Namespace) -> int:
    if args.cell is not None:
        config, limits = _cell_config(args)
    else:
        config, limits = build_config(args), {"subset": args.subset, "max_steps": args.max_steps, "version": 1}
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config, sort_keys=True), end="")
        return 0
    if args.out is None:
        raise CTBenchError("give --out (the cell's output directory)")
    out = Path(args.out)
    check_writable(out, directory=True)  # "cannot write OUT: <why>" before anything is written
    from ctbench.core import resolve_device

    resolve_device(args.device)  # one line for --device cuda without CUDA, before any data is loaded

    from ctbench.training import TrainOptions, train

    summary = train(
        config,
        out,
        TrainOptions(
            device=args.device,
            data_root=args.data_root,
            max_epochs=args.max_epochs,
            select=args.select,
            on_config_change=args.on_config_change,
            **limits,
        ),
    )
    if summary["status"] != "done":
        print(f"stopped after {summary['epochs_done']} epochs; re-run the same command to resume")
    elif args.select:
        print(
            f"trained {config['method']} on {config['dataset']} eps {config['eps_str']} "
            f"seed {config['seed']}: "
            f"{summary['model_path']} ({summary['selection']}, epoch {summary['selected_epoch']})"
        )
    else:
        print(f"trained {config['method']} on {config['dataset']} eps {config['eps_str']} seed {config['seed']}: "
              f"{summary['candidates_path']} (select with `ctbench select`)")
    return 0
