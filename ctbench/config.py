"""Hyperparameter configuration: load + validate ``config/hparams.yaml``, resolve one training cell.

``config/hparams.yaml`` holds the paper's Tables 6-10, the App. C.3 schedules and App. C.4 attack
strengths as data; ``ctbench/schemas/hparams.schema.yaml`` (shipped inside the package) is its JSON
Schema. :func:`resolve` turns (setting, method, overrides) into one flat dict, the
*resolved config*, written next to every training output and into ``model.pt``::

    defaults <- setting schedule <- method_defaults[method] <- setting.methods[method] <- overrides

ε values are strings: ``"0.1"``, ``"2/255"``; the path token of ``2/255`` is ``"2_255"``
(:func:`eps_token`); :func:`parse_eps` accepts all three forms (both from :mod:`ctbench.core`).

Example::

    cfg = resolve(("cifar10", "2/255"), "sabr", {"l1": 2e-6}, seed=0)
    cfg["train_eps"], cfg["eps_shrink"], cfg["epochs"]     # 0.01176..., 0.1, 160
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from ctbench.core import (
    SCHEMAS,
    SETTING_DATASET,
    canonical_json,
    eps_token,
    json_sha256,
    parse_eps,
    read_yaml,
    same_eps,
    sub_schema,
    validate,
)
from ctbench.errors import CTBenchError

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[1]
#: Where a wheel (``pip install .``, not editable) puts ``hparams.yaml``: pyproject's ``data-files``.
_INSTALLED = Path(sysconfig.get_path("data")) / "share" / "ctbench"


def _default(checkout: Path, installed: Path) -> Path:
    """The file in the source checkout (editable install) if present, else the installed copy."""
    return checkout if checkout.exists() or not installed.exists() else installed


#: Default locations: the source checkout, else the copy a wheel installs; pass explicit paths otherwise.
DEFAULT_HPARAMS = _default(_REPO / "config" / "hparams.yaml", _INSTALLED / "config" / "hparams.yaml")
#: The schema ships inside the package (``ctbench/schemas``), editable install or wheel alike.
DEFAULT_SCHEMA = SCHEMAS / "hparams.schema.yaml"

# --------------------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _load_yaml_cached(path: str, mtime: float) -> Any:
    return read_yaml(path)


def _load_yaml(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CTBenchError(f"file not found: {p}")
    return copy.deepcopy(_load_yaml_cached(str(p.resolve()), p.stat().st_mtime))


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
    validate({k: v for k, v in cfg.items() if v is not None}, sub_schema(schema, "hparams"), what="config")
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


def config_hash(resolved: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of a resolved config: equal configs ⇔ equal hashes."""
    return json_sha256(resolved)


def to_json(resolved: dict) -> str:
    return canonical_json(resolved, compact=False)
