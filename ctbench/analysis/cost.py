"""Cost (paper App. C.6, Table 12): wall time of each workflow stage per cell, with the hardware named.

Input: the Snakemake ``benchmark:`` files of the rules, ``<cell dir>/benchmarks/<rule>.tsv`` (rule =
train, select, certify, attack, ...; the file name is the rule, as Snakemake's directive writes it). Their
format: header ``s  h:m:s  max_rss  max_vms  max_uss  max_pss  io_in  io_out  mean_load  cpu_time``
(tab-separated), one row per repeat (the mean of ``s`` is used). A benchmark file measures one job: the
*last attempt* of a rule — Snakemake overwrites it when a job is retried, and a job that resumed from an
earlier attempt's state (a training checkpoint, ``certify``'s partial state) ran only the rest. So:

* ``train_s`` is the training's own record, which survives resumes: the sum of the attempts' wall times in
  ``<cell dir>/train/attempts.csv`` (``ctbench.training``: every call of ``ctbench train``, e.g. a killed job,
  its retry, or a job that restored a finished checkpoint from ``train/stale/`` and only re-wrote the
  candidates); for runs trained before that file existed, the sum of the epoch times ``time_s`` of
  ``train/history.csv`` (set-up not counted). Only without both is it the benchmark file's last job.
* ``certify_s`` is the benchmark's, unless the per-sample times in ``certify.h5`` (kept across resumes) add up
  to more: the job resumed, and the cascade time over all attempts (set-up not counted) is shown instead.
* any other ``<rule>_s`` is the benchmark's: the last attempt, which is all that is known of a retried job.

Where a number could not add up all attempts, its ``timing`` entry says so in words ("last attempt only,
earlier attempts not summed"); ``total_s`` is then a lower bound for a job that was retried.

Column ``timing`` names the source of each number of the row; ``total_s`` adds the stages it names, and is
left empty where one of them is unknown. ``cell_dir`` is relative to the working directory (outside it: from
the ``results`` folder on, else from the cells' common folder) — never an absolute path of the machine.

A benchmark file has no cell identity of its own: it belongs to the cell whose ``certify.h5`` /
``metrics.json`` (given with ``--certify`` / ``--metrics``) lies in the same cell directory (the parent
of ``benchmarks/``); unmatched files are listed by that directory. ``--certify`` also adds the cascade's
per-stage seconds (``stage_time_s``) as ``stage_<stage>_s``. The hardware is ``--hardware``, else the
``hardware`` attribute of those files (or of their ``model_provenance``), else ``unknown``.

Outputs (``--out-dir``): ``cost.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method, seed,
cell_dir, hardware, <rule>_s ..., total_s, max_rss_mb, stage_<stage>_s ..., timing`` (seconds). The tables
and the figure state how many test samples each cell certified and of which data (``df.attrs["data_note"]``,
from ``certify.h5`` / ``metrics.json``).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "cost"
INPUTS = {"certify": ("all", "certify.h5"),  # ctbench.analysis.protocol
          "benchmarks": ("all", ("benchmarks/train.tsv", "benchmarks/certify.tsv", "benchmarks/attack.tsv"))}
RULE_ORDER = ("train", "select", "certify", "attack", "summarize")
HARDWARE_KEYS = ("hardware", "gpu_name", "device_name")


@dataclass(frozen=True)
class StageTime:
    """One stage's seconds and where they come from (the text of column ``timing``)."""

    seconds: float
    source: str


def read_benchmark(path: str | Path) -> dict:
    """One Snakemake benchmark TSV → ``{"s": mean seconds over repeats, "max_rss_mb": max, "repeats": n}``."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    except (OSError, ValueError) as e:
        raise CTBenchError(f"cannot read benchmark file {path}: {str(e).splitlines()[0]}") from None
    if "s" not in df.columns or df.empty:
        raise CTBenchError(f"{path} is not a Snakemake benchmark file (needs a header with column 's' and a row)")
    rss = pd.to_numeric(df.get("max_rss"), errors="coerce") if "max_rss" in df else None
    return {"s": float(pd.to_numeric(df["s"], errors="coerce").mean()), "repeats": len(df),
            "max_rss_mb": float(rss.max()) if rss is not None and rss.notna().any() else math.nan}


def _read_csv(path: Path, columns, what: str):
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise CTBenchError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CTBenchError(f"{path} is not a ctbench {what} (missing column(s) {', '.join(missing)})")
    return df


def history_epochs(cell_dir: Path) -> tuple[int, float] | None:
    """``(epochs, sum of their time_s)`` of ``train/history.csv``; None without the file; the sum is NaN
    when an epoch's time is missing."""
    import pandas as pd

    path = cell_dir / "train" / "history.csv"
    if not path.is_file():
        return None
    times = pd.to_numeric(_read_csv(path, ("epoch", "time_s"), "training history")["time_s"], errors="coerce")
    return len(times), float(times.sum()) if times.notna().all() else math.nan


