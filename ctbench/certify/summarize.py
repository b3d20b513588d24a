"""``ctbench summarize``: ``certify.h5`` (+ ``attack.h5``) → one table row per cell
(Parquet/CSV + metrics.json).

Columns (fractions are of all ``n`` samples):

* ``nat_acc`` — clean accuracy; ``cert_acc`` — certified by any stage (the complete certified accuracy
  when the cascade ended with BaB/MILP and nothing is ``unknown``/``timeout``);
* ``ibp_acc`` — certified by IBP; ``crown_ibp_acc`` — by IBP or CROWN-IBP (cumulative, the cascade
  order); ``cert_acc_upto_<stage>`` — cumulative certified accuracy after each bound stage;
* ``adv_acc`` — correct and not broken by any counterexample (cascade attack/verifier, and the
  ``attack.h5`` attack when given); ``adv_acc_attack`` — from the attack file alone;
* ``count_<status>``, ``decided_by_<stage>`` — counts, adding up to ``n``;
* ``time_total_s``, ``time_mean_s``, ``time_<stage>_s``, ``throughput_<stage>`` (samples/s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ctbench.certify import hdf5
from ctbench.certify.status import CERTIFIED_VALUES, Status
from ctbench.errors import CTBenchError
from ctbench.io import atomic_path, write_json


def summarize(certify_path, attack_path=None, *, fingerprint: str | None = None, expect: dict | None = None) -> dict:
    """The cell's summary row (see module docstring). ``expect`` (stage → fingerprint) refuses inputs made
    for another configuration; the row's ``fingerprints`` are the inputs' plus ``summarize``."""
    from ctbench.fingerprint import check_expected

    data, attrs = hdf5.read_h5(certify_path)
    if attrs.get("format") != hdf5.CERTIFY_FORMAT:
        raise CTBenchError(f"{certify_path} is not a ctbench certificate file")
    fingerprints = dict(attrs.get("fingerprints") or {})
    check_expected(certify_path, fingerprints, {k: v for k, v in (expect or {}).items() if k != "attack"})
    status = data["status"].astype(np.int64)
    n = len(status)
    if n == 0:
        raise CTBenchError(f"{certify_path} has no samples")
    stages = list(attrs["stages"])
    certified = np.isin(status, CERTIFIED_VALUES)
    falsified = status == int(Status.FALSIFIED)
    settings = attrs.get("settings") or {}
    row = {
        "cell": attrs.get("cell"),
        "dataset": attrs.get("dataset"),
        "split": attrs.get("split"),
        "eps": attrs.get("eps"),
        "method": attrs.get("method"),
        "seed": attrs.get("seed"),
        "model": attrs.get("model"),
        "model_sha256": attrs.get("model_sha256"),
        "variant": (attrs.get("cell") or {}).get("variant", ""),
        "n": n,
        # the † of Table 1 only where a complete stage ran and saw the first N samples only
        "complete_limit": settings.get("complete_limit") if "complete" in attrs["stage_margin_kinds"] else None,
        "epochs": (attrs.get("config") or {}).get("epochs"),
        "train_subset": ((attrs.get("model_provenance") or {}).get("train_limits") or {}).get("subset"),
        "train_max_steps": ((attrs.get("model_provenance") or {}).get("train_limits") or {}).get("max_steps"),
        # what validation / model selection used: "test" (the paper's) or a held-out part of the training set
        "selection_split": (attrs.get("model_provenance") or {}).get("selection_split") or "test",
        "nat_acc": float(data["nat_correct"].mean()),
        "cert_acc": float(certified.mean()),
    }
    cum = np.zeros(n, bool)
    by = data["decided_by"]
    for j, s in enumerate(stages):
        if attrs["stage_margin_kinds"][j] == "lower_bound":
            cum |= (by == j) & certified
            row[f"cert_acc_upto_{s}"] = float(cum.mean())
    for key, s in (("ibp_acc", "IBP"), ("crown_ibp_acc", "CROWN-IBP")):
        row[key] = row.get(f"cert_acc_upto_{s}", float("nan"))
    adv = data["nat_correct"] & ~falsified
    if attack_path is not None:
        adv = adv & ~_attack_columns(row, attack_path, certify_path, data, attrs, certified, fingerprints, expect)
    row["adv_acc"] = float(adv.mean())
    _count_columns(row, data, status, stages)
    if fingerprint:
        fingerprints["summarize"] = fingerprint
    row["fingerprints"] = fingerprints
    return row


def _attack_columns(row, attack_path, certify_path, data, attrs, certified, fingerprints, expect) -> np.ndarray:
    """The attack file's columns of ``row`` (and its fingerprint); returns which samples it broke (aligned
    with ``data``). An attack file of another model or lacking samples is refused."""
    from ctbench.fingerprint import check_expected

    adata, aattrs = hdf5.read_h5(attack_path)
    if aattrs.get("format") != hdf5.ATTACK_FORMAT:
        raise CTBenchError(f"{attack_path} is not a ctbench attack file")
    if aattrs.get("model_sha256") != attrs.get("model_sha256"):
        raise CTBenchError(f"{attack_path} attacks another model than {certify_path} certifies "
                           "(model sha256 differs); re-run the attack")
    afp = aattrs.get("fingerprints") or {}
    check_expected(attack_path, afp, {k: v for k, v in (expect or {}).items() if k == "attack"})
    if "attack" in afp:
        fingerprints["attack"] = afp["attack"]
    lookup = dict(zip(adata["sample_index"].tolist(), adata["attack_broken"].tolist(), strict=True))
    missing = [int(i) for i in data["sample_index"] if int(i) not in lookup]
    if missing:
        raise CTBenchError(
            f"{attack_path} lacks {len(missing)} samples of {certify_path} "
            f"(first: {missing[0]}); attack the same --start/--n"
        )
    broken = np.array([lookup[int(i)] for i in data["sample_index"]], bool)
    row["adv_acc_attack"] = float((adata["nat_correct"] & ~adata["attack_broken"]).mean())
    row["certified_but_attacked"] = int((certified & broken).sum())
    row["attack"] = aattrs.get("attack")
    return broken


def _count_columns(row, data, status, stages) -> None:
    """Counts per status and deciding stage, and the timing columns of ``row``."""
    n = len(status)
    by = data["decided_by"]
    for s in Status:
        row[f"count_{s.label}"] = int((status == int(s)).sum())
    row["decided_by_clean"] = int((status == int(Status.INCORRECT)).sum())
    for j, s in enumerate(stages):
        row[f"decided_by_{s}"] = int((by == j).sum())
    row["decided_by_none"] = int(n - row["decided_by_clean"] - sum(row[f"decided_by_{s}"] for s in stages))
    row["time_total_s"] = float(data["time_s"].sum())
    row["time_mean_s"] = float(data["time_s"].mean())
    for j, s in enumerate(stages):
        t, k = float(data["stage_time_s"][j]), int(data["stage_samples"][j])
        row[f"time_{s}_s"] = t
        row[f"processed_{s}"] = k
        row[f"throughput_{s}"] = k / t if t > 0 else float("nan")


def write_summary(row: dict, out, metrics=None) -> None:
    """Write the one-row table (``.parquet`` or ``.csv``) and, if given, ``metrics.json``."""
    import pandas as pd

    out = Path(out)
    df = pd.DataFrame([{k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in row.items()}])
    if out.suffix == ".parquet":
        with atomic_path(out) as tmp:
            df.to_parquet(tmp, index=False)
    elif out.suffix == ".csv":
        with atomic_path(out) as tmp:
            df.to_csv(tmp, index=False)
    else:
        raise CTBenchError(f"--out must end in .parquet or .csv, got {out.name}")
    if metrics is not None:
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}  # NaN → null
        write_json(metrics, json.loads(json.dumps(clean, default=str)))
