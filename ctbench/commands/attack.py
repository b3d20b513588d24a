"""``ctbench attack``: PGD (with restarts) or AutoAttack on a model file → ``attack.h5``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.commands._evaluation import add_evaluation_args
from ctbench.commands._provenance import add_fingerprint_args
from ctbench.threads import add_threads_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="adversarial accuracy by PGD or AutoAttack", description=__doc__)
    add_evaluation_args(p, "attack.h5")
    p.add_argument(
        "--attack", default="pgd", help="pgd, autoattack, or both comma-separated (default: %(default)s)"
    )
    p.add_argument("--steps", type=int, default=200, help="PGD steps (default 200)")
    p.add_argument("--restarts", type=int, default=5, help="PGD restarts (default 5)")
    p.add_argument("--loss", choices=("ce", "margin"), default="ce", help="PGD loss (default: %(default)s)")
    p.add_argument("--certificates", type=Path, help="certify.h5: verifier counterexamples count as attacks")
    p.add_argument("--batch", type=int, default=256)
    add_fingerprint_args(p)
    add_threads_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from ctbench.certify.attack import attack_file
    from ctbench.fingerprint import parse_expect

    res = attack_file(
        args.model,
        args.out,
        eps=args.eps,
        attack=args.attack,
        steps=args.steps,
        restarts=args.restarts,
        loss=args.loss,
        dataset=args.dataset,
        split=args.split,
        n=args.n,
        start=args.start,
        batch_size=args.batch,
        device=args.device,
        certificates=args.certificates,
        seed=args.seed,
        data_root=args.data_root,
        fingerprint=args.fingerprint,
        expect=parse_expect(args.expect),
    )
    print(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return 0
