"""The small torch-free core every layer uses: ε tokens, stable JSON hashing, YAML with schema errors,
the cell identity, display names and the choice of device.

Grid, certify, analysis and report all take these from here, so each exists once. Importing this module
never imports torch (``tests/test_structure.py`` checks it in a fresh interpreter); :func:`resolve_device`
imports torch only when it is called.

ε values are strings: ``"0.1"``, ``"2/255"``; the path token of ``2/255`` is ``"2_255"``
(:func:`eps_token`); :func:`parse_eps` accepts all three forms, :func:`eps_text` gives the written
form back (``"2_255"`` → ``"2/255"``)::

    parse_eps("2_255") == 2 / 255;  eps_token("2/255") == "2_255";  eps_text("2_255") == "2/255"
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from ctbench.errors import CTBenchError

# --------------------------------------------------------------------------------------------------
# ε tokens
# --------------------------------------------------------------------------------------------------

_EPS_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_EPS_RE = re.compile(rf"^\s*({_EPS_NUMBER})\s*(?:[/_]\s*({_EPS_NUMBER}))?\s*$")
_EPS_NONFINITE_RE = re.compile(r"^\s*[+-]?(?:nan|inf|infinity)\s*$", re.IGNORECASE)
#: The accepted forms, for error messages.
EPS_FORMS = "a number like 0.1, a fraction like 2/255 or its path token 2_255"


def parse_eps(value: str | float | int) -> float:
    """``"0.1"`` → 0.1, ``"2/255"`` or the path token ``"2_255"`` → 2/255, numbers pass through.

    The one ε check of every command: raises :class:`CTBenchError` with "cannot parse eps ..." for a
    malformed value and "eps must lie in [0, 1] (pixel space), got ..." for one outside [0, 1] (negative,
    above 1, nan, inf).
    """
    if isinstance(value, bool):
        raise CTBenchError(f"cannot parse eps {value!r}: use {EPS_FORMS}")
    if not isinstance(value, str):  # a number (also NumPy's)
        try:
            eps = float(value)
        except (TypeError, ValueError):
            raise CTBenchError(f"cannot parse eps {value!r}: use {EPS_FORMS}") from None
    else:
        m = _EPS_RE.match(value)
        if m:
            num, den = float(m.group(1)), m.group(2)
            if den is not None and float(den) == 0:
                raise CTBenchError(f"cannot parse eps {value!r}: zero denominator; use {EPS_FORMS}")
            eps = num / float(den) if den is not None else num
        elif _EPS_NONFINITE_RE.match(value):
            eps = float(value)
        else:
            raise CTBenchError(f"cannot parse eps {value!r}: use {EPS_FORMS}")
    if not (math.isfinite(eps) and 0 <= eps <= 1):
        shown = value.strip() if isinstance(value, str) else value
        raise CTBenchError(f"eps must lie in [0, 1] (pixel space), got {shown}")
    return eps


def eps_token(value: str | float) -> str:
    """Path-safe token of an eps: ``"2/255"`` → ``"2_255"``, ``"0.1"`` → ``"0.1"``, 0.3 → ``"0.3"``."""
    parse_eps(value)  # validate
    if isinstance(value, int | float):
        return repr(float(value))
    return str(value).strip().replace("/", "_").replace(" ", "")


def eps_text(value: str | float) -> str:
    """The written form of an eps, without checking it: ``"2_255"`` → ``"2/255"``, 0.1 → ``"0.1"``."""
    return str(value).strip().replace("_", "/")


def eps_pair(value: str | float) -> tuple[float, str]:
    """``"0.1"``, ``"2/255"`` (or its path token ``"2_255"``) or a float → ``(value, written form)``;
    checked as :func:`parse_eps` checks it."""
    return parse_eps(value), eps_text(value)


def eps_value(value) -> float:
    """Like :func:`parse_eps`, but NaN instead of an error (for sorting and matching labels)."""
    try:
        return parse_eps(value if isinstance(value, str) else str(value))
    except CTBenchError:
        return math.nan


def same_eps(a: str | float, b: str | float) -> bool:
    return math.isclose(parse_eps(a), parse_eps(b), rel_tol=1e-9, abs_tol=1e-12)


#: Datasets that use another dataset's hyperparameter setting (the embedded MNIST subset uses MNIST's).
SETTING_DATASET = {"mnist_mini": "mnist"}


def setting_key(dataset: str, eps: str | float) -> str:
    """``("cifar10", "2/255")`` → ``"cifar10_2_255"``; ``mnist_mini`` uses the MNIST settings."""
    return f"{SETTING_DATASET.get(dataset, dataset)}_{eps_token(eps)}"


# --------------------------------------------------------------------------------------------------
# stable JSON hashing
# --------------------------------------------------------------------------------------------------


def canonical_json(obj, *, compact: bool = True) -> str:
    """JSON with sorted keys (non-JSON values by ``str``); ``compact``: no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":") if compact else None, default=str)


