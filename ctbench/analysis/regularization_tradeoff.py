"""Regularization strength and the robustness-accuracy trade-off (paper App. B.2, Fig. 7).

Reads the cells of the grid's ``sweeps`` (``config/README.md``): each sweep varies one hyperparameter of
some methods — Fig. 7: SABR's and STAPS's λ (``eps_shrink``), TAPS's and STAPS's gradient scale
(``taps_grad_scale``), MTL-IBP's α (``ibp_coef``); Table 3: IBP's L1 weight (``l1``) — and the base cells
beside them (same setting, model, method and seed, the hyperparameter at its Tables 6-10 value). Per sweep
and method, one curve of natural vs certified accuracy as the strength varies: its points are labelled by
their value and the base cell is marked (a black ring). The strength of every cell is read from its own
``cell.json`` (the resolved training configuration the cell was trained from), the accuracies from its
``metrics.json``; a variant cell belongs to sweep ``S`` when its variant is named ``S_<value>`` (the
longest sweep name that fits). Several seeds of one point: their mean, ± std.

Outputs (``--out-dir``): ``regularization_tradeoff.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model,
sweep, key, method, value, base, nat, cert, adv, nat_std, cert_std, n_seeds, n`` (accuracies in percent,
``n`` the evaluated test samples of the cell, from ``metrics.json``). The tables and the figure state the
sample count and data source (``gridtables.metrics_note``).

Example::

    ctbench analyze regularization_tradeoff --sweep lambda=eps_shrink \\
        --metrics results/cifar10/2_255/cnn7/sabr{,+lambda_0.05,+lambda_0.2}/seed0/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "regularization_tradeoff"
INPUTS = {"metrics": ("sweep", "metrics.json"), "cells": ("sweep", "cell.json")}  # ctbench.analysis.protocol
ARGS = ("--sweep {sweep}",)  # each sweep of the grid as NAME=HYPERPARAMETER
#: the paper's symbol of each swept hyperparameter (others: the key itself).
SYMBOLS = {"eps_shrink": "λ", "ibp_coef": "α", "taps_grad_scale": "w", "l1": "L1", "w_rob": "w_rob"}
COLUMNS = ["dataset", "eps", "model", "sweep", "key", "method", "value", "base", "nat", "cert", "adv",
           "nat_std", "cert_std", "n_seeds", "n"]
FIGURE_NOTE = ("Figure (regularization_tradeoff.png): one panel per setting, model and sweep; one curve per method "
               "through its points in the order of the swept value, each point labelled by its value; the base cell "
               "(the Tables 6-10 value) ringed in black. Up and to the right is better.")


def parse_sweeps(specs) -> dict[str, str]:
    """``["lambda=eps_shrink", ...]`` → ``{"lambda": "eps_shrink", ...}`` (sweep name → hyperparameter)."""
    out = {}
    for spec in specs or []:
        name, sep, key = str(spec).partition("=")
        if not sep or not name.strip() or not key.strip():
            raise CTBenchError(f"--sweep {spec!r}: expected NAME=HYPERPARAMETER, e.g. lambda=eps_shrink")
        out[name.strip()] = key.strip()
    if not out:
        raise CTBenchError("no sweep given (--sweep NAME=HYPERPARAMETER)")
    return out


def sweep_of(variant: str, sweeps: dict[str, str]) -> str | None:
    """The sweep a variant belongs to (``lambda_0.05`` → ``lambda``): the longest name ``S`` with the variant
    named ``S_<value>``; ``None`` for the base configuration or another variant."""
    fits = [s for s in sweeps if variant.startswith(f"{s}_") and len(variant) > len(s) + 1]
    return max(fits, key=len) if fits else None


def cell_files_beside(metrics) -> list[Path]:
    """The default ``--cells``: the ``cell.json`` in each ``metrics.json``'s folder (the workflow's layout)."""
    return [Path(p).with_name("cell.json") for p in metrics]


def read_cell_configs(paths) -> dict[tuple, dict]:
    """``cell.json`` files (rule ``cell_config``) → {cell identity (seed as text): resolved training config}."""
    out = {}
    for p in C.require(paths, "cell"):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise CTBenchError(f"cannot read cell file {p}: {e}") from None
        if not isinstance(data.get("config"), dict):
            raise CTBenchError(f"{p} is not a ctbench cell file (no 'config')")
        out[_key(C.cell_of(data, p))] = data["config"]
    return out


def _key(cell: C.Cell) -> tuple:
    return cell.dataset, cell.eps, cell.model, cell.method, cell.variant, str(cell.seed)


def _number(v) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def regularization_table(rows: list[dict], configs: dict[tuple, dict], sweeps: dict[str, str], keep=None):
    """Long table (module docstring): the points of every (setting, model, sweep, method) curve, the base
    cell's among them. ``rows``: :func:`ctbench.analysis.cells.read_metrics`; ``configs``:
    :func:`read_cell_configs`; ``keep`` (:func:`ctbench.analysis.cells.method_filter`) selects methods."""
    import numpy as np
    import pandas as pd

    def config_of(r):
        try:
            return configs[_key(r["cell"])]
        except KeyError:
            raise CTBenchError(f"no cell.json for {r['path']} (cell {r['cell'].label}, seed {r['cell'].seed}): "
                               "pass the cells' cell.json with --cells") from None

    swept = [(r, sweep_of(r["cell"].variant, sweeps)) for r in rows if r["cell"].variant]
    swept = [(r, s) for r, s in swept if s is not None and (keep is None or keep(r["cell"].method))]
    if not swept:
        raise CTBenchError(f"no cell of the sweeps {', '.join(sweeps)} among the metrics (variant cells are "
                           f"named method+<sweep>_<value>)")
    bases = {}
    for r in rows:
        if not r["cell"].variant:
            c = r["cell"]
            bases.setdefault((c.dataset, c.eps, c.model, c.method), []).append(r)
    groups: dict[tuple, list[dict]] = {}
    curves = list(dict.fromkeys((r["cell"].dataset, r["cell"].eps, r["cell"].model, r["cell"].method, s)
                                for r, s in swept))
    for r, s in swept:
        value = _number(config_of(r).get(sweeps[s]))
        if math.isnan(value):
            raise CTBenchError(f"{r['path']}: the cell's configuration has no value of {sweeps[s]} (sweep {s})")
        c = r["cell"]
        groups.setdefault((c.dataset, c.eps, c.model, s, c.method, value, False), []).append(r)
    for dataset, eps, model, method, s in curves:
        seeds = {str(r["cell"].seed) for r, s2 in swept if s2 == s and r["cell"][:4] == (dataset, eps, model, method)}
        for r in bases.get((dataset, eps, model, method), []):
            if str(r["cell"].seed) in seeds:  # like for like: the base cells of the sweep's seeds
                value = _number(config_of(r).get(sweeps[s]))  # NaN: the method's base has no such value
                groups.setdefault((dataset, eps, model, s, method, None if math.isnan(value) else value, True),
                                  []).append(r)
    order = list(sweeps)
    out = []
    for (dataset, eps, model, s, method, value, base), members in groups.items():
        value = math.nan if value is None else value
        nat, cert, adv = (np.array([m[k] for m in members], float) for k in ("nat", "cert", "adv"))
        ns = sorted({int(m["meta"]["n"]) for m in members if m["meta"].get("n") is not None})
        sort = (C.setting_sort_key(dataset, eps), model, order.index(s), C.method_sort_key(method),
                math.inf if math.isnan(value) else value, base)
        out.append((sort, {"dataset": dataset, "eps": eps, "model": model, "sweep": s, "key": sweeps[s],
                           "method": method, "value": value, "base": base, "nat": _mean(nat), "cert": _mean(cert),
                           "adv": _mean(adv), "nat_std": _std(nat), "cert_std": _std(cert),
                           "n_seeds": len(members), "n": ns[0] if len(ns) == 1 else None}))
    df = pd.DataFrame([r for _, r in sorted(out, key=lambda kr: kr[0])], columns=COLUMNS)
    df["n"] = df["n"].astype("Int64")
    used = {str(m["path"]): {"cell": m["cell"], "meta": m["meta"]} for members in groups.values() for m in members}
    df.attrs["rows"] = list(used.values())  # for data_note() and notes()
    return df


def _mean(values) -> float:
    """Mean over seeds of the values that exist (NaN: e.g. no certified accuracy recorded)."""
    values = values[values == values]
    return float(values.mean()) if len(values) else math.nan


def _std(values) -> float:
    """Sample standard deviation (ddof = 1) over seeds; NaN for a single seed."""
    values = values[values == values]
    return float(values.std(ddof=1)) if len(values) >= 2 else math.nan


def format_value(v) -> str:
    """``0.05`` → ``0.05``, ``1e-05`` → ``1e-05``, ``5.0`` → ``5``; ``/`` when missing."""
    return "/" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):g}"


def strength_name(key: str) -> str:
    """``eps_shrink`` → ``λ (eps_shrink)``."""
    symbol = SYMBOLS.get(key)
    return f"{symbol} ({key})" if symbol and symbol != key else key


def used_rows(df) -> list[dict]:
    """The ``read_metrics`` rows behind the table's points (each cell once; a base cell may sit on 2 curves)."""
    return df.attrs.get("rows", [])


