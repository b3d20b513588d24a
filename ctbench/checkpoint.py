"""Resumable training checkpoints and the final ``model.pt`` (style anchors §3.4).

Everything is saved as tensors + plain dicts / lists / str / int / float, so both files load with
``torch.load(path, weights_only=True)``; all writes are atomic (``ctbench.io.atomic_path``).

``train/checkpoint.pt`` (after every epoch)::

    {"format": "ctbench-train-checkpoint", "version": 1, "fingerprint": str, "config_hash": str,
     "config": json str,
     "epoch": int (epochs completed), "global_step": int, "model": state_dict,
     "optimizer": ..., "lr_scheduler": ..., "swa": state_dict | None, "rng": {...},
     "best": {"epoch": int, "metric": float, "state_dict": ...} | None, "history": [row dicts],
     "attempts": [{"attempt", "start_epoch", "end_epoch", "wall_s"}]}  (ctbench.training: the wall time of
     every call that trained this run so far; absent in checkpoints of earlier versions)

``train/candidates.pt`` (once, when training finished)::

    {"format": "ctbench-train-candidates", "version": 1, "config": json str, "config_hash": str,
     "fingerprint": str (the training run's, ctbench.fingerprint.train_fingerprint),
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
from ctbench.io import atomic_path, load_torch

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


def load_checkpoint(path: str | os.PathLike, fingerprint: str) -> dict:
    """Load ``train/checkpoint.pt``; refuse one written for another training run (fingerprint)."""
    try:
        ckpt = load_torch(path, "ctbench training checkpoint")
    except CTBenchError as e:
        raise CTBenchError(f"{e}; delete it to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CTBenchError(f"{path} is not a ctbench training checkpoint; delete it to start over")
    if ckpt.get("fingerprint") != fingerprint:
        raise CTBenchError(
            f"checkpoint {path} was written for a different configuration; use another --out, delete it, "
            "or pass --on-config-change restart (keeps it aside)"
        )
    return ckpt


def checkpoint_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint a checkpoint was written for (None if it is unreadable or not a checkpoint)."""
    try:
        ckpt = load_torch(path, "ctbench training checkpoint")
    except CTBenchError:
        return None
    return ckpt.get("fingerprint") if isinstance(ckpt, dict) else None


CANDIDATES_FORMAT = "ctbench-train-candidates"


def save_candidates(path: str | os.PathLike, config: dict, candidates: dict, fingerprint: str) -> None:
    """Write ``train/candidates.pt``: the finished run's ``last``, ``best`` and ``swa`` states + config."""
    payload = {"format": CANDIDATES_FORMAT, "version": 1, "config": to_json(config),
               "config_hash": config_hash(config), "fingerprint": fingerprint, **candidates}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_candidates(path: str | os.PathLike) -> dict:
    """Read ``train/candidates.pt`` (``weights_only=True``); clear error for anything else."""
    payload = load_torch(path, "ctbench training-candidates file (train/candidates.pt)")
    if not isinstance(payload, dict) or payload.get("format") != CANDIDATES_FORMAT:
        raise CTBenchError(f"{path} is not a ctbench training-candidates file (from `ctbench train`)")
    return payload
