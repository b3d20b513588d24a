"""The option every stage command of the workflow shares: ``--settings FILE``, the stage settings file the
workflow writes for the job (``ctbench.stagefile``). The file replaces the command's settings flags (giving
both is refused), its fingerprint is recorded in the output and inputs made for other settings are refused.
By hand, the flags build the same settings and nothing is fingerprinted."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.errors import CTBenchError


def add_settings_arg(p: argparse.ArgumentParser, stage: str, flags: tuple[str, ...] = ()) -> None:
    """``--settings``; ``flags``: the destinations of the options the file replaces (refused beside it)."""
    p.add_argument("--settings", type=Path, metavar="FILE",
                   help=f"the stage settings file the workflow writes (<cell>/settings/{stage}.json); it replaces "
                   "this command's settings options, and inputs made for other settings are refused")
    p.set_defaults(settings_flags={dest: p.get_default(dest) for dest in flags})


def read_settings(args: argparse.Namespace, stage: str | tuple[str, ...]):
    """The checked :class:`ctbench.stagefile.StageFile` of ``--settings`` (None without it); one line when
    one of the options it replaces was given too."""
    if args.settings is None:
        return None
    given = [dest for dest, default in args.settings_flags.items() if getattr(args, dest) != default]
    if given:
        option = "--" + given[0].replace("_", "-")
        raise CTBenchError(f"{option} and --settings {args.settings} both set the job's settings: "
                           "give one or the other (the settings file is what the workflow runs)")
    from ctbench import stagefile

    return stagefile.read(args.settings, stage)


def provenance(sf) -> tuple[str | None, dict]:
    """(this stage's fingerprint computed from the settings applied, the inputs' expected fingerprints):
    ``(None, {})`` by hand. Call it after every setting was taken."""
    return (sf.applied(), sf.parents) if sf is not None else (None, {})
