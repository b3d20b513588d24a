"""Training cost per method relative to standard training (paper App. C.6, Table 11), measured.

The paper's Table 11 is a complexity table: the cost of one training batch in units of a standard step T
(IBP 2T, CROWN-IBP with loss fusion 4T, SABR and MTL-IBP (M+2)T, ...; M = attack steps including
restarts). Here the same ratio is *measured* from the grid's own training runs: per cell, the epoch times
``time_s`` of ``train/history.csv`` (``ctbench.training``), over the epochs at the full training ε — after
the ε ramp, where the method runs its real step (during the ramp TAPS/STAPS fall back to IBP and ε is
small) — leaving out the first epoch (warm-up: first data loading, allocator, compilation). Where no
epoch but the first is at the full ε, every epoch but the first is used, and with one epoch that one.

Every epoch passes once over the same training set, so per-epoch seconds compare the methods' cost per
training sample. ``ratio`` is a method's mean epoch time (mean over its seeds) divided by the standard
method's in the same (dataset, ε, model); without a standard cell there, ``reference`` says so and the
ratio is empty. ``step_ratio`` converts to the cost of one batch (Table 11's unit) with the batch sizes of
the cells' ``cell.json``: ``ratio × batch_size / batch_size_standard`` (steps per epoch taken as
proportional to 1 / batch size; equal to ``ratio`` when the batch sizes agree). An epoch time also holds
the per-epoch population-BatchNorm pass and the validation with the method's own robust estimate, so
a cheap step is slightly overstated relative to the pure step cost of ``benchmarks/bounds.py``.

``paper_cost`` is Table 11's formula for the method; ``paper_ratio`` its value with M = ``attack_steps ×
attack_restarts`` of the cell's config, where the formula needs no split cost t (TAPS, STAPS: empty).

Outputs (``--out-dir``): ``cost_ratio.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method,
n_seeds, epochs_used, batch_size, attack_m, epoch_s, epoch_s_std, reference, ratio, step_ratio, paper_cost,
paper_ratio, hardware``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "cost_ratio"
INPUTS = {"cells": ("table1", "cell.json"), "histories": ("table1", "train/history.csv")}  # ctbench.analysis.protocol
REFERENCE = "standard"
UNKNOWN_HARDWARE = "not recorded (the training jobs' machine)"
#: paper Table 11: training cost per batch in units of a standard step T (M attack steps incl. repeats,
#: K classes, t the standard step's cost in TAPS' first network split).
PAPER_COST = {
    "standard": ("T", lambda m: 1.0),
    "pgd": ("(M+1)T", lambda m: m + 1.0),
    "edac": ("(M+1)T", lambda m: m + 1.0),
    "ibp": ("2T", lambda m: 2.0),
    "crown_ibp": ("4T", lambda m: 4.0),
    "sabr": ("(M+2)T", lambda m: m + 2.0),
    "mtl_ibp": ("(M+2)T", lambda m: m + 2.0),
    "taps": ("2t + K(M+1)(T-t)", None),
    "staps": ("2t + K(M+1)(T-t) + (M+1)T", None),
}


def read_cell_file(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CTBenchError(f"cannot read cell file {path}: {e}") from None
    if not isinstance(data.get("config"), dict):
        raise CTBenchError(f"{path} is not a ctbench cell file (no `config`)")
    return data


def epochs_used(history) -> list[int]:
    """Row positions of the epochs timed (see the module docstring): at the full ε, not the first."""
    import numpy as np

    n = len(history)
    if n <= 1:
        return list(range(n))
    eps = history["eps"].to_numpy(float) if "eps" in history.columns else np.zeros(n)
    top = np.nanmax(eps) if np.isfinite(eps).any() else 0.0
    full = [i for i in range(1, n) if np.isfinite(eps[i]) and eps[i] >= top * (1 - 1e-9)]
    return full or list(range(1, n))


def _ranges(epochs: list[int]) -> str:
    """1-based epoch numbers as ranges: ``[3, 4, 5, 7]`` (positions 2, 3, 4, 6) → ``3-5, 7``."""
    parts, start = [], None
    nums = [e + 1 for e in epochs]
    for k, e in enumerate(nums):
        start = e if start is None else start
        if k + 1 == len(nums) or nums[k + 1] != e + 1:
            parts.append(f"{start}-{e}" if e != start else str(e))
            start = None
    return ", ".join(parts)


def read_cells(cell_files, histories) -> list[dict]:
    """One dict per cell: identity, config, the timed epochs and their mean seconds. History and cell file
    are paired by cell directory (``<dir>/cell.json`` and ``<dir>/train/history.csv``)."""
    import pandas as pd

    cells = {Path(p).resolve().parent: p for p in C.require(cell_files, "cell")}
    out = []
    for h in C.require(histories, "history"):
        cell_dir = Path(h).resolve().parent.parent
        if cell_dir not in cells:
            raise CTBenchError(f"{h} has no cell file: give {cell_dir / 'cell.json'} with --cells")
        data = read_cell_file(cells[cell_dir])
        try:
            hist = pd.read_csv(h)
        except (OSError, ValueError) as e:
            raise CTBenchError(f"cannot read training history {h}: {str(e).splitlines()[0]}") from None
        if "time_s" not in hist.columns or hist.empty:
            raise CTBenchError(f"{h} is not a ctbench training history (needs column time_s and a row)")
        used = epochs_used(hist)
        times = pd.to_numeric(hist["time_s"], errors="coerce").to_numpy(float)[used]
        cfg = data["config"]
        out.append({"cell": C.cell_of(data, cells[cell_dir]), "config": cfg, "history": Path(h),
                    "epochs_used": _ranges(used), "n_epochs": len(used),
                    "epoch_s": float(times.mean()) if len(times) else math.nan,
                    "batch_size": int(cfg.get("batch_size") or 0) or None,
                    "attack_m": int(cfg.get("attack_steps") or 0) * int(cfg.get("attack_restarts") or 1)})
    return out


def ratio_table(cells: list[dict], hardware: str = UNKNOWN_HARDWARE):
    """One row per (dataset, ε, model, method): mean epoch seconds over seeds and the ratio to standard's."""
    import numpy as np
    import pandas as pd

    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        k = c["cell"]
        groups.setdefault((k.dataset, k.eps, k.model, k.label), []).append(c)
    means = {key: float(np.mean([m["epoch_s"] for m in members])) for key, members in groups.items()}
    out = []
    for (dataset, eps, model, label), members in groups.items():
        key = C.Cell(dataset, eps, model, *label.partition("+")[::2], 0).sort_key()
        times = np.array([m["epoch_s"] for m in members])
        ref_key = (dataset, eps, model, REFERENCE)
        batch = _one({m["batch_size"] for m in members})
        m_steps = _one({m["attack_m"] for m in members})
        formula, value = PAPER_COST.get(label.split("+")[0], ("/", None))
        row = {"dataset": dataset, "eps": eps, "model": model, "method": label, "n_seeds": len(members),
               "epochs_used": "; ".join(sorted({m["epochs_used"] for m in members})), "batch_size": batch,
               "attack_m": m_steps, "epoch_s": means[(dataset, eps, model, label)],
               "epoch_s_std": float(times.std(ddof=1)) if len(times) >= 2 else math.nan}
        if ref_key in groups:
            ref_batch = _one({m["batch_size"] for m in groups[ref_key]})
            ratio = row["epoch_s"] / means[ref_key]
            row.update(reference=f"standard ({len(groups[ref_key])} seed{'s' if len(groups[ref_key]) > 1 else ''})",
                       ratio=ratio, step_ratio=ratio * batch / ref_batch if batch and ref_batch else math.nan)
        else:
            row.update(reference=f"missing: no standard cell for {dataset} ε={eps} {model}", ratio=math.nan,
                       step_ratio=math.nan)
        row.update(paper_cost=formula,
                   paper_ratio=value(float(m_steps)) if value is not None and m_steps is not None else math.nan,
                   hardware=hardware)
        out.append((key, row))
    if not out:
        raise CTBenchError("no training histories given")
    df = pd.DataFrame([r for _, r in sorted(out, key=lambda kr: kr[0])])
    for col in ("n_seeds", "batch_size", "attack_m"):
        df[col] = df[col].astype("Int64")
    return df