def json_sha256(obj, *, compact: bool = True) -> str:
    """SHA-256 (hex) of :func:`canonical_json`: equal objects ⇔ equal hashes."""
    return hashlib.sha256(canonical_json(obj, compact=compact).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# YAML and schema errors
# --------------------------------------------------------------------------------------------------

#: The JSON Schemas shipped inside the package (also the workflow's Snakemake ``validate``).
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML document at ``path``; one :class:`CTBenchError` line for a missing file or broken YAML
    (``path:line:column: problem``)."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise CTBenchError(f"file not found: {p}")
    try:
        text = p.read_text()
    except OSError as e:
        raise CTBenchError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise CTBenchError(f"{where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise CTBenchError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None


def load_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path`` (empty file: ``{}``); errors as :func:`read_yaml`'s."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CTBenchError(f"{Path(path)}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def did_you_mean(name: str, known) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``"; known: a, b, c"``."""
    known = sorted(map(str, known))
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {lower[close[0]]!r}?"
    return f"; known: {', '.join(known)}" if len(known) <= 12 else ""


def sub_schema(schema: dict, name: str) -> dict:
    """The schema of ``$defs[name]``, with the ``$defs`` it may refer to."""
    return {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}


def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<root>"


def validate(data: Any, schema: dict, what: str = "hparams") -> None:
    """Validate ``data`` against a JSON Schema; the first violation becomes a one-line CTBenchError
    naming the key path, e.g.
    ``hparams: settings.mnist_0.1.methods.pgd.l1: -1 is less than the minimum of 0``."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = sorted(
        validator.iter_errors(data), key=lambda e: (len(list(e.absolute_path)), list(map(str, e.path)))
    )
    if errors:
        # The most specific error (deepest path) is the most useful one for oneOf / $ref chains.
        err = max(errors, key=lambda e: len(list(e.absolute_path)))
        best = jsonschema.exceptions.best_match([err]) or err
        raise CTBenchError(f"{what}: {_key_path(best)}: {best.message}")


def schema_defaults(schema: dict) -> Any:
    """The value a schema node stands for when it is left out: its ``default``, and for an object with
    ``properties`` the defaults of every property filled in (recursively). Objects with only
    ``additionalProperties`` (e.g. ``certify.complete_samples``) keep their default as a whole."""
    value = copy.deepcopy(schema.get("default"))
    return with_defaults(schema, value) if schema.get("properties") else value


def with_defaults(schema: dict, given: Any) -> Any:
    """``given`` with what it leaves out filled from ``schema`` (:func:`schema_defaults`): object nodes with
    ``properties`` are merged key by key, anything else given replaces the default."""
    props = schema.get("properties")
    if not props or not isinstance(given, dict):
        return copy.deepcopy(given)
    out = {k: copy.deepcopy(v) for k, v in given.items()}
    for key, sub in props.items():
        if key in out:
            out[key] = with_defaults(sub, out[key])
        elif "default" in sub or sub.get("properties"):
            out[key] = schema_defaults(sub)
    return out


@functools.cache
def _config_schema() -> dict:
    return read_yaml(SCHEMAS / "config.schema.yaml")


def config_section(section: str, given: dict | None = None) -> dict:
    """A section of the grid configuration (``certify``, ``attack``, ``analysis``...) with the schema's
    defaults filled in: the one place these defaults live (``ctbench/schemas/config.schema.yaml``); the
    grid, the commands' flags and the stage settings all read them here."""
    return with_defaults(_config_schema()["properties"][section], given or {})


def config_default(path: str) -> Any:
    """The schema default of one key, e.g. ``config_default("certify.falsifier.steps") == 200``."""
    section, *keys = path.split(".")
    value = config_section(section)
    for key in keys:
        value = value[key]
    return value


# --------------------------------------------------------------------------------------------------
# cell identity
# --------------------------------------------------------------------------------------------------


class CellId(NamedTuple):
    """One trained model and everything computed from it: ``(dataset, eps, model, method, variant, seed)``.

    The one identity type: ``ctbench.grid.cells.Cell`` (ε as its path token, seed an int) and
    ``ctbench.analysis.cells.Cell`` (ε as written, read from the files) extend it."""

    dataset: str
    eps: str
    model: str
    method: str
    variant: str  #: "" for the base configuration
    seed: int | str

    @property
    def run(self) -> str:
        """The path component of method and variant: ``ibp`` or ``ibp+l1_5e-06``."""
        return f"{self.method}+{self.variant}" if self.variant else self.method

    def to_dict(self) -> dict:
        return dict(self._asdict())


# --------------------------------------------------------------------------------------------------
# display names (the registries' names; tests/test_structure.py keeps them equal)
# --------------------------------------------------------------------------------------------------

#: Display names of the paper, in its method order (Table 1); keys are ``ctbench.methods.METHODS``.
METHOD_NAMES = {"standard": "Standard", "pgd": "PGD", "edac": "EDAC", "ibp": "IBP", "crown_ibp": "CROWN-IBP",
                "sabr": "SABR", "taps": "TAPS", "staps": "STAPS", "mtl_ibp": "MTL-IBP"}
METHOD_ORDER = tuple(METHOD_NAMES)
#: The registered architectures (``ctbench.models.MODELS``).
MODEL_NAMES = ("cnn7", "cnn5", "cnn_small")
#: Display names of the datasets (``ctbench.data`` registry), in the paper's order.
DATASET_NAMES = {"mnist": "MNIST", "mnist_mini": "MNIST (mini)", "cifar10": "CIFAR-10", "tinyimagenet": "TinyImageNet"}
DATASET_ORDER = tuple(DATASET_NAMES)


#: The analyses (``ctbench.analysis`` registers their modules) and their kind: ``model`` (one stored model)
#: or ``grid`` (many cells); the grid reads them here so that it never imports the analyses.
ANALYSIS_KINDS = {
    "fragmentation": "model", "utilization": "model", "tightness": "model", "corruption": "model",
    "shared_mistakes": "grid", "verifier_agreement": "grid", "complete_gain": "grid", "cost": "grid",
    "seeds": "grid", "tradeoff": "grid", "error_reduction": "grid", "unstable_neurons": "grid",
    "cost_ratio": "grid", "regularization_tradeoff": "grid",
}
MODEL_ANALYSES = tuple(name for name, kind in ANALYSIS_KINDS.items() if kind == "model")
GRID_ANALYSES = tuple(name for name, kind in ANALYSIS_KINDS.items() if kind == "grid")


def method_name(method: str) -> str:
    """``crown_ibp`` → ``CROWN-IBP``; unknown names unchanged."""
    return METHOD_NAMES.get(method, method)


# --------------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------------


def resolve_device(device: str):
    """``"auto"`` → CUDA if available else CPU; otherwise the named ``torch.device``, checked (imports torch)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CTBenchError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CTBenchError("device cuda requested but CUDA is not available (use --device cpu or auto)")
    return dev
