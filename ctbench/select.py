"""Model selection / SWA (paper §4.1, App. C.3): the training run's candidates → ``model.pt``.

``train/candidates.pt`` holds the finished run's last state, the best state by the method's own
validation metric (robust-accuracy estimate or loss, only epochs after the ε ramp), and — for methods
without a selection metric such as MTL-IBP — the SWA average with population BN statistics
(Izmailov et al. 2018; ``torch.optim.swa_utils``). The rule of the resolved config decides:

* ``swa_start`` set → the SWA average (the last state if nothing was averaged);
* ``model_selection`` ``robust_accu`` / ``loss`` → the best state (the last state if none qualified);
* ``model_selection`` ``last`` → the last state.

The result is written with :func:`ctbench.modelfile.save_model` (weights + registry names + resolved
config + provenance), atomically.
"""

from __future__ import annotations

import json
import logging
import os

from ctbench.checkpoint import load_candidates
from ctbench.config import config_hash
from ctbench.fingerprint import check_expected
from ctbench.modelfile import save_model
from ctbench.models import create_model

logger = logging.getLogger(__name__)


def choose(candidates: dict, config: dict) -> tuple[str, dict]:
    """``(how, candidate)`` chosen by the config's rule (see module docstring)."""
    if config.get("swa_start") is not None and candidates.get("swa") is not None:
        return f"swa(n={candidates['swa']['n_averaged']})", candidates["swa"]
    selection = config.get("model_selection") or "robust_accu"
    if selection != "last" and candidates.get("best") is not None:
        return selection, candidates["best"]
    return "last", candidates["last"]


def select_model(candidates_path: str | os.PathLike, out_path: str | os.PathLike, *,
                 fingerprint: str | None = None, expect: dict | None = None) -> dict:
    """Write the selected model to ``out_path``; returns ``{"model_path", "selection", "selected_epoch"}``.

    ``model.pt``'s provenance records ``fingerprints``: the training run's (from the candidates) and, when
    given, this stage's (``select``). ``expect`` (stage → fingerprint) refuses candidates of another run.
    """
    payload = load_candidates(candidates_path)
    fingerprints = {"train": payload.get("fingerprint")}
    check_expected(candidates_path, fingerprints, expect or {})
    if fingerprint:
        fingerprints["select"] = fingerprint
    config = json.loads(payload["config"])
    how, chosen = choose(payload, config)
    model = create_model(config["model"], config["dataset"])
    model.load_state_dict(chosen["state_dict"])
    save_model(
        out_path, model, model_name=config["model"], dataset=config["dataset"], config=config,
        method=config.get("method"), eps=config.get("eps_str"), seed=config.get("seed"),
        config_hash=config_hash(config), selection=how, selected_epoch=int(chosen["epoch"]),
        fingerprints=fingerprints, variant=config.get("variant", ""), train_limits=payload.get("limits") or {},
        selection_split=payload.get("selection_split") or "test",
    )
    logger.info("selected %s (epoch %s) → %s", how, chosen["epoch"], out_path)
    return {"model_path": str(out_path), "selection": how, "selected_epoch": int(chosen["epoch"])}