def attempts_time(cell_dir: Path, epochs: int | None) -> tuple[float, int] | None:
    """``(sum of wall_s, number of attempts)`` of ``train/attempts.csv``, or None when the file is absent or
    does not cover the run: the attempts must run on from epoch 0 without a gap to the history's last epoch
    (a run resumed from a checkpoint older than the file starts later: its first attempts are unknown)."""
    import pandas as pd

    path = cell_dir / "train" / "attempts.csv"
    if not path.is_file():
        return None
    from ctbench.training import ATTEMPT_COLUMNS

    df = _read_csv(path, ATTEMPT_COLUMNS, "training attempts file").sort_values("attempt")
    start, end = df["start_epoch"].to_numpy(), df["end_epoch"].to_numpy()
    wall = pd.to_numeric(df["wall_s"], errors="coerce")
    chained = len(df) > 0 and start[0] == 0 and (start[1:] == end[:-1]).all()
    if not chained or wall.isna().any() or (epochs is not None and end[-1] != epochs):
        return None
    return float(wall.sum()), len(df)


def train_time(cell_dir: Path, bench: dict) -> StageTime:
    """The training's total wall time over all its attempts (see the module docstring for the order)."""
    history = history_epochs(cell_dir)
    attempts = attempts_time(cell_dir, history[0] if history else None)
    if attempts is not None:
        seconds, n = attempts
        return StageTime(seconds, f"train/attempts.csv, {n} attempt{'s' if n > 1 else ''}")
    if history is not None:
        if math.isnan(history[1]):
            return StageTime(math.nan, "unknown: train/history.csv lacks epoch times")
        return StageTime(history[1], f"train/history.csv, {history[0]} epochs, set-up not counted")
    return StageTime(bench["s"], _benchmark_source(bench, f"last job only, {NOT_SUMMED}"))


def certify_time(bench: dict, cascade_s: float | None) -> StageTime:
    """The benchmark's seconds, unless ``certify.h5``'s per-sample times (kept across resumes) exceed them:
    a resumed job, whose benchmark misses the earlier attempts — then the cascade's time over all of them."""
    if cascade_s is not None and cascade_s > 1.01 * bench["s"]:
        return StageTime(cascade_s, "certify.h5 per-sample times (resumed job: all attempts, set-up not counted)")
    return StageTime(bench["s"], _benchmark_source(bench, f"last attempt only, {NOT_SUMMED}"))


#: said of every benchmark-timed number: Snakemake's file holds one job, so a retry's earlier attempts are lost
NOT_SUMMED = "earlier attempts not summed"


def _benchmark_source(bench: dict, what: str) -> str:
    repeats = f", mean of {bench['repeats']} repeats" if bench["repeats"] > 1 else ""
    return f"benchmark, {what}{repeats}"


def stage_time(rule: str, cell_dir: Path, bench: dict, ident: dict) -> StageTime:
    if rule == "train":
        return train_time(cell_dir, bench)
    if rule == "certify":
        return certify_time(bench, ident.get("cascade_s"))
    return StageTime(bench["s"], _benchmark_source(bench, f"last attempt only, {NOT_SUMMED}"))


def relative_dirs(dirs, cwd: Path | None = None) -> dict[Path, str]:
    """Each (resolved) directory as a relative path, never an absolute one: relative to ``cwd`` (default: the
    working directory) when inside it, else from its last ``results`` folder on, else relative to the common
    folder of such remaining directories (its parent, when that is one of them)."""
    cwd = (cwd or Path.cwd()).resolve()
    out, rest = {}, []
    for d in dirs:
        if d.is_relative_to(cwd):
            out[d] = d.relative_to(cwd).as_posix()
        elif "results" in d.parts:
            k = len(d.parts) - 1 - d.parts[::-1].index("results")
            out[d] = Path(*d.parts[k:]).as_posix()
        else:
            rest.append(d)
    if rest:
        base = Path(os.path.commonpath(rest))
        base = base.parent if base in rest else base
        out.update({d: d.relative_to(base).as_posix() for d in rest})
    return out


def _hardware_of(meta: dict) -> str | None:
    for source in (meta, meta.get("model_provenance") if isinstance(meta.get("model_provenance"), dict) else {}):
        for k in HARDWARE_KEYS:
            if source.get(k):
                return str(source[k])
    return None


