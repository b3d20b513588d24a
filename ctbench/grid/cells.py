"""The cells of a grid: (dataset, ε, model, method, variant, seed), and where each one's results live.

A grid configuration names its cells in four ways (``config/README.md`` documents every key):

* the product ``settings × models × methods × seeds`` — the cells of Table 1;
* ``extra_cells``: more products of the base configuration on other axes, e.g. CNN5 on MNIST 0.3 for
  IBP, SABR and MTL-IBP (App. D.2, Table 18);
* ``variants``: a named set of hyperparameter overrides (``set``) over a filtered product — each adds
  cells beside the base ones, e.g. ``ibp+l1_5e-06`` (Table 3);
* ``sweeps``: a list of variants over the values of one hyperparameter, named ``<sweep>_<value>``
  (Table 3's L1 weights, Fig. 7's λ / α curves).

Results path grammar (the Snakefile's wildcards)::

    results/{dataset}/{eps}/{model}/{run}/seed{seed}/      run = method, or method+variant

``{eps}`` is the path token of ε (``0.1``, ``2_255``). A filter (``settings``, ``models``, ``methods``,
``seeds``) defaults to the grid's own list; settings are named by their hyperparameter key
(``mnist_0.1``, which also covers ``mnist_mini`` at 0.1).
"""

from __future__ import annotations

import re

from ctbench.core import CellId, eps_text, eps_token, setting_key

#: Variant names: path-safe, no ``+`` (the separator of ``method+variant``) and no ``/``.
VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


class Cell(CellId):
    """One trained model and everything computed from it (:class:`ctbench.core.CellId`): ``eps`` is the
    path token, e.g. "0.1" or "2_255"; ``seed`` an int."""

    __slots__ = ()

    @property
    def setting(self) -> str:
        """The hyperparameter setting key, e.g. ``mnist_0.1`` (``mnist_mini`` uses MNIST's)."""
        return setting_key(self.dataset, self.eps)

    @property
    def dir(self) -> str:
        return f"results/{self.dataset}/{self.eps}/{self.model}/{self.run}/seed{self.seed}"

    def label(self) -> str:
        return f"{self.dataset} eps {eps_text(self.eps)} {self.model} {self.run} seed {self.seed}"


def sweep_variant_name(sweep: str, value) -> str:
    """``("l1", 1e-06)`` → ``"l1_1e-06"``; ``("eps_shrink", "2/255")`` → ``"eps_shrink_2_255"``."""
    text = repr(value) if isinstance(value, float) else str(value)
    return f"{sweep}_{text.replace('/', '_').replace(' ', '')}"


def setting_tokens(config: dict) -> list[tuple[str, str]]:
    """``(dataset, eps token)`` of every configured setting, in order."""
    return [(s["dataset"], eps_token(s["eps"])) for s in config["settings"]]


def variants(config: dict) -> dict[str, dict]:
    """Named variants (``variants`` plus the expansion of ``sweeps``): name → {set, filters...}."""
    out = {name: dict(v) for name, v in (config.get("variants") or {}).items()}
    for sweep, s in (config.get("sweeps") or {}).items():
        filters = {k: s[k] for k in ("settings", "models", "methods", "seeds") if k in s}
        for value in s["values"]:
            out[sweep_variant_name(sweep, value)] = {**filters, "set": {s["key"]: value}, "sweep": sweep}
    return out


def _product(config: dict, block: dict, variant: str) -> list[Cell]:
    wanted = block.get("settings")
    models = block.get("models") or config["models"]
    methods = block.get("methods") or config["methods"]
    seeds = block.get("seeds") if block.get("seeds") is not None else config["seeds"]
    cells = []
    for dataset, eps in setting_tokens(config):
        if wanted is not None and setting_key(dataset, eps) not in wanted:
            continue
        for model in models:
            for method in methods:
                for seed in seeds:
                    cells.append(Cell(dataset, eps, model, method, variant, int(seed)))
    return cells


def expand(config: dict) -> list[Cell]:
    """Every cell of the grid, without duplicates, in a stable order (Table 1's first)."""
    cells = _product(config, {}, "")
    for block in config.get("extra_cells") or []:
        cells += _product(config, block, "")
    for name, v in variants(config).items():
        cells += _product(config, v, name)
    seen, out = set(), []
    for c in cells:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def table1_cells(config: dict) -> list[Cell]:
    """The cells of Table 1: the product of the grid's own lists, base configuration."""
    return _product(config, {}, "")
