"""Seed statistics (paper App. D.1, Tables 13-17): mean ± std over seeds per cell beside the paper's values.

Per (dataset, ε, model, method): mean and sample standard deviation (ddof = 1) over the seeds of natural,
certified and adversarial accuracy (percent, from ``metrics.json``), beside the CTBench paper's value:

* nat, cert: Tables 13-17, mean ± std over 3 seeds (``config/literature.yaml`` key ``seeds``);
* otherwise (adv, which those tables omit; methods they omit) Table 1's single-seed CTBench value
  (``table1``; ``standard_nat`` for standard training), whose std is unknown. PGD/EDAC certified accuracy
  ("~0", time-limited in the paper) is not compared.

**Flagging rule.** A value is flagged when ``|mean_ours − mean_paper| > 3σ`` with

    σ = max(σ_ours, σ_paper, min_std)

over the terms that exist: σ_ours needs ≥ 2 seeds, σ_paper exists for Tables 13-17 only. The larger of
the two is used because both estimate the same seed-to-seed spread from only 3 runs, so the smaller one
is often small by chance; ``--min-std`` (default 0.01 points, one test sample in 10,000 and the tables'
precision) keeps identical seeds (std 0) from flagging rounding. A single seed against a value without a
paper std is not judged (``<m>_z`` empty). Only cells of the paper's architecture (``--paper-model``,
default cnn7; ``any`` compares every model) are judged; cells with a variant (``method+variant``) are
listed without a paper value.

Outputs (``--out-dir``): ``seeds.{csv,md,tex,png,pdf}``; CSV columns ``dataset, eps, model, method, n_seeds,
seeds`` then per metric m ∈ nat, cert, adv: ``m_mean, m_std, m_paper, m_paper_std, m_source, m_sigma, m_z,
m_flag``, and ``flagged`` (any metric). The tables and the figure state the sample count and data source
(``gridtables.metrics_note``: n per cell as each ``metrics.json`` records it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "seeds"
INPUTS = {"metrics": ("table1", "metrics.json"), "literature": "config:literature"}  # ctbench.analysis.protocol
METRICS = ("nat", "cert", "adv")
TABLE1_INDEX = {"nat": 1, "cert": 3, "adv": 4}  # [nat_lit, nat_ctbench, cert_lit, cert_ctbench, adv_ctbench]
K_SIGMA = 3.0


def paper_value(literature: dict, dataset: str, eps: str, method: str, metric: str):
    """``(mean, std or NaN, source)`` of the CTBench paper, or ``None`` where it reports nothing."""
    entry = C.setting_entry(literature.get("seeds", {}), dataset, eps).get(method, {})
    if metric in entry:
        mean, std = entry[metric]
        return float(mean), float(std), "Tables 13-17"
    if method == "standard" and metric == "nat":
        v = (literature.get("standard_nat") or {}).get("mnist" if dataset == "mnist_mini" else dataset)
        return (float(v), math.nan, "Table 1") if v is not None else None
    if metric == "cert" and method in ("pgd", "edac"):
        return None  # "~0" in the paper: not a measured value
    row = C.setting_entry(literature.get("table1", {}), dataset, eps).get(method)
    v = row[TABLE1_INDEX[metric]] if row else None
    return None if v is None else (float(v), math.nan, "Table 1")


def judge(mean: float, std: float, n: int, paper, min_std: float) -> tuple[float, float, bool]:
    """``(σ, z = (mean − paper)/σ, flagged)`` by the module's rule; NaNs where it cannot judge."""
    if paper is None or n == 0 or math.isnan(mean):
        return math.nan, math.nan, False
    spreads = [s for s in ((std if n >= 2 else math.nan), paper[1]) if not math.isnan(s)]
    if not spreads:
        return math.nan, math.nan, False
    sigma = max(*spreads, min_std)
    z = (mean - paper[0]) / sigma
    return sigma, z, abs(z) > K_SIGMA


