"""Paper tables from per-cell summaries: Table 1 (``results/table1.csv|.md|.tex``), the three-seed
statistics of Tables 13–17 (``results/seeds.csv``) and the ablations (``results/ablations.csv|.md``:
variants and extra cells such as CNN5 beside their base cells; Tables 3, 18, Fig. 7).

Inputs are the per-cell ``metrics.json`` files (written by ``ctbench summarize``). A cell's identity
(dataset, ε token, model, method, variant, seed) comes from the file's ``cell`` entry (files without one:
from the results path ``{dataset}/{eps}/{model}/{run}/seed{seed}``); the numbers are ``nat_acc``,
``cert_acc``, ``adv_acc`` as fractions in [0, 1] (``cert_acc``/``adv_acc`` may be null for standard training).

With ``manifest`` (``results/cells.json``, the workflow's current grid with every cell's fingerprints)
the report refuses — one error naming the cells — any summary whose fingerprint is not the current
configuration's, or that belongs to no current cell: results made under another configuration are never
reported as current ones. The manifest also says which cells are Table 1's.

Table 1 (paper §4.2): one row per (dataset, ε, method) with the literature values and the CTBench
paper's values (``config/literature.yaml``) beside ours, in percent. Like the paper, ours come from one
fixed seed (the first configured seed); ``seeds.csv`` has mean ± std over all seeds (paper App. D.1).
Rows that are not the paper's setting say so in ``note`` (reduced-scale: the embedded MNIST subset,
another model, fewer epochs, fewer certified samples; a model selected on a held-out part of the
training set instead of the test split); ``cert_dagger`` marks cells whose complete
verification covered only the first N samples (paper Table 1, †).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from ctbench import core as core_names
from ctbench.core import METHOD_NAMES, MODEL_NAMES
from ctbench.errors import CTBenchError
from ctbench.io import atomic_path, write_text

logger = logging.getLogger(__name__)

CELL_RE = re.compile(r"(?P<dataset>[^/]+)/(?P<eps>[^/]+)/(?P<model>[^/]+)/(?P<run>[^/]+)/seed(?P<seed>\d+)"
                     r"/metrics\.json$")
METRICS = ("nat", "cert", "adv")
IDENTITY = ("dataset", "eps", "model", "method", "variant", "seed")
#: What Table 1 of the paper used, to say when a row is a reduced-scale run.
PAPER_SCALE = {"model": "cnn7", "test_samples": {"mnist": 10000, "cifar10": 10000, "tinyimagenet": 10000}}


def _identity(path: Path, data: dict) -> dict:
    cell = data.get("cell")
    if isinstance(cell, dict) and all(cell.get(k) is not None for k in ("dataset", "eps", "method", "seed")):
        return {"dataset": cell["dataset"], "eps": cell["eps"], "model": cell.get("model") or data.get("model"),
                "method": cell["method"], "variant": cell.get("variant") or "", "seed": int(cell["seed"])}
    m = CELL_RE.search(path.as_posix())
    if not m or m["model"] not in MODEL_NAMES:  # the architectures of ctbench.models (ctbench.core's list)
        raise CTBenchError(f"{path} does not follow results/{{dataset}}/{{eps}}/{{model}}/{{method}}/seed{{seed}}/"
                           "metrics.json and names no cell")
    method, _, variant = m["run"].partition("+")
    return {"dataset": m["dataset"], "eps": m["eps"], "model": m["model"], "method": method,
            "variant": variant, "seed": int(m["seed"])}


def read_cells(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per cell: its identity, nat / cert / adv (percent), what the note and † need, fingerprint."""
    rows = []
    for p in map(Path, paths):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CTBenchError(f"cannot read cell summary {p}: {e}") from None
        row = {**_identity(p, data), "path": str(p)}
        for k in METRICS:
            v = data.get(f"{k}_acc")
            row[k] = None if v is None else 100.0 * float(v)
        row.update(n=data.get("n"), split=data.get("split"), complete_limit=data.get("complete_limit"),
                   epochs=data.get("epochs"),
                   epochs_paper=data.get("epochs_paper"), train_subset=data.get("train_subset"),
                   selection_split=data.get("selection_split") or "test",
                   fingerprint=(data.get("fingerprints") or {}).get("summarize"))
        rows.append(row)
    columns = [*IDENTITY, *METRICS, "n", "split", "complete_limit", "epochs", "epochs_paper", "train_subset",
               "selection_split", "fingerprint", "path"]
    return pd.DataFrame(rows, columns=columns)