def data_note(df) -> str:
    """Sample count and data source (``gridtables.metrics_note``: n per cell as each metrics.json records it)."""
    from ctbench.analysis.gridtables import metrics_note

    return metrics_note(used_rows(df)) + " Swept values: each cell's cell.json."


def notes(df) -> list[str]:
    """What the points are (below the data note of :func:`data_note`)."""
    seeds = int(df["n_seeds"].max()) if len(df) else 0
    return [
        f"Data: {len(df)} points from {len(used_rows(df))} cells (the grid's sweeps and their base cells of the "
        f"same seeds): natural, certified (the certification cascade) and adversarial accuracy from each cell's "
        f"metrics.json, in percent; the swept value from its cell.json."
        + (" Points of several seeds: mean, std in nat_std / cert_std." if seeds > 1 else ""),
        "base = the base cell (Tables 6-10's value of the hyperparameter, the cell in Table 1); the paper's Fig. 7 "
        "is CIFAR-10 ε=2/255 with CNN7: λ of SABR and STAPS, α of MTL-IBP.",
        FIGURE_NOTE,
    ]


def display_table(df):
    import pandas as pd

    from ctbench.analysis.gridtables import fmt, method_name, setting_name

    rows = [{"setting": setting_name(r["dataset"], r["eps"]), "model": r["model"], "strength": strength_name(r["key"]),
             "method": method_name(r["method"]), "value": format_value(r["value"]), "base": "base" if r["base"] else "",
             "nat": fmt(r["nat"]), "cert": fmt(r["cert"]), "adv": fmt(r["adv"]),
             "seeds": r["n_seeds"], "n": fmt(r["n"])} for r in df.to_dict("records")]
    return pd.DataFrame(rows)


