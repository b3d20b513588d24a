"""Reading and checking a grid configuration (``config/config.yaml``, ``demo.yaml``, ``ci.yaml``).

Every problem becomes one :class:`~ctbench.errors.CTBenchError` line that names the file, the key path
and, for a misspelt name, the closest known one::

    config/x.yaml:7:3: expected ',' or ']', but got ':'                    (broken YAML: line and column)
    config: overrides.mnist_0.2: unknown setting 'mnist_0.2'; did you mean 'mnist_0.1'?
    config: overrides.mnist_0.1.ibp.l1: 'abc' is not of type 'number'
    config: modles: unknown key; did you mean 'models'?

Structure (JSON Schema ``ctbench/schemas/config.schema.yaml``, shipped inside the package) is checked
first, then the names the schema cannot know: settings and methods of the hyperparameter file,
hyperparameter keys and their values, the filters of ``extra_cells`` / ``variants`` / ``sweeps``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ctbench.core import SCHEMAS, did_you_mean, load_yaml
from ctbench.errors import CTBenchError

__all__ = ["PATH_KEYS", "SCHEMA", "check_schema", "did_you_mean", "load_yaml", "resolve_paths"]

SCHEMA = SCHEMAS / "config.schema.yaml"
#: Keys of a grid file naming files that the grid reads itself (relative paths: :func:`resolve_paths`).
PATH_KEYS = ("hparams", "literature")


def _path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _schema_message(error) -> str:
    """One line for a jsonschema error, with did-you-mean for unexpected keys."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - allowed)
        if extra and allowed:
            where = _path(error)
            prefix = "" if where == "<top level>" else f"{where}."
            return f"{prefix}{extra[0]}: unknown key{did_you_mean(extra[0], allowed)}"
    if error.validator == "unevaluatedProperties" and isinstance(error.instance, dict):
        known = {"settings", "models", "methods", "seeds", "set", "key", "values"}
        extra = sorted(k for k in error.instance if k not in known)
        if extra:
            return f"{_path(error)}.{extra[0]}: unknown key{did_you_mean(extra[0], known)}"
    if error.validator == "enum":
        return f"{_path(error)}: {error.instance!r} is not allowed{did_you_mean(error.instance, error.validator_value)}"
    return f"{_path(error)}: {error.message}"


def check_schema(config: dict, schema_path: str | os.PathLike = SCHEMA) -> None:
    """Validate ``config`` against the workflow's config schema; the most specific error, one line."""
    import jsonschema

    schema = load_yaml(schema_path)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        # the deepest error is the most useful one for anyOf / nested objects
        best = max(errors, key=lambda e: (len(list(e.absolute_path)), e.validator == "additionalProperties"))
        raise CTBenchError(f"config: {_schema_message(best)}")


def resolve_paths(config: dict, source: str | os.PathLike) -> dict:
    """``config`` (read from the grid file ``source``) with its relative ``hparams`` / ``literature`` paths
    found: in the current folder if the file is there (the workflow's rule: it runs from the repository
    root, and such a path is kept as written), else in the grid file's folder or the first folder above it
    that has it (made absolute), so ``ctbench grid check /repo/config/demo.yaml`` works from any folder.
    A file found nowhere is one line naming where it was looked for (``config/README.md``, "Paths")."""
    out = dict(config)
    start = Path(source).resolve().parent
    for key in PATH_KEYS:
        value = out.get(key)
        if not isinstance(value, str) or Path(value).is_absolute() or Path(value).is_file():
            continue
        found = next((d / value for d in (start, *start.parents) if (d / value).is_file()), None)
        if found is None:
            raise CTBenchError(f"config: {key}: file not found: {value} (looked in the current folder, "
                               f"in {start} and in the folders above it)")
        out[key] = str(found)
    return out
