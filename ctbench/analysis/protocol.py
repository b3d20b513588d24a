"""The one shape of an analysis, and the files it reads (torch-free: the workflow imports it).

Every module ``ctbench.analysis.<name>`` (registered in :data:`ctbench.analysis.ANALYSES`) declares::

    NAME = "<name>"                     # its registry name
    INPUTS = {option: input, ...}       # what it reads, by command-line option (see below)
    ARGS = ("--flag", "--opt {values}") # further options the workflow passes (default: none)
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int
    def figure(tables: list[pd.DataFrame], out_stem: Path) -> list[Path]   # PNG + PDF

A per-model analysis also declares ``FIGURE_INPUTS`` (the options of ``ctbench figure NAME`` besides its
tables, e.g. tightness' ``--metrics``) and ``SETTINGS``: each of the grid's settings of it
(``Grid.analysis_settings``, nested keys joined by ``.``) → the option that takes it; the job reads them
from its stage settings file (``--settings``, ``_model_cli.apply_settings``). A grid analysis' ``figure``
takes its one table (the sample note in ``df.attrs["data_note"]``).

An *input* is either

* ``(cells, pattern)``: for every cell of the grid's cell set ``cells`` (:data:`CELL_SETS`), the file
  ``<cell dir>/<pattern>``; a tuple of patterns gives several files per cell (cell by cell), and a
  ``{name}`` in a pattern is repeated over the grid's values ``name`` (:data:`VALUES`), e.g.
  ``("verifier", "verifiers/{verifier}.h5")``;
* ``"config:<key>"``: the one file the workflow config names under ``key`` (e.g. ``config:literature``).

An entry of ``ARGS`` with a ``{name}`` is passed once per value of the grid's values ``name``
(``"--sweep {sweep}"`` → ``--sweep lambda=eps_shrink --sweep alpha=ibp_coef``); without one, as written.
A grid analysis runs when the configuration chooses it and none of the cell sets it reads is empty.

:func:`input_files` and :func:`arguments` turn a declaration and the grid's cell sets into the file lists
and the command line (``workflow/rules/common.smk``); nothing else chooses an analysis' inputs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

#: the grid's cell sets an input may name: every cell, Table 1's, those without a variant (Table 1's and the
#: extra architectures'), the sweeps' cells and their base cells, the verifier cells, and (per-model
#: analyses) the one cell the job analyses.
CELL_SETS = ("all", "table1", "base", "sweep", "verifier", "cell")
#: the grid's value lists a ``{name}`` may name: the configured verifier stages; the sweeps as NAME=HYPERPARAMETER.
VALUES = ("verifier", "sweep")
CONFIG = "config:"
_FIELD = re.compile(r"\{(\w+)\}")


def _fields(text: str) -> list[str]:
    return _FIELD.findall(text)


def _expand(text: str, values: Mapping[str, Sequence[str]]) -> list[str]:
    """``text`` once per value of its ``{name}`` (one at most), or as written."""
    names = _fields(text)
    if not names:
        return [text]
    (name,) = names
    return [text.replace("{" + name + "}", str(v)) for v in values[name]]


def check(name: str, inputs: Mapping, args: Sequence[str] = ()) -> None:
    """Raise ValueError naming what is wrong with a declaration (unknown cell set or value name, bad form)."""
    for option, spec in inputs.items():
        if isinstance(spec, str):
            if not spec.startswith(CONFIG) or not spec[len(CONFIG):]:
                raise ValueError(f"{name}: input {option!r}: a string input is 'config:<key>', got {spec!r}")
            continue
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"{name}: input {option!r}: expected (cells, pattern) or 'config:<key>', got {spec!r}")
        cells, patterns = spec
        if cells not in CELL_SETS:
            raise ValueError(f"{name}: input {option!r}: unknown cell set {cells!r} (known: {', '.join(CELL_SETS)})")
        for pattern in (patterns,) if isinstance(patterns, str) else patterns:
            _check_fields(name, f"input {option!r}", pattern)
    for arg in args:
        _check_fields(name, "ARGS", arg)


def _check_fields(name: str, where: str, text: str) -> None:
    fields = _fields(text)
    if len(fields) > 1 or any(f not in VALUES for f in fields):
        raise ValueError(f"{name}: {where}: {text!r} may name one of {', '.join(VALUES)} in braces")


def cell_sets_read(inputs: Mapping) -> list[str]:
    """The cell sets a declaration reads (in order, once each)."""
    return list(dict.fromkeys(spec[0] for spec in inputs.values() if not isinstance(spec, str)))


def runs(inputs: Mapping, cell_sets: Mapping[str, Sequence[str]]) -> bool:
    """Whether an analysis has something to read: none of the cell sets it reads is empty."""
    return all(cell_sets[s] for s in cell_sets_read(inputs))


def input_files(inputs: Mapping, cell_sets: Mapping[str, Sequence[str]],
                values: Mapping[str, Sequence[str]] | None = None,
                config: Mapping | None = None) -> dict[str, list[str] | str]:
    """Option → its files: a list (cell inputs) or one path (``config:<key>``), in the declaration's order.

    ``cell_sets``: cell set name → the cells' directories; ``values``: the grid's value lists; ``config``:
    the workflow config (for ``config:<key>``)."""
    values = values or {}
    files: dict[str, list[str] | str] = {}
    for option, spec in inputs.items():
        if isinstance(spec, str):
            files[option] = str((config or {})[spec[len(CONFIG):]])
            continue
        cells, patterns = spec
        patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
        files[option] = [f"{d}/{p}" for d in cell_sets[cells] for pattern in patterns
                         for p in _expand(pattern, values)]
    return files


def arguments(files: Mapping[str, list[str] | str], args: Sequence[str] = (),
              values: Mapping[str, Sequence[str]] | None = None) -> str:
    """The command line of :func:`input_files`' result and ``ARGS``: ``--<option> FILE...`` per input (paths
    quoted for the shell), then each entry of ``ARGS`` (a ``{name}`` once per value, quoted)."""
    out: list[str] = []
    for option, paths in files.items():
        out += [f"--{option}", *map(shlex.quote, [paths] if isinstance(paths, str) else paths)]
    for arg in args:
        names = _fields(arg)
        if not names:
            out.append(arg)
            continue
        (name,) = names
        out += [arg.replace("{" + name + "}", shlex.quote(str(v))) for v in (values or {})[name]]
    return " ".join(out)


def declaration(module) -> dict:
    """A module's declaration: ``{"name", "inputs", "args", "figure_inputs", "settings"}`` (checked by
    :func:`check`)."""
    decl = {"name": module.NAME, "inputs": dict(module.INPUTS), "args": tuple(getattr(module, "ARGS", ())),
            "figure_inputs": dict(getattr(module, "FIGURE_INPUTS", {})),
            "settings": dict(getattr(module, "SETTINGS", {}))}
    check(decl["name"], {**decl["inputs"], **decl["figure_inputs"]}, decl["args"])
    return decl
