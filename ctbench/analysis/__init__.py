"""The paper's analyses (CTBench §5, App. D): one module per analysis, one registry.

Two kinds, by what they read:

* ``model`` — one stored model (``model.pt``) and its dataset: loss fragmentation (Fig. 3, 9, Table 5),
  model utilization (Fig. 4, 10), propagation tightness (Fig. 5), corruption robustness (Fig. 6, 11).
  Each writes one Parquet table per model (``results/.../seed{seed}/analysis/<name>.parquet``).
* ``grid`` — the per-sample vectors and summaries of many cells (``certify.h5``, ``attack.h5``,
  ``metrics.json``, the rules' ``benchmarks/*.tsv``): shared mistakes (Tables 2, 20, 21), verifier
  agreement (Table 19), incomplete vs complete (Table 22), cost (Table 12), seeds (Tables 13-17),
  the robustness-accuracy trade-off (Fig. 1, 8), the reduction in certified error (Fig. 1), unstable
  neurons per method from the per-model fragmentation tables (Table 5), measured training cost relative to
  standard training from ``train/history.csv`` (Table 11). Outputs go to ``results/analysis/``.

The registry maps a name to ``(module, kind, one-line summary)``; the names and kinds are
:data:`ctbench.core.ANALYSIS_KINDS` (the grid reads them there). The module is imported only when the
analysis runs, so ``ctbench analyze --help`` stays fast. Every module declares one protocol
(:mod:`ctbench.analysis.protocol`; ``tests/test_analysis_protocol.py`` checks it)::

    NAME = "<name>"
    INPUTS = {option: (cells, pattern) | "config:<key>"}   # what it reads; the workflow takes it from here
    ARGS = (...)                                            # optional: further options the workflow passes
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int         # the CLI handler
    def figure(tables: list[pd.DataFrame], out_stem: Path) -> list[Path]    # PNG + PDF

Analyses never import training code; they read stored artefacts only (DESIGN.md).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import NamedTuple

from ctbench.core import ANALYSIS_KINDS
from ctbench.errors import CTBenchError


class Entry(NamedTuple):
    module: str
    kind: str
    summary: str


def _entry(name: str, summary: str) -> Entry:
    """The module ``ctbench.analysis.<name>``, its kind from :data:`ctbench.core.ANALYSIS_KINDS`."""
    return Entry(f"ctbench.analysis.{name}", ANALYSIS_KINDS[name], summary)


#: name → where it lives, its kind and a one-line summary (``ctbench analyze --help``).
ANALYSES: dict[str, Entry] = {
    # per-model analyses (paper §5.1, App. D.4)
    "fragmentation": _entry("fragmentation",
                            "unstable ReLUs per input: sampled lower estimate and IBP upper estimate (Fig. 3, 9)"),
    "utilization": _entry("utilization",
                          "active ReLUs on clean inputs; dead / active / unstable on IBP boxes (Fig. 4, 10)"),
    "tightness": _entry("tightness", "propagation tightness of Mao et al. 2024 (Fig. 5)"),
    "corruption": _entry("corruption", "accuracy on corrupted test sets relative to clean accuracy (Fig. 6, 11)"),
    # cross-cell analyses (paper §5.2, App. D.1-D.3, D.5)
    "shared_mistakes": _entry("shared_mistakes",
                              "how many models certify each sample vs independent failures (Tables 2, 20, 21)"),
    "verifier_agreement": _entry("verifier_agreement",
                                 "agreement of complete verifiers that saw every sample (Table 19)"),
    "complete_gain": _entry("complete_gain", "IBP-only, CROWN-IBP-only and cascade certified accuracy (Table 22)"),
    "cost": _entry("cost", "wall time per stage and cell (Table 12)"),
    "seeds": _entry("seeds", "mean and std over seeds beside the paper, outliers flagged (Tables 13-17)"),
    "tradeoff": _entry("tradeoff", "natural vs certified accuracy, ours beside the literature (Fig. 1, 8)"),
    "error_reduction": _entry("error_reduction",
                              "reduction in certified error against the literature, ours beside the paper's (Fig. 1)"),
    "unstable_neurons": _entry("unstable_neurons",
                               "unstable ReLUs per method: sampled lower vs IBP upper estimate (Table 5)"),
    "cost_ratio": _entry("cost_ratio", "measured training cost per method relative to standard training (Table 11)"),
    "regularization_tradeoff": _entry("regularization_tradeoff",
                                      "natural vs certified accuracy as a sweep varies a regularization strength: "
                                      "SABR/STAPS λ, TAPS gradient scale, MTL-IBP α (Fig. 7)"),
}

if tuple(ANALYSES) != tuple(ANALYSIS_KINDS):  # one list of analyses: ctbench.core's (the grid reads it there)
    raise ImportError("ctbench.analysis.ANALYSES and ctbench.core.ANALYSIS_KINDS name different analyses")
MODEL_ANALYSES = tuple(name for name, e in ANALYSES.items() if e.kind == "model")
GRID_ANALYSES = tuple(name for name, e in ANALYSES.items() if e.kind == "grid")


def get(name: str) -> Entry:
    try:
        return ANALYSES[name]
    except KeyError:
        raise CTBenchError(f"unknown analysis {name!r}; known: {', '.join(ANALYSES)}") from None


def load(name: str) -> ModuleType:
    """Import the module of analysis ``name``."""
    return importlib.import_module(get(name).module)


def apply_settings(parser, args, options: dict, stage: str) -> None:
    """A per-model analysis job's ``--settings`` file applied to its parsed options (``_model_cli``)."""
    from ctbench.analysis._model_cli import apply_settings as apply

    apply(parser, args, options, stage)
