"""The benchmark grid: one resolution of every cell, shared by the workflow and the jobs.

:class:`Grid` turns a grid configuration (``config/config.yaml``; keys in ``config/README.md``) into its
cells (``ctbench.grid.cells``) and, for each cell, the single resolved configuration of every stage —
the training config (``hparams.yaml`` ← ``overrides`` ← the variant's ``set``), the certification and
attack settings — and their fingerprints (``ctbench.fingerprint``). The Snakefile's params, the
``cell.json`` file the train job trains from, and the check in ``ctbench report`` all come from here,
so what re-runs and what runs cannot disagree (DESIGN.md, "one resolution of a cell").

Example::

    grid = Grid(load_yaml("config/ci.yaml"))
    cell = grid.cells[0]
    grid.train_config(cell)["l1"], grid.fingerprints(cell)["summarize"]
"""

from __future__ import annotations

import copy
import functools
import logging

from ctbench import core, stagefile
from ctbench.config import find_setting, hparam_keys, load_hparams, load_schema, resolve
from ctbench.errors import CTBenchError
from ctbench.fingerprint import stage_fingerprint, train_fingerprint
from ctbench.grid.cells import VARIANT_RE, Cell, expand, setting_tokens, table1_cells, variants
from ctbench.grid.load import check_schema, did_you_mean, load_yaml

__all__ = ["Cell", "Grid", "load_yaml", "CELL_FORMAT"]

logger = logging.getLogger(__name__)

CELL_FORMAT = "ctbench-cell/1"
STAGES = ("train", "select", "certify", "attack", "summarize")
#: Per-model analyses (run on Table 1's cells) and cross-cell analyses (their names: ctbench.core).
MODEL_ANALYSES = core.MODEL_ANALYSES
GRID_ANALYSES = tuple(a for a in core.GRID_ANALYSES if a != "verifier_agreement")  # that one: verifiers
#: Per-model analyses evaluated at every ε of the model's dataset in the grid (paper Fig. 3: MNIST models at
#: both 0.1 and 0.3); the others at the cell's own ε.
EVERY_EPS = ("fragmentation", "utilization", "tightness")