def seed_statistics(frame, keys=("dataset", "eps", "model", "method")):
    """Mean and sample standard deviation (ddof = 1) over seeds of ``nat``, ``cert``, ``adv`` per group of
    ``keys``, missing values (standard training's certified accuracy) left out, and ``n_seeds`` (the
    group's rows): one row per group, in order of appearance; columns ``keys``, ``<m>_mean``, ``<m>_std``
    per metric, ``n_seeds``. The one computation of the seed statistics (paper Tables 13-17): this analysis
    and ``ctbench report``'s ``results/seeds.csv`` both use it."""
    import pandas as pd

    keys = list(keys)
    values = frame[list(METRICS)].apply(pd.to_numeric, errors="coerce")
    grouped = values.groupby([frame[k] for k in keys], sort=False, dropna=False)
    out = grouped.agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_seeds"] = grouped.size()
    return out.reset_index()


def seed_table(rows: list[dict], literature: dict, *, paper_model: str = "cnn7", min_std: float = 0.01):
    """One row per (dataset, ε, model, method) from :func:`ctbench.analysis.cells.read_metrics` rows."""
    import pandas as pd

    if not rows:
        raise CTBenchError("no metrics.json given")
    frame = pd.DataFrame([{"dataset": r["cell"].dataset, "eps": r["cell"].eps, "model": r["cell"].model,
                           "method": r["cell"].label, **{m: r[m] for m in METRICS}} for r in rows])
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        c = r["cell"]
        groups.setdefault((c.dataset, c.eps, c.model, c.label), []).append(r)
    out = []
    for stats, ((dataset, eps, model, label), members) in zip(seed_statistics(frame).to_dict("records"),
                                                               groups.items(), strict=True):
        seeds = sorted(str(m["cell"].seed) for m in members)
        if len(set(seeds)) < len(seeds):
            raise CTBenchError(f"two metrics.json files for one seed of {label} {dataset} ε={eps}: "
                                 + ", ".join(str(m["path"]) for m in members))
        judged = paper_model == "any" or model.lower() == paper_model.lower()
        row = {"dataset": dataset, "eps": eps, "model": model, "method": label, "n_seeds": len(members),
               "seeds": ",".join(seeds)}
        for m in METRICS:
            mean, std = float(stats[f"{m}_mean"]), float(stats[f"{m}_std"])
            paper = paper_value(literature, dataset, eps, label, m) if "+" not in label else None
            sigma, z, flag = judge(mean, std, len(members), paper if judged else None, min_std)
            row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_paper": paper[0] if paper else math.nan,
                        f"{m}_paper_std": paper[1] if paper else math.nan, f"{m}_source": paper[2] if paper else "",
                        f"{m}_sigma": sigma, f"{m}_z": z, f"{m}_flag": flag})
        row["flagged"] = any(row[f"{m}_flag"] for m in METRICS)
        out.append((C.Cell(dataset, eps, model, *label.partition("+")[::2], 0), row))
    return pd.DataFrame([r for _, r in sorted(out, key=lambda cr: cr[0].sort_key())])


def _pm(mean, std) -> str:
    from ctbench.analysis.gridtables import fmt

    return fmt(mean) + ("" if math.isnan(std) else f" ± {std:.2f}")


def display(df):
    """Markdown view: ``mean ± std`` for ours and the paper, and ``z`` (⚠ where flagged)."""
    import pandas as pd

    from ctbench.analysis.gridtables import method_name, setting_name

    rows = []
    for r in df.to_dict("records"):
        row = {"setting": setting_name(r["dataset"], r["eps"]), "model": r["model"],
               "method": method_name(r["method"]), "seeds": r["n_seeds"]}
        for m in METRICS:
            row[f"{m} ours"] = _pm(r[f"{m}_mean"], r[f"{m}_std"])
            row[f"{m} paper"] = _pm(r[f"{m}_paper"], r[f"{m}_paper_std"])
            row[f"{m} z"] = "" if math.isnan(r[f"{m}_z"]) else f"{r[f'{m}_z']:+.1f}" + (" ⚠" if r[f"{m}_flag"] else "")
        rows.append(row)
    return pd.DataFrame(rows)


