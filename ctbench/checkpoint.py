"""Resumable training checkpoints and the final ``model.pt`` (style anchors §3.4).

Everything is saved as tensors + plain dicts / lists / str / int / float, so both files load with
``torch.load(path, weights_only=True)``; all writes are atomic (``ctbench.io.atomic_path``).

``train/checkpoint.pt`` (after every epoch)::

    {"format": "ctbench-train-checkpoint", "version": 1, "config_hash": str, "config": json str,
     "epoch": int (epochs completed), "global_step": int, "model": state_dict,
     "optimizer": ..., "lr_scheduler": ..., "swa": state_dict | None, "rng": {...},
     "best": {"epoch": int, "metric": float, "state_dict": ...} | None, "history": [row dicts]}

``train/candidates.pt`` (once, when training finished)::

    {"format": "ctbench-train-candidates", "version": 1, "config": json str, "config_hash": str,
     "last": {"epoch", "state_dict"}, "best": {"epoch", "metric", "state_dict"} | None,
     "swa": {"epoch", "n_averaged", "state_dict"} | None}

``model.pt`` is written by ``ctbench.select`` in the format of ``ctbench.modelfile``.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from ctbench.config import config_hash, to_json
from ctbench.errors import CTBenchError
from ctbench.io import atomic_path

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ctbench-train-checkpoint"


# --------------------------------------------------------------------------------------------------
# RNG states as weights_only-safe payloads
# --------------------------------------------------------------------------------------------------


def get_rng_state() -> dict:
    """RNG states of torch (CPU + CUDA), numpy and Python's ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(pystate), "gauss": gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------


def cpu_state_dict(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, config: dict) -> dict:
    """Load ``train/checkpoint.pt``; refuse one written for a different resolved config."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise CTBenchError(f"cannot read checkpoint {path}: {e}; delete it to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CTBenchError(f"{path} is not a ctbench training checkpoint; delete it to start over")
    if ckpt.get("config_hash") != config_hash(config):
        raise CTBenchError(
            f"checkpoint {path} was written for a different configuration; use another --out or delete it"
        )
    return ckpt


CANDIDATES_FORMAT = "ctbench-train-candidates"


def checkpoint_matches(path: str | os.PathLike, config: dict) -> bool:
    """True if the checkpoint at ``path`` was written for this resolved config (unreadable → False)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint does not match
        return False
    return isinstance(ckpt, dict) and ckpt.get("config_hash") == config_hash(config)


def save_candidates(path: str | os.PathLike, config: dict, candidates: dict) -> None:
    """Write ``train/candidates.pt``: the finished run's ``last``, ``best`` and ``swa`` states + config."""
    payload = {"format": CANDIDATES_FORMAT, "version": 1, "config": to_json(config),
               "config_hash": config_hash(config), **candidates}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_candidates(path: str | os.PathLike) -> dict:
    """Read ``train/candidates.pt`` (``weights_only=True``); clear error for anything else."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CTBenchError(f"cannot read training candidates {path}: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != CANDIDATES_FORMAT:
        raise CTBenchError(f"{path} is not a ctbench training-candidates file (from `ctbench train`)")
    return payload