class Grid:
    """A checked grid configuration and its cells (see module docstring)."""

    def __init__(self, config: dict):
        check_schema(config)
        self.config = copy.deepcopy(config)
        self.hparams = load_hparams(self.config["hparams"])
        self.config.setdefault("models", [self.hparams["defaults"]["model"]])
        self._check_names()
        self.cells: list[Cell] = expand(self.config)
        self._index = {(c.dataset, c.eps, c.model, c.run, c.seed): c for c in self.cells}
        for c in self.cells:  # every value of every cell resolves (bad values: one line, the cell named)
            try:
                self.train_config(c)
            except CTBenchError as e:
                raise CTBenchError(f"config: {c.label()}: {e}") from None

    # -- names ------------------------------------------------------------------------------------

    def _check_names(self) -> None:
        cfg, hp = self.config, self.hparams
        settings = set(hp["settings"])
        for i, s in enumerate(cfg["settings"]):
            try:
                find_setting(hp, s["dataset"], s["eps"])
            except CTBenchError as e:
                raise CTBenchError(f"config: settings.{i}: {e}") from None
        grid_settings = {find_setting(hp, d, e) for d, e in setting_tokens(cfg)}
        methods = {m for s in hp["settings"].values() for m in s["methods"]}
        keys = set(hparam_keys()) - {"model"}
        for s, per_method in (cfg.get("overrides") or {}).items():
            if s != "*" and s not in settings:
                raise CTBenchError(f"config: overrides.{s}: unknown setting {s!r}{did_you_mean(s, settings)}")
            for m, values in per_method.items():
                if m != "*" and m not in methods:
                    raise CTBenchError(f"config: overrides.{s}.{m}: unknown method {m!r}{did_you_mean(m, methods)}")
                self._check_values(f"overrides.{s}.{m}", values, keys)
                if (s != "*" and s not in grid_settings) or (m != "*" and m not in self._all_methods()):
                    logger.warning("config: overrides.%s.%s applies to no cell of this grid", s, m)
        generated = variants(cfg)
        for name, v in generated.items():
            where = f"sweeps.{v['sweep']}" if "sweep" in v else f"variants.{name}"
            if not VARIANT_RE.match(name):
                raise CTBenchError(f"config: {where}: variant name {name!r} must match {VARIANT_RE.pattern}")
            self._check_values(where + (".values" if "sweep" in v else ".set"), v.get("set") or {}, keys)
            for s in v.get("settings") or []:
                if s not in grid_settings:
                    raise CTBenchError(f"config: {where}.settings: {s!r} is not a setting of this grid"
                                       f"{did_you_mean(s, grid_settings)}")
        for i, block in enumerate(cfg.get("extra_cells") or []):
            for s in block.get("settings") or []:
                if s not in grid_settings:
                    raise CTBenchError(f"config: extra_cells.{i}.settings: {s!r} is not a setting of this grid"
                                       f"{did_you_mean(s, grid_settings)}")
        if len(generated) != len(cfg.get("variants") or {}) + sum(
            len(s["values"]) for s in (cfg.get("sweeps") or {}).values()
        ):
            raise CTBenchError("config: two variants (variants, or sweep values) have the same name")
        for name, method in ((n, m) for n, v in generated.items() for m in v.get("methods") or []):
            if method not in methods:
                raise CTBenchError(f"config: variant {name}: unknown method {method!r}{did_you_mean(method, methods)}")

    def _all_methods(self) -> set[str]:
        """Methods of any cell: the grid's, the extra cells' and the variants' filters."""
        cfg = self.config
        blocks = [*(cfg.get("extra_cells") or []), *variants(cfg).values()]
        return set(cfg["methods"]) | {m for b in blocks for m in b.get("methods") or []}

    def _check_values(self, where: str, values: dict, keys: set[str]) -> None:
        props = core.sub_schema(load_schema(), "hparam_props")
        for key, value in values.items():
            if key == "model":
                raise CTBenchError(f"config: {where}.model: the architecture is an axis of the grid: "
                                   "use models or extra_cells")
            if key not in keys:
                raise CTBenchError(f"config: {where}.{key}: unknown hyperparameter{did_you_mean(key, keys)}")
            if value is not None:
                core.validate({key: value}, props, what=f"config: {where}")

    # -- cells ------------------------------------------------------------------------------------

    def cell(self, dataset: str, eps: str, model: str, run: str, seed) -> Cell:
        try:
            return self._index[(dataset, eps, model, run, int(seed))]
        except KeyError:
            raise CTBenchError(f"no cell {dataset}/{eps}/{model}/{run}/seed{seed} in this grid") from None

    def table1_cells(self) -> list[Cell]:
        return table1_cells(self.config)

    def overrides(self, cell: Cell) -> dict:
        """The cell's hyperparameter overrides: ``*`` entries, then the setting's, then the variant's."""
        table = self.config.get("overrides") or {}
        merged = {}
        for s in ("*", cell.setting):
            for m in ("*", cell.method):
                merged.update(table.get(s, {}).get(m, {}))
        if cell.variant:
            merged.update(variants(self.config)[cell.variant].get("set") or {})
        merged["model"] = cell.model
        return merged

    @functools.cache  # noqa: B019 - a Grid lives as long as its workflow
    def train_config(self, cell: Cell) -> dict:
        """The resolved training config of the cell (``ctbench.config.resolve`` + identity)."""
        cfg = resolve(cell.setting, cell.method, self.overrides(cell), hparams=self.hparams, seed=cell.seed)
        cfg.update(dataset=cell.dataset, variant=cell.variant)
        return cfg

    def limits(self) -> dict:
        t = self.config.get("train") or {}
        return {"subset": t.get("subset"), "max_steps": t.get("max_steps")}

    def version(self, stage: str) -> int:
        return int((self.config.get("versions") or {}).get(stage, 1))

    def certify_settings(self, cell: Cell) -> dict:
        """The config's ``certify`` section (schema defaults filled in) as the cell's certify job applies it:
        ``complete_samples`` becomes the cell's ``complete_limit`` (paper Table 1, dagger)."""
        c = core.config_section("certify", self.config.get("certify"))
        per_method = c.pop("complete_samples") or {}
        complete = {"BaB", "MILP", "abCROWN", "Marabou"} & set(c["stages"])
        return {**c, "complete_limit": per_method.get(cell.method) if complete else None}

    def attack_settings(self, cell: Cell) -> dict:
        """The config's ``attack`` section as the cell's attack job applies it: ``autoattack_methods`` becomes
        the cell's list of attacks; ``n`` is certification's (the attack sees the certified samples)."""
        a = core.config_section("attack", self.config.get("attack"))
        kinds = ["pgd", "autoattack"] if cell.method in a.pop("autoattack_methods") else ["pgd"]
        return {**a, "attack": kinds, "n": self.certify_settings(cell)["n"]}

    @functools.cache  # noqa: B019
    def fingerprints(self, cell: Cell) -> dict[str, str]:
        """Fingerprint of every stage of the cell (``ctbench.fingerprint``)."""
        fp = {"train": train_fingerprint(self.train_config(cell), self.limits(), self.version("train"))}
        for stage in STAGES[1:]:
            settings, parents, version = self._stage(cell, stage, fp)
            fp[stage] = stage_fingerprint(stage, version, parents, settings)
        return fp

    def _stage(self, cell: Cell, stage: str, fp: dict | None = None) -> tuple[dict, dict, int]:
        """(settings, parents' fingerprints, version) of a stage job of the cell after training: ``select``,
        ``certify``, ``attack``, ``summarize``, ``analysis_<name>`` or ``verifier_<certify stage>``."""
        fp = fp or self.fingerprints(cell)
        kind, _, name = stage.partition("_")
        if stage in ("select", "certify", "attack", "summarize"):
            parents = {"select": ("train",), "certify": ("select",), "attack": ("select", "certify"),
                       "summarize": ("certify", "attack")}[stage]
            settings = {"certify": self.certify_settings, "attack": self.attack_settings}.get(stage)
            return (settings(cell) if settings else {}), {p: fp[p] for p in parents}, self.version(stage)
        if kind == "analysis" and name in MODEL_ANALYSES:
            return self.analysis_settings(cell, name), {"select": fp["select"]}, self.version("analysis")
        if kind == "verifier" and name:
            return self.verifier_settings(cell, name), {"select": fp["select"]}, self.version("certify")
        raise CTBenchError(f"no stage {stage!r} after training (known: select, certify, attack, summarize, "
                           "analysis_<name>, verifier_<stage>)")

    def stage_file(self, cell: Cell, stage: str) -> dict:
        """The content of the cell's ``settings/<stage>.json``: what that stage job runs, exactly
        (``ctbench.stagefile``)."""
        settings, parents, version = self._stage(cell, stage)
        return stagefile.make(stage, cell.to_dict(), self.train_config(cell)["eps_str"], version, parents, settings)

    # -- analyses (ctbench.analysis) ---------------------------------------------------------------

    def analysis(self) -> dict:
        """The config's ``analysis`` section, schema defaults filled in."""
        return core.config_section("analysis", self.config.get("analysis"))

    def dataset_eps(self, dataset: str) -> list[str]:
        """The ε (as written in the config) of every setting of ``dataset`` in the grid, in order."""
        return [s["eps"] for s in self.config["settings"] if s["dataset"] == dataset]

    def analysis_settings(self, cell: Cell, name: str) -> dict:
        a = self.analysis()
        eps = self.dataset_eps(cell.dataset) if name in EVERY_EPS else [self.train_config(cell)["eps_str"]]
        settings = {"n": a["n"], "seed": a["seed"], "eps": eps}
        if name == "corruption":
            settings["corruption"] = a["corruption"]
        return settings

    def analysis_fingerprint(self, cell: Cell, name: str) -> str:
        return stage_fingerprint(f"analysis_{name}", *reversed(self._stage(cell, f"analysis_{name}")))

    def verifier_cells(self) -> list[Cell]:
        """Table 1's cells (filtered by ``analysis.verifiers``) on which each chosen verifier sees every sample."""
        v = self.analysis()["verifiers"]
        if not v["stages"]:
            return []
        return [c for c in self.table1_cells()
                if all(v.get(k) is None or getattr(c, attr) in v[k] for k, attr in
                       (("settings", "setting"), ("methods", "method"), ("seeds", "seed"), ("models", "model")))]

    def verifier_settings(self, cell: Cell, stage: str) -> dict:
        v, c = self.analysis()["verifiers"], core.config_section("certify", self.config.get("certify"))
        return {"stage": stage, "n": v.get("n", c["n"]), "timeout": v.get("timeout", c["timeout"]),
                "batch": c["batch"], "abcrown_config": c.get("abcrown_config")}

    def verifier_fingerprint(self, cell: Cell, stage: str) -> str:
        return stage_fingerprint(f"verifier_{stage}", *reversed(self._stage(cell, f"verifier_{stage}")))

    def cell_file(self, cell: Cell) -> dict:
        """The content of the cell's ``cell.json``: what its train job trains, exactly."""
        return {"format": CELL_FORMAT, "cell": cell.to_dict(), "config": self.train_config(cell),
                "limits": self.limits(), "versions": {"train": self.version("train")},
                "fingerprints": {"train": self.fingerprints(cell)["train"]}}

    def ablation_cells(self) -> list[Cell]:
        """Cells that are not Table 1's: extra cells (other models) and variants (Tables 3, 18, Fig. 7)."""
        table1 = set(self.table1_cells())
        return [c for c in self.cells if c not in table1]

    def sweeps(self) -> dict[str, str]:
        """Sweep name → the hyperparameter it varies (``config/README.md``, key ``sweeps``)."""
        return {name: s["key"] for name, s in (self.config.get("sweeps") or {}).items()}

    def sweep_cells(self) -> list[Cell]:
        """The cells of the sweeps (Table 3, Fig. 7) and, after them, their base cells: same setting, model,
        method and seed, no variant (analysis ``regularization_tradeoff``). Empty without sweeps."""
        named = variants(self.config)
        swept = [c for c in self.cells if c.variant and "sweep" in named[c.variant]]
        bases = [self._index.get((c.dataset, c.eps, c.model, c.method, c.seed)) for c in swept]
        return list(dict.fromkeys([*swept, *(b for b in bases if b is not None)]))

    def manifest(self, cells: list[Cell] | None = None) -> dict:
        """Cells (default: all) with their directory and fingerprints: ``results/manifest/*.json``, read by
        ``ctbench report`` to refuse results made under another configuration."""
        table1 = set(self.table1_cells())
        named = variants(self.config)
        return {"format": "ctbench-grid/1",
                "cells": [{"cell": c.to_dict(), "dir": c.dir, "table1": c in table1,
                           "changes": self._changes(c, named), "fingerprints": self.fingerprints(c)}
                          for c in (self.cells if cells is None else cells)]}

    def _changes(self, cell: Cell, named: dict) -> str:
        """What sets a cell apart from Table 1's cells, e.g. ``l1=1e-06`` or ``model=cnn5``."""
        parts = [f"{k}={v}" for k, v in (named[cell.variant].get("set") or {}).items()] if cell.variant else []
        if cell.model not in self.config["models"]:
            parts.insert(0, f"model={cell.model}")
        return ", ".join(parts)
