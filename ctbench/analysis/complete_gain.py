"""Incomplete vs complete certification (paper App. D.5, Table 22): what do BaB/MILP add over IBP and CROWN-IBP?

Per cell, from the stage columns of ``certify.h5`` exactly as ``ctbench summarize`` computes them
(:func:`ctbench.certify.summarize.summarize`, cumulative in cascade order over the bound stages):

* ``ibp`` — certified by IBP alone; ``crown_ibp`` — by IBP or CROWN-IBP (CTBench's CROWN-IBP with cut
  points is never looser than IBP, so this is CROWN-IBP-only certification);
* ``cascade`` — certified by any stage (Table 22's MN-BaB column: complete when the cascade ends with a
  complete verifier and ``undecided`` = ``unknown`` + ``timeout`` is 0);
* ``nat``, ``adv`` (with ``--attack``: the attack file of the same cell, matched by its attributes);
* ``gain_ibp`` = cascade − IBP, ``gain_crown_ibp`` = cascade − CROWN-IBP (percentage points).

Outputs (``--out-dir``): ``complete_gain.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method,
seed, n, nat, ibp, crown_ibp, cascade, adv, gain_ibp, gain_crown_ibp, complete_stages, undecided``
(accuracies in percent). The tables and the figure state the sample count and data source (``df.attrs
["data_note"]``: ``n`` per cell and which test samples, from ``certify.h5``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "complete_gain"
INPUTS = {"certify": ("all", "certify.h5"), "attack": ("all", "attack.h5")}  # ctbench.analysis.protocol
COMPLETE_KIND = "complete"


def attack_files(paths) -> dict[C.Cell, Path]:
    """``attack.h5`` files by their cell (root attributes); two for one cell are refused."""
    from ctbench.certify import hdf5

    out: dict[C.Cell, Path] = {}
    for p in C.require(paths or [], "attack"):
        _, attrs = hdf5.read_h5(p)
        cell = C.cell_of(attrs, p)
        if cell in out:
            raise CTBenchError(f"two attack files for one cell: {out[cell]} and {p}")
        out[cell] = p
    return out


def gain_row(item: C.Certificates, attack_path: str | Path | None = None) -> dict:
    """One Table 22 row for one ``certify.h5`` (percent)."""
    from ctbench.certify.summarize import summarize

    s = summarize(item.path, attack_path)
    attrs, cell = item.attrs, item.cell
    kinds = list(attrs.get("stage_margin_kinds") or [])
    complete = [st for st, k in zip(attrs.get("stages") or [], kinds, strict=False) if k == COMPLETE_KIND]
    pct = {k: 100.0 * float(s[v]) for k, v in (("nat", "nat_acc"), ("ibp", "ibp_acc"),
                                                 ("crown_ibp", "crown_ibp_acc"), ("cascade", "cert_acc"))}
    return {"dataset": cell.dataset, "eps": cell.eps, "model": cell.model, "method": cell.label, "seed": cell.seed,
            "n": int(s["n"]), **pct, "adv": 100.0 * float(s["adv_acc"]) if attack_path else float("nan"),
            "gain_ibp": pct["cascade"] - pct["ibp"], "gain_crown_ibp": pct["cascade"] - pct["crown_ibp"],
            "complete_stages": "+".join(complete), "undecided": int(s["count_unknown"] + s["count_timeout"])}


def complete_gain(certify_paths, attack_paths=None):
    """The Table 22 DataFrame, one row per cell, sorted in the paper's order; ``attrs["data_note"]``: its
    sample count and data source (``gridtables.samples_note``)."""
    import pandas as pd

    from ctbench.analysis.gridtables import samples_note

    attacks = attack_files(attack_paths)
    rows, seen, entries = [], {}, []
    for p in C.require(certify_paths, "certify"):
        item = C.read_certificates(p)
        entries.append((item.cell.dataset, item.attrs.get("split"), item.sample_index))
        if item.cell in seen:
            raise CTBenchError(f"two certify.h5 files for one cell: {seen[item.cell]} and {p}")
        seen[item.cell] = p
        rows.append((item.cell, gain_row(item, attacks.get(item.cell))))
    unmatched = [str(p) for cell, p in attacks.items() if cell not in seen]
    if unmatched:
        raise CTBenchError(f"attack files without a certify.h5 of the same cell: {', '.join(unmatched)}")
    df = pd.DataFrame([r for _, r in sorted(rows, key=lambda cr: cr[0].sort_key())])
    df.attrs["data_note"] = samples_note(entries, unit="certified samples", source="certify.h5") + (
        " Adv: the cells' attack.h5 on the same samples." if attacks else "")
    return df


def to_latex(df) -> str:
    """Table 22's layout: Train method | Nat | Cert. (IBP, CROWN-IBP, cascade) | Adv, one block per setting."""
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, method_name, setting_name

    seeds = df.groupby(["dataset", "eps", "model", "method"])["seed"].transform("nunique")
    rows = [[latex_text(setting_name(r["dataset"], r["eps"])), latex_text(r["model"]),
             latex_text(method_name(r["method"]) + (f" (seed {r['seed']})" if k > 1 else "")),
             fmt(r["nat"]), fmt(r["ibp"]), fmt(r["crown_ibp"]),
             fmt(r["cascade"]) + ("" if r["undecided"] == 0 else r"$^\dagger$"), fmt(r["adv"])]
            for r, k in zip(df.to_dict("records"), seeds, strict=True)]
    pre = [r" & & & & \multicolumn{3}{c}{Cert. [\%]} & \\", r"\cmidrule(lr){5-7}"]
    header = ["Setting", "Model", "Train Method", r"Nat [\%]", "IBP", "CROWN-IBP", "Cascade", r"Adv [\%]"]
    return latex_table(rows, header, group_cols=2, text_cols=3, pre_header=pre,
                       comment="CTBench Table 22 layout (ctbench analyze complete_gain); "
                               r"$^\dagger$: samples left unknown/timeout, the cascade value is a lower bound")


