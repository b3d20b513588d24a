"""Hyperparameter configuration: load + validate ``config/hparams.yaml``, resolve one training cell.

``config/hparams.yaml`` holds the paper's Tables 6-10, the App. C.3 schedules and App. C.4 attack
strengths as data; ``workflow/schemas/hparams.schema.yaml`` is its JSON Schema (also used by
Snakemake's ``validate``). :func:`resolve` turns (setting, method, overrides) into one flat dict, the
*resolved config*, written next to every training output and into ``model.pt``::

    defaults <- setting schedule <- method_defaults[method] <- setting.methods[method] <- overrides

ε values are strings: ``"0.1"``, ``"2/255"``; the path token of ``2/255`` is ``"2_255"``
(:func:`eps_token`); :func:`parse_eps` accepts all three forms.

Example::

    cfg = resolve(("cifar10", "2/255"), "sabr", {"l1": 2e-6}, seed=0)
    cfg["train_eps"], cfg["eps_shrink"], cfg["epochs"]     # 0.01176..., 0.1, 160
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import os
import re
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from ctbench.errors import CTBenchError

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[1]
#: Where a wheel (``pip install .``, not editable) puts the two files: pyproject's ``data-files``.
_INSTALLED = Path(sysconfig.get_path("data")) / "share" / "ctbench"


def _default(checkout: Path, installed: Path) -> Path:
    """The file in the source checkout (editable install) if present, else the installed copy."""
    return checkout if checkout.exists() or not installed.exists() else installed


#: Default locations: the source checkout, else the copies a wheel installs; pass explicit paths otherwise.
DEFAULT_HPARAMS = _default(_REPO / "config" / "hparams.yaml", _INSTALLED / "config" / "hparams.yaml")
DEFAULT_SCHEMA = _default(
    _REPO / "workflow" / "schemas" / "hparams.schema.yaml", _INSTALLED / "schemas" / "hparams.schema.yaml"
)

#: Datasets that use another dataset's setting (the embedded MNIST subset uses the MNIST settings).
SETTING_DATASET = {"mnist_mini": "mnist"}

_EPS_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_EPS_RE = re.compile(rf"^\s*({_EPS_NUMBER})\s*(?:[/_]\s*({_EPS_NUMBER}))?\s*$")
_EPS_NONFINITE_RE = re.compile(r"^\s*[+-]?(?:nan|inf|infinity)\s*$", re.IGNORECASE)
#: The accepted forms, for error messages.
EPS_FORMS = "a number like 0.1, a fraction like 2/255 or its path token 2_255"


# --------------------------------------------------------------------------------------------------
# eps parsing
# --------------------------------------------------------------------------------------------------


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


def same_eps(a: str | float, b: str | float) -> bool:
    return math.isclose(parse_eps(a), parse_eps(b), rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _load_yaml_cached(path: str, mtime: float) -> Any:
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise CTBenchError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise CTBenchError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None


def _load_yaml(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CTBenchError(f"file not found: {p}")
    return copy.deepcopy(_load_yaml_cached(str(p.resolve()), p.stat().st_mtime))


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


def load_schema(path: str | os.PathLike | None = None) -> dict:
    return _load_yaml(path or DEFAULT_SCHEMA)


def load_hparams(path: str | os.PathLike | None = None, schema_path: str | os.PathLike | None = None) -> dict:
    """Load and validate ``config/hparams.yaml`` (or ``path``); returns the nested dict."""
    data = _load_yaml(path or DEFAULT_HPARAMS)
    validate(data, load_schema(schema_path), what=str(path or DEFAULT_HPARAMS.name))
    _check_consistency(data, "hparams")
    return data


def hparam_keys(schema: dict | None = None) -> list[str]:
    """Every hyperparameter a cell can hold (the schema's ``$defs.hparam_props``)."""
    schema = schema or load_schema()
    return sorted(schema["$defs"]["hparam_props"]["properties"])


def _check_consistency(data: dict, what: str) -> None:
    for key, setting in data["settings"].items():
        if setting["eps_end_epoch"] < setting["eps_start_epoch"]:
            raise CTBenchError(f"{what}: settings.{key}: eps_end_epoch < eps_start_epoch")
        expected = f"{setting['dataset']}_{eps_token(setting['eps'])}"
        if key != expected:
            raise CTBenchError(
                f"{what}: settings.{key}: key must be <dataset>_<eps token>, i.e. {expected!r}"
            )


# --------------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------------


def setting_key(dataset: str, eps: str | float) -> str:
    """``("cifar10", "2/255")`` → ``"cifar10_2_255"``; ``mnist_mini`` uses the MNIST settings."""
    return f"{SETTING_DATASET.get(dataset, dataset)}_{eps_token(eps)}"


def find_setting(hparams: dict, dataset: str, eps: str | float) -> str:
    """The key of the setting for (dataset, eps), matching eps numerically (``0.1`` == ``"0.1"``)."""
    base = SETTING_DATASET.get(dataset, dataset)
    for key, s in hparams["settings"].items():
        if s["dataset"] == base and same_eps(s["eps"], eps):
            return key
    known = ", ".join(sorted(hparams["settings"]))
    raise CTBenchError(
        f"no hyperparameter setting for dataset {dataset!r} at eps {eps}; known settings: {known}"
    )


def parse_overrides(items: list[str] | None) -> dict:
    """``["l1=1e-5", "lr_milestones=[3,4]"]`` → dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise CTBenchError(f"malformed --set {item!r}: expected key=value, e.g. --set l1=1e-5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise CTBenchError(f"malformed --set {item!r}: value is not valid YAML") from None
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9.]+[eE][+-]?[0-9]+", value):
            value = float(value)  # YAML 1.1 reads "1e-5" as a string
        out[key] = value
    return out


def resolve(
    setting: str | tuple[str, str | float],
    method: str,
    overrides: dict | None = None,
    *,
    hparams: dict | None = None,
    seed: int | None = None,
) -> dict:
    """The flat resolved config of one (setting, method[, seed]) cell.

    Args:
        setting: a setting key (``"mnist_0.1"``) or ``(dataset, eps)``; ``mnist_mini`` → MNIST settings
            but ``dataset`` stays ``mnist_mini``.
        method: a method of the setting's table (``standard``, ``pgd``, ``edac``, ``ibp``, ...).
        overrides: hyperparameters replacing the table values (unknown keys are errors).
        hparams: the loaded hparams (default: :func:`load_hparams`).
        seed: stored as ``seed`` (part of the config hash).

    Returns:
        dict with every hyperparameter key (None where not applicable) plus ``setting``, ``dataset``,
        ``method``, ``eps`` (float), ``eps_str``, ``train_eps`` (float), ``train_eps_str``, ``seed``.
    """
    schema = load_schema()
    hp = hparams if hparams is not None else load_hparams()
    if isinstance(setting, tuple):
        dataset, eps = setting
        key = find_setting(hp, dataset, eps)
    else:
        key = setting
        if key not in hp["settings"]:
            known = ", ".join(sorted(hp["settings"]))
            raise CTBenchError(f"unknown setting {key!r}; known: {known}")
        dataset = hp["settings"][key]["dataset"]
    s = hp["settings"][key]
    if method not in s["methods"]:
        known = ", ".join(sorted(s["methods"]))
        raise CTBenchError(f"method {method!r} has no hyperparameters in setting {key}; known: {known}")
    keys = hparam_keys(schema)
    cfg: dict[str, Any] = dict.fromkeys(keys)
    cfg.update(hp["defaults"])
    cfg.update({k: v for k, v in s.items() if k in keys})
    cfg.update(hp["method_defaults"].get(method, {}))
    cfg.update(s["methods"][method])
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        raise CTBenchError(f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(keys)}")
    cfg.update(overrides)
    if cfg.get("train_eps") is None:
        cfg["train_eps"] = s["eps"]
    scale_schedule(cfg)
    validate({k: v for k, v in cfg.items() if v is not None}, _sub_schema(schema, "hparams"), what="config")
    if cfg["swa_start"] is not None and cfg["model_selection"] != "last":
        raise CTBenchError(
            "config: swa_start requires model_selection=last (the SWA model is the final model)"
        )
    if cfg["eps_end_epoch"] < cfg["eps_start_epoch"]:
        raise CTBenchError("config: eps_end_epoch must be >= eps_start_epoch")
    check_schedule(cfg, method, s["eps"])
    train_eps_str = str(cfg["train_eps"])
    cfg.update(
        setting=key,
        dataset=dataset,
        method=method,
        eps=parse_eps(s["eps"]),
        eps_str=str(s["eps"]),
        train_eps=parse_eps(cfg["train_eps"]),
        train_eps_str=train_eps_str,
        seed=seed,
        lr_milestones=sorted(cfg["lr_milestones"]),
    )
    return cfg


def scale_schedule(cfg: dict) -> None:
    """Apply ``schedule_scale`` in place: epochs, ramp, milestones and SWA start shrink together.

    ``epochs' = max(1, round(s·epochs))``; every epoch index ``e`` becomes ``round(s·e)``, capped so that
    the ramp ends and each milestone / SWA start lies before the last epoch (``<= epochs' − 1``)."""
    s = cfg.get("schedule_scale")
    if s is None or float(s) == 1.0:
        return
    s = float(s)
    epochs = max(1, round(s * int(cfg["epochs"])))
    last = epochs - 1

    def at(e):
        return min(round(s * int(e)), last)

    cfg["epochs"] = epochs
    cfg["eps_start_epoch"] = at(cfg["eps_start_epoch"])
    cfg["eps_end_epoch"] = max(cfg["eps_start_epoch"], at(cfg["eps_end_epoch"]))
    cfg["lr_milestones"] = sorted({max(1, at(m)) for m in cfg["lr_milestones"] or []} - {epochs})
    if cfg.get("swa_start") is not None:
        cfg["swa_start"] = at(cfg["swa_start"])


#: Methods trained at an ε below the test ε on purpose (standard training: ε = 0).
_BELOW_TEST_EPS_OK = ("standard",)


def check_schedule(cfg: dict, method: str, test_eps) -> list[str]:
    """Schedule checks at resolve time: an error for a run that would never reach its training ε, decay
    its learning rate or start SWA (naming the keys to change); a warning (logged, returned) for a
    training ε below the test ε, which the paper never does for a robust method."""
    epochs, last = int(cfg["epochs"]), int(cfg["epochs"]) - 1
    hint = "; or shorten the whole schedule with --scale-schedule F (config key schedule_scale)"
    if int(cfg["eps_end_epoch"]) > last:
        raise CTBenchError(
            f"config: the eps ramp ends at epoch {cfg['eps_end_epoch']} (eps_end_epoch) but the run has only "
            f"epochs {epochs} (0..{last}): it would never train at its training eps or select a model; "
            f"lower eps_end_epoch (and eps_start_epoch){hint}"
        )
    late = [m for m in cfg["lr_milestones"] or [] if int(m) >= epochs]
    if late:
        raise CTBenchError(
            f"config: lr_milestones {late} are not before the end of the run (epochs {epochs}): the learning "
            f"rate would never decay there; set lr_milestones below {epochs} (--set lr_milestones=[...]){hint}"
        )
    if cfg.get("swa_start") is not None and int(cfg["swa_start"]) > last:
        raise CTBenchError(
            f"config: swa_start {cfg['swa_start']} is beyond the last epoch ({last}): SWA would never start; "
            f"lower swa_start{hint}"
        )
    warnings = []
    if method not in _BELOW_TEST_EPS_OK and parse_eps(cfg["train_eps"]) < parse_eps(test_eps):
        warnings.append(
            f"{method}: train_eps {cfg['train_eps']} is below the test eps {test_eps}, which the paper never "
            f"does for a robust method; certified accuracy at the test eps will suffer (set train_eps)"
        )
    for w in warnings:
        logger.warning("%s", w)
    return warnings


def _sub_schema(schema: dict, name: str) -> dict:
    return {"$schema": schema.get("$schema"), "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}


def config_hash(resolved: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of a resolved config: equal configs ⇔ equal hashes."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def to_json(resolved: dict) -> str:
    return json.dumps(resolved, sort_keys=True, default=str)
