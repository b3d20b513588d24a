"""Verifier agreement (paper App. D.3, Table 19): do complete verifiers that see every sample agree?

Input: several ``certify.h5``-format files of one cell, each written by a single verifier stage run on all
samples (the workflow's rule ``certify_verifier``, ``verifiers/<V>.h5``; root attribute ``stages`` = the
one stage that ran). Each file's certified vector is one "model" of the shared-mistakes histogram
(:mod:`ctbench.analysis.shared_mistakes`): observed count of samples certified by j of the k verifiers
against the Poisson-binomial expectation (Table 19's "neither / one / both certify" for k = 2).

Pairwise, every (A, B) gets the four agreement counts and the **soundness alarms**: samples certified by
one verifier and falsified (a checked counterexample) by the other. A sound verifier pair has none; any
alarm is printed as ``SOUNDNESS ALARM`` on stderr, in the Markdown, and in the ``alarm`` column
(``--fail-on-alarm`` turns it into exit status 1).

Outputs (``--out-dir``): ``verifier_agreement.{csv,md,tex,png,pdf}`` (histograms per cell) and
``verifier_agreement_pairs.{csv,md,tex}`` (columns ``dataset, eps, model, method, seed, verifier_a,
verifier_b, n, cert_a, cert_b, cert_union, both, only_a, only_b, neither, a_cert_b_falsified,
b_cert_a_falsified, alarm``; accuracies in percent). Both tables and the figure state their sample count
and data source (``shared_mistakes.data_note``: per verifier file, and per histogram).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.analysis import shared_mistakes as SM
from ctbench.errors import CTBenchError

NAME = "verifier_agreement"
INPUTS = {"verifiers": ("verifier", "verifiers/{verifier}.h5")}  # ctbench.analysis.protocol
ARGS = ("--fail-on-alarm",)  # a sample certified by one verifier and falsified by another fails the job
logger = logging.getLogger(__name__)


def verifier_name(item: C.Certificates) -> str:
    """The stage that ran (the file's root attribute ``stages``); several stages are joined with ``+``."""
    stages = item.stages
    if len(stages) != 1:
        logger.warning("%s ran %d stages (%s), expected one verifier stage", item.path, len(stages), stages)
    return "+".join(stages) or item.path.stem


def by_cell(items: Sequence[C.Certificates]) -> dict[C.Cell, list[tuple[str, C.Certificates]]]:
    """Files grouped by cell, each named by its verifier; two files of one verifier and cell are refused."""
    out: dict[C.Cell, list[tuple[str, C.Certificates]]] = {}
    for it in items:
        name = verifier_name(it)
        group = out.setdefault(it.cell, [])
        clash = [other.path for n, other in group if n == name]
        if clash:
            raise CTBenchError(f"two {name} files for one cell: {clash[0]} and {it.path}")
        group.append((name, it))
        _check_saw_all(it, name)
    return out


def _check_saw_all(item: C.Certificates, name: str) -> None:
    """Warn when the verifier did not process every correctly classified sample (it ran behind others)."""
    processed = item.data.get("stage_samples")
    correct = int(item.nat_correct.sum())
    if processed is not None and len(processed) and int(processed[-1]) < correct:
        logger.warning("%s: %s saw %d of the %d correctly classified samples (run it alone on all samples)",
                       item.path, name, int(processed[-1]), correct)


def pair_counts(cert_a, cert_b, fals_a, fals_b) -> dict:
    """Agreement of two verifiers on aligned (n,) bool vectors: the 2 × 2 counts and the alarms."""
    return {
        "both": int((cert_a & cert_b).sum()),
        "only_a": int((cert_a & ~cert_b).sum()),
        "only_b": int((~cert_a & cert_b).sum()),
        "neither": int((~cert_a & ~cert_b).sum()),
        "a_cert_b_falsified": int((cert_a & fals_b).sum()),
        "b_cert_a_falsified": int((cert_b & fals_a).sum()),
    }


def verifier_agreement(items: Sequence[C.Certificates], *, intersect: bool = False):
    """``(histograms, pairs)`` DataFrames: one histogram row per cell, one pair row per verifier pair."""
    import numpy as np
    import pandas as pd

    named, pairs = [], []
    for cell, members in sorted(by_cell(items).items(), key=lambda kv: kv[0].sort_key()):
        if len(members) < 2:
            raise CTBenchError(f"verifier agreement needs ≥ 2 verifier files per cell; {cell.label} "
                                 f"{cell.dataset} ε={cell.eps} seed{cell.seed} has only {members[0][1].path}")
        names = [n for n, _ in members]
        files = [it for _, it in members]
        rows = C.align(files, intersect=intersect, what=f"verifier files of {cell.label} {cell.dataset} ε={cell.eps}")
        cert = np.stack([it.certified[r] for it, r in zip(files, rows, strict=True)])
        fals = np.stack([it.falsified[r] for it, r in zip(files, rows, strict=True)])
        coords = {"dataset": cell.dataset, "eps": cell.eps, "model": cell.model, "method": cell.label,
                  "seed": cell.seed}
        named.append(({"comparison": "verifiers", **coords}, names, cert))
        for i, j in combinations(range(len(names)), 2):
            counts = pair_counts(cert[i], cert[j], fals[i], fals[j])
            alarm = counts["a_cert_b_falsified"] + counts["b_cert_a_falsified"] > 0
            pairs.append({**coords, "verifier_a": names[i], "verifier_b": names[j], "n": cert.shape[1],
                          "cert_a": 100 * cert[i].mean(), "cert_b": 100 * cert[j].mean(),
                          "cert_union": 100 * (cert[i] | cert[j]).mean(), **counts, "alarm": alarm})
    if not named:
        raise CTBenchError("no verifier files given")
    return SM.histogram_rows(named), pd.DataFrame(pairs)


def alarm_lines(pairs) -> list[str]:
    """One loud line per pair with certified-vs-falsified disagreements."""
    out = []
    for r in pairs[pairs["alarm"]].to_dict("records"):
        out.append(f"SOUNDNESS ALARM: {r['dataset']} ε={r['eps']} {r['model']} {r['method']} seed{r['seed']}: "
                   f"{r['a_cert_b_falsified']} samples certified by {r['verifier_a']} but falsified by "
                   f"{r['verifier_b']}, {r['b_cert_a_falsified']} certified by {r['verifier_b']} but falsified by "
                   f"{r['verifier_a']} — one of them is unsound (or the files are of different models)")
    return out


def figure(tables: list, out_stem: Path) -> list[Path]:
    """The histograms per cell (:func:`ctbench.analysis.shared_mistakes.histogram_figure`), titled by cell and
    verifiers; the sample note from ``df.attrs["data_note"]``."""
    from ctbench.analysis.gridtables import one_table, setting_name

    df, note = one_table(tables)
    return SM.histogram_figure(df, out_stem, title_of=lambda r: (
        f"{setting_name(r['dataset'], r['eps'])} {r['method']}: {r['members']}"), note=note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verifiers", nargs="+", required=True, type=Path,
                        help="single-verifier certify.h5 files (verifiers/<V>.h5), ≥ 2 per cell")
    parser.add_argument("--intersect", action="store_true",
                        help="compare files that cover different samples on their common samples (default: refuse)")
    parser.add_argument("--fail-on-alarm", action="store_true",
                        help="exit with status 1 when a sample is certified by one verifier and falsified by another")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, setting_name, with_note, write_tables

    items = C.read_all(args.verifiers, "verifier")
    hist, pairs = verifier_agreement(items, intersect=args.intersect)
    note = SM.data_note(items, hist, source="verifiers/<V>.h5", per="verifier file")
    alarms = alarm_lines(pairs)
    kmax = int(hist["k"].max())
    display = SM.display_histograms(hist, kmax)
    names = ["neither certify", "one certifies", "both certify"] if kmax == 2 else None
    latex = SM.histogram_latex(display, kmax, "CTBench Table 19 layout (ctbench analyze verifier_agreement)", names)
    written = write_tables(args.out_dir, NAME, hist, display=display, latex=latex,
                           title="Verifier agreement: # verifiers certifying each sample (Table 19)",
                           notes=[f"**{line}**" for line in alarms], data_note=note)
    disp = pairs.assign(setting=[setting_name(d, e) for d, e in zip(pairs.dataset, pairs.eps, strict=True)])
    disp = disp[["setting", "model", "method", "seed", "verifier_a", "verifier_b", "n", "cert_a", "cert_b",
                 "cert_union", "both", "only_a", "only_b", "neither", "a_cert_b_falsified", "b_cert_a_falsified",
                 "alarm"]]
    rows = [[latex_text(r["setting"]), latex_text(f"{r['method']} seed{r['seed']}"),
             latex_text(f"{r['verifier_a']} / {r['verifier_b']}"),
             *(fmt(r[k]) for k in ("cert_a", "cert_b", "cert_union")),
             *(str(r[k]) for k in ("both", "only_a", "only_b", "neither")),
             (r"\textbf{" if r["alarm"] else "") + f"{r['a_cert_b_falsified']} / {r['b_cert_a_falsified']}"
             + ("}" if r["alarm"] else "")] for r in disp.to_dict("records")]
    header = ["Setting", "Cell", "A / B", "Cert. A", "Cert. B", "Cert. A∪B", "both", "only A", "only B", "neither",
              "cert./falsified"]
    latex = latex_table(rows, [latex_text(h) for h in header], group_cols=2, text_cols=3,
                        comment="verifier pairs: agreement counts; last column = soundness alarms (must be 0 / 0)")
    written += write_tables(args.out_dir, f"{NAME}_pairs", pairs, display=disp, latex=latex,
                            title="Verifier pairs: agreement and soundness alarms", notes=[f"**{a}**" for a in alarms],
                            data_note=note)
    if not args.no_figure:
        written += figure([with_note(hist, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    for line in alarms:
        print(line, file=sys.stderr)
    return 1 if alarms and args.fail_on_alarm else 0