def identities(certify=(), metrics=()) -> dict[Path, dict]:
    """Cell directory → ``{"cell", "hardware", "device", "stage_s", "cascade_s"}`` from the identity files
    (``cascade_s``: the sum of ``certify.h5``'s per-sample times, which a resumed job keeps)."""
    out: dict[Path, dict] = {}
    for item in C.read_all(certify):
        stage_s = dict(zip(item.stages, map(float, item.data.get("stage_time_s", [])), strict=False))
        per_sample = item.data.get("time_s")
        out[item.path.parent.resolve()] = {"cell": item.cell, "hardware": _hardware_of(item.attrs),
                                           "device": item.attrs.get("device"), "stage_s": stage_s,
                                           "cascade_s": float(per_sample.sum()) if per_sample is not None else None,
                                           "samples": (item.cell.dataset, item.attrs.get("split"), item.sample_index),
                                           "samples_from": "certify.h5"}
    for row in C.read_metrics(metrics):
        entry = out.setdefault(row["path"].parent.resolve(), {"cell": row["cell"], "stage_s": {}, "device": None,
                                                              "hardware": None})
        entry["hardware"] = entry["hardware"] or _hardware_of(row["meta"])
        if "samples" not in entry and row["meta"].get("n") is not None:
            entry["samples"] = (row["cell"].dataset, row["meta"].get("split"), int(row["meta"]["n"]))
            entry["samples_from"] = "metrics.json"
    return out


def cost_table(benchmarks, certify=(), metrics=(), hardware: str | None = None):
    """One row per cell (seconds), sorted in the paper's order; ``timing`` names each number's source."""
    import pandas as pd

    known = identities(certify, metrics)
    cells: dict[Path, dict[str, dict]] = {}
    for p in C.require(benchmarks, "benchmark"):
        cells.setdefault(p.parent.parent.resolve(), {})[p.stem] = read_benchmark(p)
    shown = relative_dirs(cells)
    rows = [_row(cell_dir, shown[cell_dir], benches, known.get(cell_dir, {}), hardware)
            for cell_dir, benches in cells.items()]
    rows.sort(key=lambda cr: (cr[0] is None, cr[0].sort_key() if cr[0] else cr[1]["cell_dir"]))
    df = pd.DataFrame([r for _, r in rows])
    first = ["dataset", "eps", "model", "method", "seed", "cell_dir", "hardware"]
    stages = [c for c in df.columns if c.startswith("stage_")]
    df = df[first + sorted(rule_columns(df), key=_rule_key) + ["total_s", "max_rss_mb"] + stages + ["timing"]]
    df.attrs["data_note"] = data_note([known.get(d, {}) for d in cells])
    return df


def data_note(idents: list[dict]) -> str:
    """How many test samples the cells certified, and of which data (``gridtables.samples_note``), from the
    cells' ``certify.h5`` (else ``metrics.json``); cells with neither are counted as unknown."""
    from ctbench.analysis.gridtables import samples_note

    known = [i for i in idents if i.get("samples") is not None]
    sources = ", ".join(dict.fromkeys(i["samples_from"] for i in known)) or "certify.h5 / metrics.json"
    note = samples_note([i["samples"] for i in known], unit="certified samples", source=sources) if known else \
        "Samples: unknown (give --certify or --metrics of the cells)."
    unknown = len(idents) - len(known)
    return note + (f" {unknown} cell(s) without certify.h5/metrics.json: n unknown." if known and unknown else "")


def _row(cell_dir: Path, shown: str, benches: dict[str, dict], ident: dict, hardware: str | None):
    """``(cell or None, row dict)`` of one cell directory."""
    cell = ident.get("cell")
    hw = hardware or ident.get("hardware") or (f"unknown (device {ident['device']})" if ident.get("device")
                                               else "unknown")
    times = {rule: stage_time(rule, cell_dir, b, ident) for rule, b in benches.items()}
    rules = sorted(times, key=lambda r: _rule_key(f"{r}_s"))
    row = {"dataset": cell.dataset if cell else "", "eps": cell.eps if cell else "",
           "model": cell.model if cell else "", "method": cell.label if cell else "",
           "seed": cell.seed if cell else "", "cell_dir": shown, "hardware": hw,
           **{f"{r}_s": times[r].seconds for r in rules}}
    row["total_s"] = float(sum(times[r].seconds for r in rules))  # NaN (unknown) if one stage is
    rss = [b["max_rss_mb"] for b in benches.values() if not math.isnan(b["max_rss_mb"])]
    row["max_rss_mb"] = max(rss) if rss else math.nan
    row.update({f"stage_{s}_s": t for s, t in ident.get("stage_s", {}).items()})
    row["timing"] = "; ".join(f"{r}: {times[r].source}" for r in rules)
    return cell, row


def rule_columns(df) -> list[str]:
    """The ``<rule>_s`` columns (not ``total_s``, not the cascade's ``stage_<stage>_s``)."""
    return [c for c in df.columns if c.endswith("_s") and not c.startswith("stage_") and c != "total_s"]