def _one(values: set):
    """The single value of a group, or None when its cells disagree (or none is known)."""
    values = {v for v in values if v is not None}
    return values.pop() if len(values) == 1 else None


def data_note(cells: list[dict]) -> str:
    """The sample count and data source in one line: cells and timed epochs, from the training histories."""
    epochs = [c["n_epochs"] for c in cells]
    n = f"{min(epochs)}" if min(epochs) == max(epochs) else f"{min(epochs)}–{max(epochs)}"
    return (f"Samples (train/history.csv): n = {n} timed epochs per cell, {len(cells)} cells — the epoch wall "
            "times of their training runs (cell.json: batch size, attack steps).")


def notes(df) -> list[str]:
    missing = df[df["ratio"].isna()]
    out = [f"Data: `time_s` of train/history.csv of {int(df['n_seeds'].sum())} cells (seeds per row: "
           f"{', '.join(sorted({str(n) for n in df['n_seeds']}))}; epochs timed per cell in `epochs_used`: those at "
           "the full training ε after the first), batch size and attack steps from each cell's cell.json; "
           f"hardware: {'; '.join(sorted(set(df['hardware'])))}. Compare rows of the same hardware only.",
           "`ratio` = mean epoch seconds / standard training's in the same setting and model (cost per training "
           "sample); `step_ratio` = ratio × batch size / standard's batch size (cost per batch, Table 11's unit). "
           "Epoch times include the per-epoch population-BN pass and validation. `paper_cost`: Table 11's formula "
           "(T standard step, M = attack steps × restarts, K classes, t TAPS' first-split cost); `paper_ratio` its "
           "value with this cell's M (empty where it needs t).",
           "Isolated step timings of CNN7 (CIFAR-10 shapes, batch 128), without the per-epoch passes, are in "
           "benchmarks/README.md (`benchmarks/bounds.py`).",
           "Figure (cost_ratio.png): measured cost per batch relative to standard training (bars), Table 11's "
           "value as a black tick where it has one; one panel per setting and model."]
    if len(missing):
        out.append("No ratio (reference missing) for: " + ", ".join(
            f"{r.method} ({r.dataset} ε={r.eps} {r.model})" for r in missing.itertuples()) + ".")
    return out


