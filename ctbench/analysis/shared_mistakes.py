"""Shared mistakes (paper §5.2, Table 2; App. D.3, Tables 20, 21): do certified models fail on the same inputs?

For k models of one setting (dataset, ε), every test sample gets the number of models that certify it;
the observed histogram over 0..k is set beside the histogram expected if the models failed
independently with their certified accuracies p_1..p_k: the Poisson-binomial distribution
(:func:`poisson_binomial`), times the number of samples (the original ``Utility/analyze_cert_cor.py``
enumerated the 2^6 outcomes for six methods; here it is an exact convolution for any k).

Three comparisons, each over the models that differ in one coordinate only:

* ``methods`` — the certified-training methods of one (model, seed) (Tables 2, 20);
* ``seeds`` — the seeds of one (model, method);
* ``architectures`` — the models of one (method, seed), when the grid has several (Table 21).

Outputs (``--out-dir``): ``shared_mistakes.{csv,md,tex,png,pdf}`` (histograms; CSV: one row per group
with ``obs_0..obs_K``, ``exp_0..exp_K``) and ``shared_mistakes_uncertified.{csv,md,tex}`` (Table 21:
samples certified by no model of a group, observed vs expected, and per model). Each table and the figure
state their sample count and data source (:func:`data_note`: per model file, from ``certify.h5``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "shared_mistakes"
INPUTS = {"certify": ("base", "certify.h5")}  # ctbench.analysis.protocol: cells without a variant
COMPARISONS = {  # name → the cell coordinate that varies inside a group
    "methods": "label",
    "seeds": "seed",
    "architectures": "model",
}


def poisson_binomial(p: Sequence[float]) -> np.ndarray:
    """(k+1,) probabilities that exactly j of k independent events with probabilities ``p`` (k,) occur:
    the coefficients of ∏_i ((1 − p_i) + p_i·x), by repeated convolution (exact up to rounding)."""
    pmf = np.ones(1)
    for q in np.asarray(p, dtype=np.float64):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"probability outside [0, 1]: {q}")
        pmf = np.convolve(pmf, [1.0 - q, q])
    return pmf


def observed_histogram(certified: np.ndarray) -> np.ndarray:
    """(k+1,) int: how many samples are certified by exactly j of the k models; ``certified`` is (k, n) bool."""
    certified = np.asarray(certified, dtype=bool)
    return np.bincount(certified.sum(0), minlength=certified.shape[0] + 1)


def expected_histogram(certified: np.ndarray) -> np.ndarray:
    """(k+1,) float: n · PoissonBinomial(certified accuracies) — the counts if failures were independent."""
    certified = np.asarray(certified, dtype=bool)
    return certified.shape[1] * poisson_binomial(certified.mean(1))


def groups(items: Sequence[C.Certificates], comparison: str) -> list[tuple[dict, list[C.Certificates]]]:
    """Groups of ≥ 2 files that differ only in the coordinate of ``comparison``; each with its fixed
    coordinates (``dataset``, ``eps``, ``model``, ``method``, ``seed``; the varying one is ``*``)."""
    vary = COMPARISONS[comparison]
    by_key: dict[tuple, list[C.Certificates]] = {}
    for it in items:
        c = it.cell
        coords = {"dataset": c.dataset, "eps": c.eps, "model": c.model, "method": c.label, "seed": c.seed}
        coords["method" if vary == "label" else vary] = "*"
        by_key.setdefault(tuple(coords.items()), []).append(it)
    out = []
    for key, members in by_key.items():
        members = sorted(members, key=lambda it: it.cell.sort_key())
        seen = [getattr(it.cell, vary) for it in members]
        if len(set(seen)) < len(seen):
            dup = next(s for s in seen if seen.count(s) > 1)
            raise CTBenchError(f"two files of the same cell ({vary} {dup}): "
                                 + ", ".join(str(it.path) for it in members if getattr(it.cell, vary) == dup))
        if len(members) >= 2:
            out.append((dict(key), members))
    return sorted(out, key=lambda g: g[1][0].cell.sort_key())


def member_name(cell: C.Cell, comparison: str) -> str:
    from ctbench.analysis.gridtables import method_name

    return {"methods": method_name(cell.label), "seeds": f"seed{cell.seed}", "architectures": cell.model}[comparison]


def histogram_rows(named: Sequence[tuple[dict, list[str], np.ndarray]]):
    """``(coords, member names, certified (k, m))`` per group → the wide table (one row per group)."""
    import pandas as pd

    kmax = max(m.shape[0] for _, _, m in named)
    rows = []
    for coords, names, certified in named:
        obs, exp = observed_histogram(certified), expected_histogram(certified)
        row = {**coords, "members": ", ".join(names), "k": certified.shape[0], "n": certified.shape[1],
               "cert_acc": ", ".join(f"{100 * a:.2f}" for a in certified.mean(1))}
        row.update({f"obs_{j}": (int(obs[j]) if j < len(obs) else None) for j in range(kmax + 1)})
        row.update({f"exp_{j}": (float(exp[j]) if j < len(exp) else None) for j in range(kmax + 1)})
        rows.append(row)
    df = pd.DataFrame(rows)
    for j in range(kmax + 1):
        df[f"obs_{j}"] = df[f"obs_{j}"].astype("Int64")
    return df


def shared_mistakes(items: Sequence[C.Certificates], comparisons: Sequence[str] = tuple(COMPARISONS),
                    *, intersect: bool = False):
    """``(histograms, uncertified)`` DataFrames (Tables 2/20 and 21) for the requested comparisons."""
    import pandas as pd

    named, pooled, singles = [], [], {}
    for comparison in comparisons:
        for coords, members in groups(items, comparison):
            what = f"{comparison} of {coords['dataset']} ε={coords['eps']}"
            certified = C.certified_matrix(members, intersect=intersect, what=what)
            names = [member_name(it.cell, comparison) for it in members]
            named.append(({"comparison": comparison, **coords}, names, certified))
            pooled.append({"comparison": comparison, **coords, "models": ", ".join(names),
                           "observed": int((~certified).all(0).sum()),
                           "expected": float(expected_histogram(certified)[0])})
            for it, row in zip(members, certified, strict=True):
                c = it.cell
                singles[c] = {"comparison": "one model", "dataset": c.dataset, "eps": c.eps, "model": c.model,
                              "method": c.label, "seed": c.seed, "observed": int((~row).sum()), "expected": None,
                              "models": f"{c.model} {member_name(c, 'methods')} seed{c.seed}"}
    if not named:
        raise CTBenchError("shared mistakes need at least two models of one setting that differ only in "
                             f"{' or '.join(COMPARISONS[c] for c in comparisons)}; got "
                             + ", ".join(f"{it.cell.label}/{it.cell.model}/seed{it.cell.seed}" for it in items))
    rows = [singles[c] for c in sorted(singles, key=C.Cell.sort_key)] + pooled
    rows.sort(key=lambda r: C.setting_sort_key(r["dataset"], r["eps"]))  # stable: single models first
    return histogram_rows(named), pd.DataFrame(rows)


# -- presentation -------------------------------------------------------------------------------------------


def _block(r: dict) -> tuple[str, str, str]:
    from ctbench.analysis.gridtables import setting_name

    fixed = ", ".join(f"{k} {r[k]}" for k in ("model", "method", "seed") if r[k] != "*")
    return r["comparison"], setting_name(r["dataset"], r["eps"]), fixed


def display_histograms(df, kmax: int):
    """Paper layout (Table 2): per group an ``obs.`` and an ``exp.`` row over columns 0..K (exp. rounded)."""
    import pandas as pd

    rows = []
    for r in df.to_dict("records"):
        comparison, setting, fixed = _block(r)
        base = {"comparison": comparison, "setting": setting, "fixed": fixed, "models": r["members"],
                "cert. acc. [%]": r["cert_acc"]}
        obs = {str(j): "" if pd.isna(r[f"obs_{j}"]) else str(r[f"obs_{j}"]) for j in range(kmax + 1)}
        exp = {str(j): "" if pd.isna(r[f"exp_{j}"]) else f"{r[f'exp_{j}']:.0f}" for j in range(kmax + 1)}
        rows += [{**base, "": "obs.", **obs}, {**base, "": "exp.", **exp}]
    return pd.DataFrame(rows)


def histogram_latex(display, kmax: int, comment: str, header_names: Sequence[str] | None = None) -> str:
    from ctbench.analysis.gridtables import latex_table, latex_text

    names = list(header_names) if header_names else [str(j) for j in range(kmax + 1)]
    cols = ["comparison", "setting", "fixed"]
    rows = [[latex_text(r[c]) for c in cols] + [r[""]] + [r[str(j)] for j in range(kmax + 1)]
            for r in display.to_dict("records")]
    pre = [rf" & & & & \multicolumn{{{kmax + 1}}}{{c}}{{\# models certifying}} \\", rf"\cmidrule(lr){{5-{kmax + 5}}}"]
    header = ["Comparison", "Setting", "Fixed", ""] + names
    return latex_table(rows, header, group_cols=3, align="llll" + "r" * (kmax + 1), comment=comment, pre_header=pre)


def data_note(items: Sequence[C.Certificates], hist, source: str = "certify.h5", per: str = "model") -> str:
    """The sample count and data source of the histograms ``hist`` of ``items``: each file's certified
    samples (``gridtables.samples_note``) and how many samples each histogram counts (those common to its
    files: fewer than a file's with ``--intersect``)."""
    from ctbench.analysis.gridtables import samples_note

    note = samples_note([(it.cell.dataset, it.attrs.get("split"), it.sample_index) for it in items],
                        unit="certified samples", source=source, per=per)
    counted = hist[[c for c in hist.columns if c.startswith("obs_")]].sum(axis=1)
    lo, hi = int(counted.min()), int(counted.max())
    return note + f" Each histogram counts n = {lo:,}{'' if lo == hi else f'–{hi:,}'} samples (common to its files)."


def figure(tables: list, out_stem: Path) -> list[Path]:
    """The histograms' figure (:func:`histogram_figure`), the sample note from ``df.attrs["data_note"]``."""
    from ctbench.analysis.gridtables import one_table

    df, note = one_table(tables)
    return histogram_figure(df, out_stem, note=note)


def histogram_figure(df, stem: Path, title_of=None, limit: int = 12, note: str = "") -> list[Path]:
    """Observed vs expected bars per group (log scale), at most ``limit`` panels: the method comparison
    (Tables 2, 20) of the first seed of each (setting, model) when there is one, else the first groups;
    ``note`` (:func:`data_note`) below the panels."""
    from ctbench.analysis.gridtables import panels, save_figure, setting_name

    methods = df[df["comparison"] == "methods"]
    if len(methods):
        df = methods.groupby(["dataset", "eps", "model"], sort=False, group_keys=False).head(1)
    df = df.head(limit)
    fig, axes = panels(len(df))
    for ax, r in zip(axes, df.to_dict("records"), strict=True):
        j = np.arange(int(r["k"]) + 1)
        obs = np.array([r[f"obs_{i}"] for i in j], float)
        exp = np.array([r[f"exp_{i}"] for i in j], float)
        ax.bar(j - 0.2, obs, 0.4, label="observed")
        ax.bar(j + 0.2, exp, 0.4, label="expected if independent", alpha=0.6)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xticks(j)
        ax.set_xlabel("# models certifying")
        ax.set_ylabel("# samples")
        ax.set_title(title_of(r) if title_of else f"{setting_name(r['dataset'], r['eps'])}: " + ", ".join(
            f"{k} {r[k]}" for k in ("model", "method", "seed") if r[k] != "*"))
    axes[0].legend(loc="upper center")
    return save_figure(fig, stem, note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--certify", nargs="+", required=True, type=Path, help="certify.h5 of the cells")
    parser.add_argument("--comparisons", default=",".join(COMPARISONS),
                        help=f"comma list of {', '.join(COMPARISONS)} (default: all that the grid allows)")
    parser.add_argument("--methods", default="certified",
                        help="methods compared: 'certified' (default: all but standard, PGD, EDAC, as in "
                             "Tables 2, 20), 'all', or a comma list")
    parser.add_argument("--intersect", action="store_true",
                        help="compare files that cover different samples on their common samples (default: refuse)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import with_note, write_tables

    comparisons = [c.strip() for c in args.comparisons.split(",") if c.strip()]
    bad = [c for c in comparisons if c not in COMPARISONS]
    if bad or not comparisons:
        raise CTBenchError(f"unknown comparison {', '.join(bad) or '(none)'}; choose from {', '.join(COMPARISONS)}")
    keep = C.method_filter(args.methods)
    items = [it for it in C.read_all(args.certify) if keep(it.cell.label)]
    if not items:
        raise CTBenchError(f"no certify.h5 left after --methods {args.methods}")
    hist, unc = shared_mistakes(items, comparisons, intersect=args.intersect)
    kmax = int(hist["k"].max())
    display = display_histograms(hist, kmax)
    comment = "CTBench Tables 2/20 layout (ctbench analyze shared_mistakes): samples certified by j models"
    note = data_note(items, hist)
    written = write_tables(args.out_dir, NAME, hist, title="Shared mistakes: # models certifying each sample "
                           "(obs. vs exp. if independent; Tables 2, 20, 21)", display=display,
                           latex=histogram_latex(display, kmax, comment), data_note=note)
    written += write_uncertified(unc, args.out_dir, note)
    if not args.no_figure:
        written += figure([with_note(hist, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0


def write_uncertified(unc, out_dir, note: str = "") -> list[Path]:
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, setting_name, write_tables

    disp = unc.assign(setting=[setting_name(d, e) for d, e in zip(unc.dataset, unc.eps, strict=True)])
    disp = disp[["comparison", "setting", "model", "method", "seed", "models", "observed", "expected"]]
    rows = [[latex_text(r.comparison), latex_text(r.setting), latex_text(r.models), str(r.observed),
             fmt(r.expected, 0)] for r in disp.itertuples(index=False)]
    latex = latex_table(rows, ["Comparison", "Setting", "Models", "Observed", "Expected if independent"],
                        group_cols=2, text_cols=3,
                        comment="CTBench Table 21 layout: samples certified by none of the models")
    return write_tables(out_dir, f"{NAME}_uncertified", unc, display=disp, latex=latex,
                        title="Samples certified by none of the models (Table 21)", data_note=note)