def check_manifest(cells: pd.DataFrame, manifest_path: str | Path) -> pd.DataFrame:
    """Refuse cells that are not current (see module docstring); returns ``cells`` with a ``table1`` flag."""
    try:
        manifest = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError) as e:
        raise CTBenchError(f"cannot read the grid manifest {manifest_path}: {e}") from None
    current = {tuple(e["cell"][k] for k in IDENTITY): e for e in manifest.get("cells", [])}
    stale, flags, changes = [], [], []
    for r in cells.itertuples(index=False):
        key = tuple(getattr(r, k) for k in IDENTITY)
        entry = current.get(key)
        label = f"{r.dataset}/{r.eps}/{r.model}/{r.method}{'+' + r.variant if r.variant else ''}/seed{r.seed}"
        if entry is None:
            stale.append(f"{label} (not a cell of the current configuration)")
        elif entry["fingerprints"]["summarize"] != r.fingerprint:
            stale.append(f"{label} (made under fingerprint {r.fingerprint or 'none'}, current "
                         f"{entry['fingerprints']['summarize']})")
        flags.append(bool(entry and entry.get("table1")))
        changes.append((entry or {}).get("changes", ""))
    if stale:
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise CTBenchError(f"{len(stale)} cell summaries do not match the current configuration: "
                           f"{'; '.join(stale[:5])}{more}. Re-run the workflow to recompute them "
                           "(snakemake recomputes exactly these), or report them with their own configuration")
    return cells.assign(table1=flags, changes=changes)


def _literature(path: str | Path) -> dict:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CTBenchError(f"cannot read literature values {path}: {e}") from None


def _setting_key(dataset: str, eps: str) -> str:
    return f"{'mnist' if dataset == 'mnist_mini' else dataset}_{eps}"


def _num(v) -> bool:
    return v is not None and not (isinstance(v, float) and pd.isna(v))


def scale_note(row, hparams: dict | None) -> str:
    """Why a row is not the paper's setting (reduced-scale run), or "" when it is."""
    notes = []
    if row.dataset == "mnist_mini":
        notes.append("mnist_mini (6,000/1,000-image MNIST subset)")
    if _num(row.model) and row.model != PAPER_SCALE["model"]:
        notes.append(f"{row.model} (paper: CNN7)")
    setting = (hparams or {}).get("settings", {}).get(_setting_key(row.dataset, row.eps), {})
    if _num(row.epochs) and setting.get("epochs") and int(row.epochs) < int(setting["epochs"]):
        notes.append(f"{int(row.epochs)} epochs (paper: {setting['epochs']})")
    if _num(row.train_subset):
        notes.append(f"first {int(row.train_subset)} training images")
    full = PAPER_SCALE["test_samples"].get("mnist" if row.dataset == "mnist_mini" else row.dataset)
    if _num(row.n) and full and int(row.n) < full:
        notes.append(f"{int(row.n)} test samples")
    return "reduced scale: " + ", ".join(notes) if notes else ""


def row_note(row, hparams: dict | None) -> str:
    """Table 1's note of a row: reduced scale, and model selection on a held-out split (the paper's, as the
    original code's, selects on the test split)."""
    notes = [scale_note(row, hparams)]
    split = getattr(row, "selection_split", None)
    if _num(split) and split != "test":
        rest = ", trained on the rest" if str(split).startswith("held-out") else ""
        notes.append(f"model selected on {split}{rest}")
    return "; ".join(n for n in notes if n)


def _dagger(row) -> str:
    if _num(row.complete_limit) and (not _num(row.n) or int(row.complete_limit) < int(row.n)):
        return f"complete verification on the first {int(row.complete_limit)} samples only"
    return ""


def table1(cells: pd.DataFrame, literature: dict, seed: int | None = None, hparams: dict | None = None) -> pd.DataFrame:
    """Paper Table 1 layout; ours from ``seed`` (default: the smallest seed present per cell)."""
    rows = []
    for (dataset, eps, model, method), group in cells.groupby(["dataset", "eps", "model", "method"], sort=False,
                                                               dropna=False):
        pick = group[group.seed == seed] if seed is not None else group[group.seed == group.seed.min()]
        if pick.empty:
            continue
        ours = pick.iloc[0]
        lit = literature.get("table1", {}).get(_setting_key(dataset, eps), {}).get(method)
        nat_lit, nat_ct, cert_lit, cert_ct, adv_ct = lit if lit else [None] * 5
        if method == "standard":
            nat_lit = literature.get("standard_nat", {}).get("mnist" if dataset == "mnist_mini" else dataset)
        rows.append({
            "dataset": dataset, "eps": eps.replace("_", "/"), "model": model,
            "method": METHOD_NAMES.get(method, method),
            "source": literature.get("sources", {}).get(method, "/"), "seed": int(ours.seed),
            "nat_literature": nat_lit, "nat_ctbench_paper": nat_ct, "nat": ours.nat,
            "cert_literature": cert_lit, "cert_ctbench_paper": cert_ct, "cert": ours.cert,
            "cert_dagger": _dagger(ours), "adv_ctbench_paper": adv_ct, "adv": ours.adv,
            "note": row_note(ours, hparams),
            "n": ours.n, "split": ours.split,  # the samples nat / cert / adv rest on (metrics.json)
        })
    return pd.DataFrame(rows)


