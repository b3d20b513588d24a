"""Outputs whose inputs are gone or changed: what Snakemake's own up-to-date rule does not see.

Snakemake re-makes a missing file only when a job that needs it has to run, and a job whose outputs exist
and are newer than its *existing* inputs does not: after ``certify.h5`` is deleted, ``metrics.json`` and
``table1.csv`` still look current and the run says "Nothing to be done" while the table shows numbers
from a file that no longer exists. This module finds such outputs in a cell
(``results/{dataset}/{eps}/{model}/{run}/seed{seed}/``):

========================  =============================================  ===============
stage (its output)        is stale when                                  it is made from
========================  =============================================  ===============
certify (certify.h5)      model.pt is missing                            model.pt
attack (attack.h5)        model.pt or certify.h5 is missing, or          both
                          certify.h5 is not the one it was made from
summarize (metrics.json)  certify.h5 or attack.h5 is missing, or their   both
                          fingerprints differ from those metrics.json
                          records (a file put back from another run)
========================  =============================================  ===============

and, for the grid's tables, a table whose cells' ``metrics.json`` are missing (:func:`table_problem`).
Only what the files on disk record is compared, never the current configuration: a changed configuration
is Snakemake's params trigger's to see, and a dry run of another configuration must leave no note behind.

The workflow (``workflow/rules/common.smk``) writes a *redo note* for each stale output — a small text
file saying when and why, ``<cell>/logs/redo-<stage>.txt`` or ``results/logs/redo-<table rule>.txt`` —
and gives every such rule its note as an extra input when it exists: a note newer than the output (and
with new content) makes Snakemake re-run the rule, which re-makes the missing inputs first and then
everything after it. Only the main Snakemake process writes notes (never a cluster job's own process).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

#: (stage, its output, what it is made from) per cell, in DAG order.
CELL_STAGES = (
    ("certify", "certify.h5", ("model.pt",)),
    ("attack", "attack.h5", ("model.pt", "certify.h5")),
    ("summarize", "metrics.json", ("certify.h5", "attack.h5")),
)
#: the input files whose recorded fingerprint metrics.json keeps (file → fingerprint key).
SUMMARY_INPUTS = {"certify.h5": "certify", "attack.h5": "attack"}


def redo_note(directory: str | Path, stage: str) -> str:
    """Where the redo note of ``stage`` (a cell stage or a table rule) lives under ``directory``."""
    return f"{directory}/logs/redo-{stage}.txt"


def _h5_fingerprints(path: Path) -> dict | None:
    """The ``fingerprints`` root attribute of a ctbench HDF5 file (None when it cannot be read)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            value = f.attrs.get("fingerprints")
    except (OSError, ImportError):
        return None
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _recorded_fingerprints(metrics: Path) -> dict:
    try:
        return dict(json.loads(metrics.read_text()).get("fingerprints") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def cell_problems(cell_dir: str | Path) -> dict[str, str]:
    """Stage → why its existing output is stale, for one cell directory (empty when all is consistent).

    Only what the cell's own files say is compared — never the current configuration: a changed
    configuration is Snakemake's params trigger's to see, and a dry run of another configuration must not
    leave notes behind that would re-run a cell under this one."""
    d = Path(cell_dir)
    problems: dict[str, str] = {}
    for stage, output, inputs in CELL_STAGES:
        if not (d / output).exists():
            continue
        missing = [name for name in inputs if not (d / name).exists()]
        if missing:
            problems[stage] = f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    if "attack" not in problems and (d / "attack.h5").exists():
        made_from = (_h5_fingerprints(d / "attack.h5") or {}).get("certify")
        actual = (_h5_fingerprints(d / "certify.h5") or {}).get("certify")
        if made_from and actual and made_from != actual:
            problems["attack"] = (f"certify.h5 (fingerprint {actual[:12]}) is not the file attack.h5 was made "
                                  f"from ({made_from[:12]})")
    metrics = d / "metrics.json"
    if "summarize" not in problems and metrics.exists():
        recorded = _recorded_fingerprints(metrics)
        for name, key in SUMMARY_INPUTS.items():
            actual = (_h5_fingerprints(d / name) or {}).get(key)
            if recorded.get(key) and actual and actual != recorded[key]:
                problems["summarize"] = (f"{name} (fingerprint {actual[:12]}) is not the file metrics.json was "
                                         f"made from ({recorded[key][:12]})")
                break
    return problems


def table_problem(table: str | Path, manifest: str | Path) -> str | None:
    """Why an existing table is stale, else None: a ``metrics.json`` of the cells it was made from (those of
    its ``results/manifest/*.json`` on disk, written with it — not the current configuration's, which a dry
    run of another configuration must not turn into notes) is missing."""
    if not Path(table).exists():
        return None
    try:
        dirs = [entry["dir"] for entry in json.loads(Path(manifest).read_text())["cells"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no manifest (or not one of ours): the manifest rule re-makes it, and the table after it
    missing = [d for d in dirs if not (Path(d) / "metrics.json").exists()]
    if not missing:
        return None
    if len(missing) == 1:
        return f"{missing[0]}/metrics.json is missing"
    return f"{missing[0]}/metrics.json and those of {len(missing) - 1} more cells are missing"


def write_redo_note(path: str | Path, output: str, reason: str) -> None:
    """Record why ``output`` is re-made; the content changes every time (Snakemake compares checksums)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
    with open(path, "a") as f:
        f.write(f"{stamp} {output} is re-made: {reason}\n")
