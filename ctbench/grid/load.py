"""Reading and checking a grid configuration (``config/config.yaml``, ``demo.yaml``, ``ci.yaml``).

Every problem becomes one :class:`~ctbench.errors.CTBenchError` line that names the file, the key path
and, for a misspelt name, the closest known one::

    config/x.yaml:7:3: expected ',' or ']', but got ':'                    (broken YAML: line and column)
    config: overrides.mnist_0.2: unknown setting 'mnist_0.2'; did you mean 'mnist_0.1'?
    config: overrides.mnist_0.1.ibp.l1: 'abc' is not of type 'number'
    config: modles: unknown key; did you mean 'models'?

Structure (JSON Schema ``workflow/schemas/config.schema.yaml``) is checked first, then the names the
schema cannot know: settings and methods of the hyperparameter file, hyperparameter keys and their
values, the filters of ``extra_cells`` / ``variants`` / ``sweeps``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import yaml

from ctbench.errors import CTBenchError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def did_you_mean(name: str, known) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``"; known: a, b, c"``."""
    known = sorted(map(str, known))
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {lower[close[0]]!r}?"
    return f"; known: {', '.join(known)}" if len(known) <= 12 else ""


def load_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path``; syntax errors give ``path:line:column: problem``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise CTBenchError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise CTBenchError(f"{where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise CTBenchError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CTBenchError(f"{p}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


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
