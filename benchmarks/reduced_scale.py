"""The reduced-scale reproduction on real MNIST (benchmarks/README.md, issue 26): keep a finished run's small
files in the repository and print the README table's rows from them.

Two commands::

    python benchmarks/reduced_scale.py keep RESULTS OUT     # copy the small files of every finished cell
    python benchmarks/reduced_scale.py rows OUT              # the README's markdown rows, from OUT only

``keep`` copies, per finished cell ``RESULTS/{dataset}/{eps}/{model}/{method}/seed{seed}/`` (one with a
``metrics.json``), the files that say what ran and what came out — ``metrics.json`` (the summary row of
``ctbench summarize``), ``config.yaml`` (the resolved training config), ``train/history.csv``,
``train/attempts.csv`` and Snakemake's ``benchmarks/*.tsv`` (wall and CPU time per job) — to
``OUT/{eps}/{method}/``, plus ``RESULTS/table1.md`` / ``ablations.md`` when present. No model files.

``rows`` reads only those copies, so the table can be re-read and compared later: per cell nat / cert / adv
(percent of the certified samples), IBP-certified, the samples each later bound stage certified, timeouts,
cert ∧ attacked (certified samples the attack broke: must be 0), training wall time (all attempts) with
Snakemake's CPU time, certification + attack wall time, and the CTBench paper's CNN7 values
(``config/literature.yaml``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import yaml

from ctbench import core

ROOT = Path(__file__).resolve().parents[1]
SMALL_FILES = ("metrics.json", "config.yaml", "train/history.csv", "train/attempts.csv")
LATER_STAGES = ("CROWN-IBP", "CROWN", "alpha-CROWN", "BaB")
METHOD_ORDER, NAMES = core.METHOD_ORDER, core.METHOD_NAMES  # the paper's order and display names


def keep(results: Path, out: Path) -> list[Path]:
    """Copy the small files of every finished cell under ``results`` to ``out``; returns the cell folders."""
    kept = []
    for metrics in sorted(results.glob("*/*/*/*/seed*/metrics.json")):
        cell = metrics.parent
        eps, method = cell.parts[-4], cell.parts[-2]
        dest = out / eps / method
        for rel in SMALL_FILES:
            if (cell / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cell / rel, dest / rel)
        for tsv in sorted((cell / "benchmarks").glob("*.tsv")):
            (dest / "benchmarks").mkdir(parents=True, exist_ok=True)
            shutil.copy2(tsv, dest / "benchmarks" / tsv.name)
        kept.append(dest)
    for name in ("table1.md", "ablations.md"):
        if (results / name).is_file():
            shutil.copy2(results / name, out / name)
    return kept


def _tsv(path: Path) -> dict:
    if not path.is_file():
        return {}
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return rows[-1] if rows else {}


def _minutes(seconds) -> str:
    return "?" if seconds is None else f"{float(seconds) / 60:.1f} min"


def train_time(cell: Path) -> tuple[float | None, float | None]:
    """(wall s over all attempts of ``ctbench train``, Snakemake's CPU s of the last train job)."""
    wall = None
    attempts = cell / "train" / "attempts.csv"
    if attempts.is_file():
        with attempts.open() as f:
            wall = sum(float(r["wall_s"]) for r in csv.DictReader(f))
    cpu = _tsv(cell / "benchmarks" / "train.tsv").get("cpu_time")
    return wall, (float(cpu) if cpu not in (None, "", "NA") else None)


def row(cell: Path, literature: dict) -> list[str]:
    """One markdown row of the README table for the kept cell folder ``cell`` (``OUT/{eps}/{method}``)."""
    m = json.loads((cell / "metrics.json").read_text())
    eps, method = cell.parts[-2], cell.parts[-1]
    pct = lambda key: "–" if m.get(key) is None else f"{100 * m[key]:.1f}"  # noqa: E731
    stages, prev, by = [], m.get("cert_acc_upto_IBP", 0.0), []
    for s in LATER_STAGES:
        key = f"cert_acc_upto_{s}"
        if key in m:
            by.append(str(round((m[key] - prev) * m["n"])))
            stages.append(s)
            prev = m[key]
    if "decided_by_BaB" in m:  # BaB is a complete stage (no cert_acc_upto): its certified samples are the rest
        by.append(str(round((m["cert_acc"] - prev) * m["n"])))
        stages.append("BaB")
    wall, cpu = train_time(cell)
    certify_attack = sum(float(_tsv(cell / "benchmarks" / f"{s}.tsv").get("s") or 0) for s in ("certify", "attack"))
    paper, lit = None, literature.get("table1", {}).get(f"mnist_{eps}", {}).get(method)
    if lit:
        paper = " / ".join("–" if v is None else f"{v:g}" for v in (lit[1], lit[3], lit[4]))
    elif method == "standard":
        paper = f"{literature.get('standard_nat', {}).get('mnist', '–')} / – / –"
    return [eps, NAMES.get(method, method), pct("nat_acc"), pct("cert_acc"), pct("adv_acc"), pct("ibp_acc"),
            " / ".join(by) + f" ({' / '.join(stages)})", str(m.get("count_timeout", "?")),
            str(m.get("certified_but_attacked", "?")),
            f"{_minutes(wall)} ({_minutes(cpu)})", _minutes(certify_attack), paper or "–"]


HEADER = ["ε", "method", "nat", "cert", "adv", "IBP-cert", "certified by later stages", "timeouts",
          "cert ∧ attacked", "train wall (CPU)", "certify + attack wall", "paper CNN7 nat / cert / adv"]


def rows(out: Path) -> str:
    literature = yaml.safe_load((ROOT / "config" / "literature.yaml").read_text())
    cells = sorted((p.parent for p in out.glob("*/*/metrics.json")),
                   key=lambda c: (c.parts[-2], METHOD_ORDER.index(c.parts[-1]) if c.parts[-1] in METHOD_ORDER else 99))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(c, literature)) + " |" for c in cells]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keep", help="copy the small files of every finished cell")
    k.add_argument("results", type=Path)
    k.add_argument("out", type=Path)
    r = sub.add_parser("rows", help="print the README table from kept files")
    r.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.command == "keep":
        if not args.results.is_dir():
            print(f"reduced_scale: {args.results} is not a folder", file=sys.stderr)
            return 2
        for cell in keep(args.results, args.out):
            print(cell)
        return 0
    if not args.out.is_dir():
        print(f"reduced_scale: {args.out} is not a folder", file=sys.stderr)
        return 2
    print(rows(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