def to_latex(df) -> str:
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, method_name, setting_name

    def strength(key):
        return "".join({"λ": r"$\lambda$", "α": r"$\alpha$"}.get(ch, ch) for ch in latex_text(strength_name(key)))

    rows = [[latex_text(f"{setting_name(r['dataset'], r['eps'])} ({r['model']})"),
             strength(r["key"]), latex_text(method_name(r["method"])),
             format_value(r["value"]) + (r" (base)" if r["base"] else ""), fmt(r["nat"]), fmt(r["cert"])]
            for r in df.to_dict("records")]
    return latex_table(rows, ["Setting", "Strength", "Method", "Value", r"Nat. [\%]", r"Cert. [\%]"], group_cols=2,
                       text_cols=4, comment="CTBench Fig. 7 data (ctbench analyze regularization_tradeoff)")


def figure(tables: list, out_stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` of :func:`draw`; ``note`` (sample count and data source) below."""
    from ctbench.analysis.gridtables import one_table, save_figure

    df, note = one_table(tables)

    return save_figure(draw(df), out_stem, note)


def draw(df):
    """One panel per (setting, model, sweep); per method a curve through its points in the order of the value.

    Every point is a ``Line2D`` with gid ``"<sweep>|<method>|<value>"`` (``|base`` appended for the base cell);
    each point's value is written beside it."""
    from ctbench.analysis.gridtables import method_color, method_name, panels, setting_name
    from ctbench.analysis.tradeoff import method_marker

    keys = list(dict.fromkeys(zip(df.dataset, df.eps, df.model, df.sweep, strict=True)))
    several_models = df["model"].nunique() > 1
    fig, axes = panels(len(keys))
    for ax, (dataset, eps, model, sweep) in zip(axes, keys, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps) & (df.model == model) & (df.sweep == sweep)]
        key = block["key"].iloc[0]
        title = f"{setting_name(dataset, eps)}" + (f", {model}" if several_models else "")
        ax.set_title(f"{title}\n{sweep}: {strength_name(key)}", fontsize="small")
        ax.set_xlabel("natural accuracy [%]")
        ax.set_ylabel("certified accuracy [%]")
        for method, g in block.groupby("method", sort=False):
            g = g.sort_values(["value", "base"], na_position="last")
            color, marker = method_color(method), method_marker(method)
            ax.plot(g["nat"], g["cert"], "-", color=color, alpha=0.6, lw=1.0)
            for r in g.to_dict("records"):
                bars = ax.errorbar(r["nat"], r["cert"], xerr=_err(r["nat_std"]), yerr=_err(r["cert_std"]),
                                   marker=marker, color=color, ms=6, ls="none")
                bars.lines[0].set_gid(f"{sweep}|{method}|{format_value(r['value'])}" + ("|base" if r["base"] else ""))
                if r["base"]:
                    ax.plot(r["nat"], r["cert"], "o", ms=12, mfc="none", mec="black", mew=1.2)
                ax.annotate(format_value(r["value"]), (r["nat"], r["cert"]), xytext=(7, 5),
                            textcoords="offset points", fontsize="x-small", color=color)
            ax.plot([], [], "-", marker=marker, color=color, label=f"{method_name(method)} ({SYMBOLS.get(key, key)})")
        ax.plot([], [], "o", ms=9, mfc="none", mec="black", label="base cell (Tables 6-10)")
        ax.margins(0.15)
        ax.legend(fontsize="x-small", loc="best")
    fig.tight_layout()
    return fig


def _err(std):
    return None if std is None or (isinstance(std, float) and math.isnan(std)) else std


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="+", required=True, type=Path,
                        help="metrics.json of the sweeps' cells and of their base cells")
    parser.add_argument("--cells", nargs="+", type=Path,
                        help="cell.json of the same cells (their resolved configuration; default: beside each "
                             "metrics.json)")
    parser.add_argument("--sweep", action="append", required=True, metavar="NAME=HYPERPARAMETER",
                        help="a sweep of the grid and the hyperparameter it varies, e.g. lambda=eps_shrink "
                             "(repeatable)")
    parser.add_argument("--methods", default="all", help="methods shown: 'all' (default), 'certified' or a comma list")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import with_note, write_tables

    sweeps = parse_sweeps(args.sweep)
    rows = C.read_metrics(args.metrics)
    configs = read_cell_configs(args.cells or cell_files_beside(args.metrics))
    df = regularization_table(rows, configs, sweeps, C.method_filter(args.methods))
    note = data_note(df)
    written = write_tables(args.out_dir, NAME, df, latex=to_latex(df), display=display_table(df),
                           notes=notes(df), data_note=note,
                           title="Regularization strength vs natural and certified accuracy (Fig. 7), percent")
    if not args.no_figure:
        written += figure([with_note(df, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0