def to_latex(df) -> str:
    """Table 11's layout (Method, cost per batch) with the measured ratios beside it."""
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, method_name, setting_name

    rows = [[latex_text(f"{setting_name(r['dataset'], r['eps'])} ({r['model']})"), latex_text(method_name(r["method"])),
             f"${r['paper_cost']}$" if r["paper_cost"] != "/" else "/", fmt(r["paper_ratio"], 1),
             fmt(r["step_ratio"]), fmt(r["ratio"]), fmt(r["epoch_s"], 1)] for r in df.to_dict("records")]
    header = ["Setting", "Method", "Paper cost / batch", "Paper ($\\times T$)", r"Measured / batch ($\times T$)",
              r"Measured / sample ($\times$ std.)", "Epoch (s)"]
    hw = "; ".join(sorted(set(df["hardware"])))
    return latex_table(rows, header, group_cols=1, text_cols=3,
                       comment=f"CTBench Table 11 with measured ratios (ctbench analyze cost_ratio); hardware: {hw}")


def figure(tables: list, out_stem: Path) -> list[Path]:
    """Measured cost per batch (bars) and Table 11's value (ticks) per method; ``note`` below the panels."""
    import numpy as np

    from ctbench.analysis.gridtables import method_color, method_name, one_table, panels, save_figure, setting_name

    df, note = one_table(tables)

    keys = list(dict.fromkeys(zip(df.dataset, df.eps, df.model, strict=True)))
    fig, axes = panels(len(keys))
    for ax, (dataset, eps, model) in zip(axes, keys, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps) & (df.model == model)]
        x = np.arange(len(block))
        ax.bar(x, np.nan_to_num(block["step_ratio"].to_numpy(float)), 0.6,
               color=[method_color(m) for m in block.method], label="measured")
        paper = block["paper_ratio"].to_numpy(float)
        shown = ~np.isnan(paper)
        if shown.any():
            ax.scatter(x[shown], paper[shown], marker="_", s=200, color="black", zorder=3, label="Table 11")
        for xi, r in zip(x, block.to_dict("records"), strict=True):
            if math.isnan(r["step_ratio"]):
                ax.annotate("no standard\ncell", (xi, 0), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=5)
        ax.axhline(1.0, color="grey", lw=0.6, ls="--")
        ax.set_xticks(x, [method_name(m) for m in block.method], rotation=30, ha="right")
        ax.set_ylabel("cost per batch [× standard step]")
        ax.set_title(f"{setting_name(dataset, eps)}, {model}")
    axes[0].legend(fontsize="x-small", loc="best")
    return save_figure(fig, out_stem, note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cells", nargs="+", required=True, type=Path, help="cell.json of the cells")
    parser.add_argument("--histories", nargs="+", required=True, type=Path,
                        help="train/history.csv of the same cells (paired by cell directory)")
    parser.add_argument("--hardware", default=None,
                        help="hardware the cells were trained on (training records none; default: not recorded)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import with_note, write_tables

    cells = read_cells(args.cells, args.histories)
    df = ratio_table(cells, args.hardware or UNKNOWN_HARDWARE)
    note = data_note(cells)
    written = write_tables(args.out_dir, NAME, df, latex=to_latex(df), notes=notes(df),
                           title="Training cost relative to standard training, measured (Table 11)", data_note=note)
    if not args.no_figure:
        written += figure([with_note(df, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0