def figure(tables: list, out_stem: Path) -> list[Path]:
    """Grouped bars per setting: IBP, CROWN-IBP and cascade certified accuracy of each method; the sample
    count and data source (``df.attrs["data_note"]``) below."""
    import numpy as np

    from ctbench.analysis.gridtables import method_name, one_table, panels, save_figure, setting_name

    df, note = one_table(tables)

    settings = list(dict.fromkeys(zip(df.dataset, df.eps, df.model, strict=True)))
    fig, axes = panels(len(settings))
    for ax, (dataset, eps, model) in zip(axes, settings, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps) & (df.model == model)]
        block = block.groupby("method", sort=False)[["ibp", "crown_ibp", "cascade"]].mean()
        x = np.arange(len(block))
        for k, (col, name) in enumerate((("ibp", "IBP"), ("crown_ibp", "CROWN-IBP"), ("cascade", "cascade"))):
            ax.bar(x + (k - 1) * 0.27, block[col].to_numpy(float), 0.27, label=name)
        ax.set_xticks(x, [method_name(m) for m in block.index], rotation=45, ha="right")
        ax.set_ylabel("certified accuracy [%]")
        ax.set_title(f"{setting_name(dataset, eps)} ({model})")
        ax.set_ylim(0, 1.25 * max(float(block.max().max()), 1.0))  # room for the legend
    axes[0].legend(loc="upper left", ncols=3)
    return save_figure(fig, out_stem, note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--certify", nargs="+", required=True, type=Path, help="certify.h5 of the cells")
    parser.add_argument("--attack", nargs="*", type=Path, default=[],
                        help="attack.h5 of the same cells (matched by their attributes) for the Adv column")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import write_tables

    df = complete_gain(args.certify, args.attack)
    notes = []
    if (df["undecided"] > 0).any():
        notes.append("Cells with `undecided` > 0 left samples unknown or timed out: their cascade accuracy is a "
                     "lower bound of the complete certified accuracy.")
    written = write_tables(args.out_dir, NAME, df, latex=to_latex(df), notes=notes,
                           title="Incomplete (IBP, CROWN-IBP) vs complete (cascade) certified accuracy [%] (Table 22)",
                           data_note=df.attrs.get("data_note", ""))
    if not args.no_figure:
        written += figure([df], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0
