"""``ctbench certify``: the certification cascade on a model file → ``certify.h5`` (docs/certificates.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.commands._evaluation import EVALUATION_FLAGS, add_evaluation_args
from ctbench.commands._provenance import add_settings_arg, provenance, read_settings
from ctbench.core import config_default
from ctbench.threads import add_threads_argument

#: the options a stage settings file replaces (``--settings``)
FLAGS = (*EVALUATION_FLAGS, "stages", "abcrown_config", "timeout", "batch", "complete_limit", "pgd_steps",
         "pgd_restarts", "pgd_loss", "pgd_targets", "pgd_check_every", "alpha_iterations", "bab_batch", "bab_beta",
         "recheck_threshold")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certify",
        help="certify a model: IBP → CROWN-IBP → CROWN → alpha-CROWN → PGD → BaB",
        description=__doc__,
    )
    add_evaluation_args(p, "certify.h5")
    p.add_argument(
        "--stages",
        default="paper",
        help="comma-separated cascade, or a preset: paper = IBP,CROWN-IBP,CROWN,alpha-CROWN,PGD,BaB (default); "
        "exact = IBP,CROWN,PGD,MILP (small networks: MILP decides every sample); abcrown = the paper's with "
        "alpha-beta-CROWN (found via $CTBENCH_ABCROWN) instead of BaB. The external verifiers abCROWN and "
        "Marabou are used only if available",
    )
    p.add_argument(
        "--abcrown-config",
        type=Path,
        help="alpha-beta-CROWN YAML merged under the generated keys (solver, branching, batch sizes)",
    )
    p.add_argument("--timeout", type=float, default=float(config_default("certify.timeout")),
                   help="per-sample budget (s) of the complete stages (default %(default)s)")
    p.add_argument("--batch", type=int, default=config_default("certify.batch"),
                   help="batch size of the bound/attack stages (default %(default)s)")
    p.add_argument(
        "--complete-limit",
        type=int,
        help="only the first N samples may reach the complete stages (BaB, MILP, external verifiers); the rest "
        "stay undecided — paper Table 1's rule for PGD/EDAC models (N = 10). Default: every sample",
    )
    p.add_argument("--pgd-steps", type=int, default=config_default("certify.falsifier.steps"),
                   help="PGD steps (default %(default)s)")
    p.add_argument("--pgd-restarts", type=int, default=config_default("certify.falsifier.restarts"),
                   help="PGD restarts (default %(default)s)")
    p.add_argument("--pgd-loss", choices=("margin", "ce"), default=config_default("certify.falsifier.loss"),
                   help="the falsifier's loss: margin (default) or ce (the original code's cross-entropy)")
    p.add_argument("--pgd-targets", type=int, default=config_default("certify.falsifier.targets"),
                   help="runner-up classes the falsifier's restarts target in turn (default %(default)s; "
                   "0: untargeted)")
    p.add_argument("--pgd-check-every", type=int, default=10,
                   help="falsifier steps between checks that stop searching broken samples (default 10; 0: at the "
                   "end of each restart)")
    p.add_argument("--alpha-iterations", type=int, default=20, help="alpha-CROWN iterations (default 20)")
    p.add_argument("--bab-batch", type=int, default=64, help="subdomains bounded per BaB call (default 64)")
    p.add_argument(
        "--no-bab-beta",
        dest="bab_beta",
        action="store_false",
        help="BaB without beta-CROWN multipliers of the split constraints (looser, for comparison)",
    )
    p.add_argument(
        "--recheck-threshold",
        type=float,
        default=1e-2,
        help="bound decisions with 0 < margin <= this are re-checked in float64 (default 0.01)",
    )
    add_settings_arg(p, "certify", FLAGS)
    add_threads_argument(p)
    p.set_defaults(func=_run)


def settings_of_flags(args: argparse.Namespace) -> dict:
    """The certify settings the options stand for, in the form of the grid's (``Grid.certify_settings``)."""
    return {"stages": args.stages.split(","), "timeout": args.timeout, "n": args.n, "batch": args.batch,
            "abcrown_config": str(args.abcrown_config) if args.abcrown_config else None,
            "complete_limit": args.complete_limit,
            "falsifier": {"loss": args.pgd_loss, "targets": args.pgd_targets, "steps": args.pgd_steps,
                          "restarts": args.pgd_restarts}}


def applied(sf) -> dict:
    """``certify_file``'s keyword arguments from the settings of a certify job (``settings/certify.json``,
    or the flags' :func:`settings_of_flags`) or of a verifier job (``settings/verifier_<stage>.json``: one
    stage, no falsifier or complete-stage limit); every setting is taken (``ctbench.stagefile``)."""
    if sf.stage.startswith("verifier_"):
        kw = {"stages": (sf.take("stage"),)}
    else:
        kw = {"stages": tuple(sf.take("stages")), "complete_limit": sf.take("complete_limit"),
              **{f"pgd_{k}": sf.take(f"falsifier.{k}") for k in ("loss", "targets", "steps", "restarts")}}
    return {**kw, "timeout": sf.take("timeout"), "n": sf.take("n"), "batch_size": sf.take("batch"),
            "abcrown_config": sf.take("abcrown_config") or ""}


def _run(args: argparse.Namespace) -> int:
    import json

    from ctbench import stagefile
    from ctbench.certify import certify_file

    sf = read_settings(args, ("certify", "verifier_"))
    kwargs = applied(sf or stagefile.in_memory("certify", settings_of_flags(args), args.eps))
    fingerprint, expect = provenance(sf)
    counts = certify_file(
        args.model,
        args.out,
        eps=sf.eps if sf else args.eps,
        dataset=args.dataset,
        split=args.split,
        start=args.start,
        device=args.device,
        data_root=args.data_root,
        pgd_check_every=args.pgd_check_every,
        alpha_iterations=args.alpha_iterations,
        bab_batch=args.bab_batch,
        bab_beta=args.bab_beta,
        seed=args.seed,
        recheck_threshold=args.recheck_threshold,
        fingerprint=fingerprint,
        expect=expect,
        **kwargs,
    )
    print(json.dumps(counts, indent=1))
    print(f"wrote {args.out}")
    return 0