def seed_statistics(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean and (sample) standard deviation over seeds per (dataset, ε, model, method) (paper Tables 13–17):
    :func:`ctbench.analysis.seeds.seed_statistics`, the analysis ``seeds``' numbers, with display names."""
    from ctbench.analysis.seeds import seed_statistics as over_seeds

    out = over_seeds(cells, ("dataset", "eps", "model", "method"))
    out["n_samples"] = [_samples(cells[(cells.dataset == r.dataset) & (cells.eps == r.eps) & (cells.model == r.model)
                                       & (cells.method == r.method)]) for r in out.itertuples()]
    out["eps"] = out["eps"].str.replace("_", "/")
    out["method"] = out["method"].map(lambda m: METHOD_NAMES.get(m, m))
    return out


def _samples(group: pd.DataFrame) -> str:
    """The evaluated samples per cell of ``group`` as recorded ("500", "500–1000", "" where not recorded)."""
    ns = pd.to_numeric(group.n, errors="coerce").dropna().astype(int)
    return "" if ns.empty else str(ns.min()) if ns.min() == ns.max() else f"{ns.min()}–{ns.max()}"


def ablations(cells: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Variants and extra cells (``cells``) beside their base cells (``base``, Table 1's): mean ± std over
    seeds, what changed, and the base cell's means (same dataset, ε, method; same model if present)."""
    columns = ["dataset", "eps", "model", "method", "variant", "changes", "n_seeds", "nat_mean", "nat_std",
               "cert_mean", "cert_std", "adv_mean", "adv_std", "base_model", "base_nat", "base_cert", "base_adv",
               "n_samples"]
    rows = []
    keys = ["dataset", "eps", "model", "method", "variant"]
    for key, group in cells.groupby(keys, sort=False, dropna=False):
        dataset, eps, model, method, variant = key
        ref = base[(base.dataset == dataset) & (base.eps == eps) & (base.method == method)]
        same = ref[ref.model == model]
        ref = same if not same.empty else ref
        change = group.changes.iloc[0] if "changes" in group and group.changes.iloc[0] else (
            f"model={model}" if not variant else variant)
        row = {"dataset": dataset, "eps": eps.replace("_", "/"), "model": model,
               "method": METHOD_NAMES.get(method, method), "variant": variant, "changes": change, "n_seeds": len(group),
               "n_samples": _samples(group),
               "base_model": ref.model.iloc[0] if not ref.empty else None}
        for m in METRICS:
            vals = pd.to_numeric(group[m], errors="coerce")
            row[f"{m}_mean"], row[f"{m}_std"] = vals.mean(), vals.std(ddof=1)
            row[f"base_{m}"] = pd.to_numeric(ref[m], errors="coerce").mean() if not ref.empty else None
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def to_markdown(df: pd.DataFrame, title: str, footnotes: Iterable[str] = ()) -> str:
    def fmt(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "/"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = [f"# {title}", "", "| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    notes = [n for n in footnotes if n]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


#: ``ctbench.core.DATASET_NAMES``, the shipped subset named as such in the samples note.
DATASET_NAMES = {**core_names.DATASET_NAMES, "mnist_mini": "mnist_mini (shipped MNIST subset)"}


def samples_note(cells: pd.DataFrame) -> str:
    """What the accuracies rest on, from the cells' ``metrics.json``: per (dataset, split) the number of
    evaluated samples per cell (a range where cells differ), e.g. "Samples: n = 1,000 test samples per cell
    (MNIST test split; nat, cert and adv of the same samples)."; "" for no cells."""
    parts = []
    for (dataset, split), group in cells.groupby([cells.dataset, cells.split.fillna("")], sort=True):
        ns = pd.to_numeric(group.n, errors="coerce").dropna().astype(int)
        count = "" if ns.empty else f"{ns.min():,}" if ns.min() == ns.max() else f"{ns.min():,}–{ns.max():,}"
        n = f"n = {count} samples per cell" if count else "n not recorded"
        where = f"{DATASET_NAMES.get(dataset, dataset)} {split} split" if split else \
            f"{DATASET_NAMES.get(dataset, dataset)}, split not recorded"
        parts.append(f"{n} ({where})")
    return ("Samples: " + "; ".join(parts) + "; nat, cert and adv of the same samples.") if parts else ""


def table1_markdown(t1: pd.DataFrame, samples: str = "") -> str:
    """Table 1 for people: † on certified accuracies from a limited complete stage, notes as footnotes."""
    shown = t1.drop(columns=["cert_dagger", "note", "n", "split"], errors="ignore").copy()
    shown["cert"] = [("/" if not _num(c) else f"{c:.2f}") + (" †" if d else "") for c, d in
                     zip(t1.cert, t1.cert_dagger, strict=True)]
    notes, marks = [], []
    for note in t1.note:
        if note and note not in notes:
            notes.append(note)
        marks.append(f"[{notes.index(note) + 1}]" if note else "")
    shown["note"] = marks
    foot = [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    daggers = sorted({d for d in t1.cert_dagger if d})
    foot += [f"† {d} (paper Table 1: PGD/EDAC are complete-verified on the first 10 test samples)" for d in daggers]
    foot += [samples] if samples else []
    return to_markdown(shown, "CTBench Table 1: ours beside the literature (percent)", foot)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_DATASET_TEX = {"mnist": "MNIST", "mnist_mini": "MNIST (mini)", "cifar10": "CIFAR-10", "tinyimagenet": "TinyImageNet"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(t1: pd.DataFrame) -> str:
    """Table 1 as a LaTeX ``tabular`` (booktabs) in the paper's layout: one block per (dataset, ε),
    literature | CTBench paper | ours; ``/`` where a value does not exist (e.g. certified accuracy of
    standard training). Needs ``\\usepackage{booktabs}``."""

    def num(v):
        return "/" if v is None or (isinstance(v, float) and pd.isna(v)) else f"{float(v):.2f}"

    lines = [
        "% CTBench Table 1 (ctbench report): accuracies in percent",
        r"\begin{tabular}{lllrrrrrrrr}",
        r"\toprule",
        r" & & & \multicolumn{2}{c}{Literature} & \multicolumn{3}{c}{CTBench paper} & \multicolumn{3}{c}{Ours} \\",
        r"\cmidrule(lr){4-5} \cmidrule(lr){6-8} \cmidrule(lr){9-11}",
        r"Dataset & $\epsilon$ & Method & Nat. & Cert. & Nat. & Cert. & Adv. & Nat. & Cert. & Adv. \\",
    ]
    for (dataset, eps), block in t1.groupby(["dataset", "eps"], sort=False):
        lines.append(r"\midrule")
        for k, r in enumerate(block.itertuples(index=False)):
            first = k == 0
            cells = [
                latex_escape(_DATASET_TEX.get(dataset, dataset)) if first else "",
                f"${latex_escape(eps)}$" if first else "",
                latex_escape(r.method),
                num(r.nat_literature), num(r.cert_literature),
                num(r.nat_ctbench_paper), num(r.cert_ctbench_paper), num(r.adv_ctbench_paper),
                num(r.nat), num(r.cert) + (r"$^\dagger$" if getattr(r, "cert_dagger", "") else ""), num(r.adv),
            ]  # fmt: skip
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.2f")


def write_reports(cell_files: list[str | Path], literature_path: str | Path, out_dir: str | Path,
                  seed: int | None = None, manifest: str | Path | None = None,
                  hparams_path: str | Path | None = None,
                  tables: tuple[str, ...] = ("table1", "ablations")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``table1.csv|md|tex`` and ``seeds.csv`` (``tables`` has ``table1``) and ``ablations.csv|md``
    (``tables`` has ``ablations``) into ``out_dir``; returns (Table 1, seed statistics).

    With ``manifest`` every cell must be current (see module docstring) and Table 1 holds the manifest's
    Table 1 cells; without it, Table 1 holds every base cell (no variant)."""
    from ctbench.config import load_hparams

    if not cell_files:
        raise CTBenchError("no cell summaries given (expected results/{dataset}/{eps}/{model}/{method}/seed{seed}/"
                           "metrics.json)")
    cells = read_cells(cell_files)
    if manifest is not None:
        cells = check_manifest(cells, manifest)
    else:
        cells = cells.assign(table1=cells.variant == "")
    literature = _literature(literature_path)
    hparams = load_hparams(hparams_path) if hparams_path is not None else None
    base = cells[cells.table1]
    t1 = table1(base, literature, seed, hparams)
    stats = seed_statistics(base)
    abl = ablations(cells[~cells.table1], base)
    out = Path(out_dir)
    if "table1" in tables:
        _write_csv(t1, out / "table1.csv")
        write_text(out / "table1.md", table1_markdown(t1, samples_note(base)))
        write_text(out / "table1.tex", to_latex(t1))
        _write_csv(stats, out / "seeds.csv")
    if "ablations" in tables:
        _write_csv(abl, out / "ablations.csv")
        write_text(out / "ablations.md", to_markdown(abl, "Ablations: variants and extra cells beside their base "
                                                         "cells (percent, mean and std over seeds)",
                                                    [samples_note(cells[~cells.table1])]))
    return t1, stats
