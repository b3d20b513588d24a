"""``ctbench attack``: PGD (with restarts) or AutoAttack on a model file → ``attack.h5``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.commands._evaluation import EVALUATION_FLAGS, add_evaluation_args
from ctbench.commands._provenance import add_settings_arg, provenance, read_settings
from ctbench.core import config_default
from ctbench.threads import add_threads_argument

#: the options a stage settings file replaces (``--settings``)
FLAGS = (*EVALUATION_FLAGS, "attack", "steps", "restarts", "loss", "batch", "check_every")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="adversarial accuracy by PGD or AutoAttack", description=__doc__)
    add_evaluation_args(p, "attack.h5")
    p.add_argument(
        "--attack", default="pgd", help="pgd, autoattack, or both comma-separated (default: %(default)s)"
    )
    p.add_argument("--steps", type=int, default=config_default("attack.steps"), help="PGD steps (default %(default)s)")
    p.add_argument("--restarts", type=int, default=config_default("attack.restarts"),
                   help="PGD restarts (default %(default)s)")
    p.add_argument("--loss", choices=("ce", "margin"), default="ce", help="PGD loss (default: %(default)s)")
    p.add_argument("--certificates", type=Path, help="certify.h5: verifier counterexamples count as attacks")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--check-every", type=int, default=10,
                   help="PGD steps between checks that stop attacking broken samples (default 10; 0: never)")
    add_settings_arg(p, "attack", FLAGS)
    add_threads_argument(p)
    p.set_defaults(func=_run)


def settings_of_flags(args: argparse.Namespace) -> dict:
    """The attack settings the options stand for, in the form of the grid's (``Grid.attack_settings``)."""
    return {"attack": args.attack.split(","), "steps": args.steps, "restarts": args.restarts, "n": args.n}


def applied(sf) -> dict:
    """``attack_file``'s keyword arguments from an attack job's settings; every setting is taken."""
    return {"attack": ",".join(sf.take("attack")), "steps": sf.take("steps"), "restarts": sf.take("restarts"),
            "n": sf.take("n")}


def _run(args: argparse.Namespace) -> int:
    import json

    from ctbench import stagefile
    from ctbench.certify.attack import attack_file

    sf = read_settings(args, "attack")
    kwargs = applied(sf or stagefile.in_memory("attack", settings_of_flags(args), args.eps))
    fingerprint, expect = provenance(sf)
    res = attack_file(
        args.model,
        args.out,
        eps=sf.eps if sf else args.eps,
        loss=args.loss,
        dataset=args.dataset,
        split=args.split,
        start=args.start,
        batch_size=args.batch,
        check_every=args.check_every,
        device=args.device,
        certificates=args.certificates,
        seed=args.seed,
        data_root=args.data_root,
        fingerprint=fingerprint,
        expect=expect,
        **kwargs,
    )
    print(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return 0