def _rule_key(col: str) -> tuple:
    rule = col[:-2]
    return (RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER), rule)


TIMING_NOTE = (
    "Where each number comes from (column `timing`): train — the training's own record of all its attempts "
    "(`train/attempts.csv`; a resumed, retried or restored run included), else the epoch times of "
    "`train/history.csv`; other stages — Snakemake's benchmark file, which holds a job's last attempt only: a "
    "retried job's earlier attempts are not in it, and each such number says so in `timing` (\"last attempt "
    "only, earlier attempts not summed\"; for certify, a resumed job is recognised from `certify.h5` and its "
    "cascade time over all attempts shown). `total_s` adds the stages of its row (a lower bound where a "
    "retried job counts its last attempt only); it is empty where one of them is unknown.")

LATEX_NOTE = ("train: all attempts of the training (train/attempts.csv or history.csv); other stages: Snakemake "
              "benchmark files, the last attempt of a retried job only, earlier attempts not summed (per row: "
              "column timing of cost.csv)")


def to_latex(df) -> str:
    """Table 12's layout: Dataset, ε, Method, then one time column per rule (seconds, ``a×10^b``)."""
    from ctbench.analysis.gridtables import DATASET_NAMES, latex_table, latex_text, method_name, sci_tex

    rules = rule_columns(df)
    rows = [[latex_text(DATASET_NAMES.get(r["dataset"], r["dataset"]) or r["cell_dir"]),
             f"${latex_text(r['eps'])}$" if r["eps"] else "", latex_text(f"{r['model']} seed{r['seed']}"),
             latex_text(method_name(r["method"])), *(sci_tex(r[c]) for c in rules), sci_tex(r["total_s"])]
            for r in df.to_dict("records")]
    header = ["Dataset", r"$\epsilon$", "Model", "Method",
              *(latex_text(c[:-2].replace("_", " ").capitalize()) + " (s)" for c in rules), "Total (s)"]
    hw = "; ".join(sorted(set(df["hardware"])))
    return latex_table(rows, header, group_cols=2, align="llll" + "r" * (len(rules) + 1),
                       comment=f"CTBench Table 12 layout (ctbench analyze cost); hardware: {hw}; {LATEX_NOTE}")


def figure(tables: list, out_stem: Path) -> list[Path]:
    """Seconds per rule for each cell (log scale), one panel per setting; the sample count and data source
    (``df.attrs["data_note"]``) below."""
    import numpy as np

    from ctbench.analysis.gridtables import method_name, one_table, panels, save_figure, setting_name

    df, note = one_table(tables)

    rules = rule_columns(df)
    settings = list(dict.fromkeys(zip(df.dataset, df.eps, strict=True)))
    fig, axes = panels(len(settings))
    for ax, (dataset, eps) in zip(axes, settings, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps)]
        x = np.arange(len(block))
        width = 0.8 / max(len(rules), 1)
        for k, col in enumerate(rules):
            ax.bar(x + (k - (len(rules) - 1) / 2) * width, block[col].to_numpy(float), width, label=col[:-2])
        labels = [f"{method_name(m)} s{s}" for m, s in zip(block.method, block.seed, strict=True)]
        ax.set_xticks(x, labels, rotation=45, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("wall time [s]")
        ax.set_title(setting_name(dataset, eps) if dataset else "unidentified cells")
    axes[0].legend()
    return save_figure(fig, out_stem, note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmarks", nargs="+", required=True, type=Path,
                        help="Snakemake benchmark files <cell dir>/benchmarks/<rule>.tsv")
    parser.add_argument("--certify", nargs="*", type=Path, default=[],
                        help="certify.h5 of the cells: identity, hardware and per-stage certification seconds")
    parser.add_argument("--metrics", nargs="*", type=Path, default=[], help="metrics.json of the cells (identity)")
    parser.add_argument("--hardware", default=None,
                        help="hardware description (default: from the files' provenance, else 'unknown')")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import write_tables

    df = cost_table(args.benchmarks, args.certify, args.metrics, args.hardware)
    hw = "; ".join(sorted(set(df["hardware"])))
    notes = [f"Hardware: {hw}.", TIMING_NOTE]
    if (df["dataset"] == "").any():
        notes.append("Cells without a given certify.h5/metrics.json are named by their directory (`cell_dir`).")
    written = write_tables(args.out_dir, NAME, df, latex=to_latex(df), notes=notes,
                           title=f"Wall time per stage and cell [s] (Table 12; hardware: {hw})",
                           data_note=df.attrs.get("data_note", ""))
    if not args.no_figure:
        written += figure([df], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0