def to_latex(df, literature: dict) -> str:
    """Tables 13-17 layout: per method the rows Literature, CTBench paper, Ours (flagged values marked)."""
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, method_name, setting_name

    def pm(mean, std, flag=False):
        text = "/" if math.isnan(mean) else fmt(mean) + ("" if math.isnan(std) else rf" $\pm$ {std:.2f}")
        return rf"\textbf{{{text}}}$^{{*}}$" if flag else text

    rows = []
    for r in df.to_dict("records"):
        lit = C.setting_entry(literature.get("table1", {}), r["dataset"], r["eps"]).get(r["method"]) or [None] * 5
        head = [latex_text(setting_name(r["dataset"], r["eps"])), latex_text(f"{method_name(r['method'])} "
                                                                                 f"({r['model']})")]
        lit_vals = {"nat": lit[0], "cert": lit[2], "adv": None}
        rows.append(head + ["Literature"] + [fmt(lit_vals[m]) for m in METRICS])
        rows.append(head + ["CTBench paper"] + [pm(r[f"{m}_paper"], r[f"{m}_paper_std"]) for m in METRICS])
        rows.append(head + [f"Ours ({r['n_seeds']} seeds)"]
                    + [pm(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_flag"]) for m in METRICS])
    return latex_table(rows, ["Setting", "Method", "Source", r"Nat. [\%]", r"Cert. [\%]", r"Adv. [\%]"],
                       group_cols=2, text_cols=3, comment="CTBench Tables 13-17 layout (ctbench analyze seeds); "
                       r"$^{*}$: more than 3 sigma from the CTBench paper, sigma = max(ours, paper, min-std)")


def figure(tables: list, out_stem: Path) -> list[Path]:
    """z = (ours − paper)/σ per method and metric, one panel per setting; dashed lines at ±3; ``note``
    (sample count and data source) below."""
    import numpy as np

    from ctbench.analysis.gridtables import method_name, one_table, panels, save_figure, setting_name

    df, note = one_table(tables)

    settings = list(dict.fromkeys(zip(df.dataset, df.eps, strict=True)))
    fig, axes = panels(len(settings))
    for ax, (dataset, eps) in zip(axes, settings, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps)]
        x = np.arange(len(block))
        for k, m in enumerate(METRICS):
            ax.plot(x + (k - 1) * 0.15, block[f"{m}_z"].to_numpy(float), "o", label=m)
        for y in (-K_SIGMA, K_SIGMA):
            ax.axhline(y, ls="--", lw=0.8, color="grey")
        ax.set_xticks(x, [f"{method_name(m)} ({mo})" for m, mo in zip(block.method, block.model, strict=True)],
                      rotation=45, ha="right")
        ax.set_ylabel("(ours − paper) / σ")
        ax.set_title(setting_name(dataset, eps))
    axes[0].legend()
    return save_figure(fig, out_stem, note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics.json of the cells")
    parser.add_argument("--literature", type=Path, default=Path("config/literature.yaml"))
    parser.add_argument("--paper-model", default="cnn7",
                        help="architecture of the paper's Tables 13-17; other models are not judged ('any': all)")
    parser.add_argument("--min-std", type=float, default=0.01, help="smallest σ in percentage points (default 0.01)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import metrics_note, with_note, write_tables

    if not args.min_std > 0:
        raise CTBenchError(f"--min-std must be > 0, got {args.min_std}")
    literature = C.load_literature(args.literature)
    rows = C.read_metrics(args.metrics)
    note = metrics_note(rows) + " Paper values: as published (config/literature.yaml)."
    df = seed_table(rows, literature, paper_model=args.paper_model, min_std=args.min_std)
    flagged = df[df["flagged"]]
    notes = [f"Flagged (⚠): |ours − paper| > 3σ, σ = max(our sample std, the paper's std, {args.min_std}); "
             f"{len(flagged)} of {len(df)} cells flagged."]
    written = write_tables(args.out_dir, NAME, df, display=display(df), latex=to_latex(df, literature), notes=notes,
                           title="Mean ± std over seeds beside the CTBench paper (Tables 13-17), percent",
                           data_note=note)
    if not args.no_figure:
        written += figure([with_note(df, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    for r in flagged.to_dict("records"):
        bad = ", ".join(f"{m} {r[f'{m}_mean']:.2f} vs {r[f'{m}_paper']:.2f} ({r[f'{m}_z']:+.1f}σ)"
                        for m in METRICS if r[f"{m}_flag"])
        print(f"flagged: {r['dataset']} ε={r['eps']} {r['model']} {r['method']}: {bad}")
    return 0
