"""The final model file (``model.pt``): weights + everything needed to rebuild and trust them.

Format (a plain dict, so it loads with ``torch.load(path, weights_only=True)``)::

    {
      "format": "ctbench-model/1",
      "state_dict": {name: tensor},           # BN running stats = population statistics
      "model": "cnn7",                        # registry name (ctbench.models.MODELS)
      "dataset": "mnist",                     # registry name (ctbench.data.DATASETS)
      "model_kwargs": "{}",                   # JSON: extra architecture arguments
      "config": "{...}",                      # JSON: the resolved per-cell config
      "provenance": "{...}",                  # JSON: ctbench/torch versions, git commit, created (UTC), ...
    }

JSON-encoded strings keep the payload to tensors and plain strings (timm / safetensors convention).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from pathlib import Path

import torch
from torch import nn

from ctbench import __version__
from ctbench.errors import CTBenchError
from ctbench.io import atomic_path, load_torch
from ctbench.threads import thread_info

FORMAT = "ctbench-model/1"
#: What a model file is, for error messages about files that are not one.
MODEL_FILE_HINT = "model.pt, written by ctbench train or ctbench select"


def hardware() -> str:
    """The machine in words (cost tables name it): GPU if CUDA is available, CPU model and usable CPUs."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    import platform

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    desc = f"{cpu or platform.processor() or platform.machine()} ({n} CPUs)"
    if torch.cuda.is_available():
        desc = f"{torch.cuda.get_device_name(0)}, {desc}"
    return desc


def provenance(**extra) -> dict:
    """Versions, git commit (if in a checkout), creation time and device, plus ``extra``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "ctbench": __version__,
        "torch": torch.__version__,
        "git_commit": commit,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "threads": thread_info()["threads"],
        **extra,
    }


def save_model(path: str | os.PathLike, model: nn.Module, *, model_name: str, dataset: str,
               config: dict | None = None, model_kwargs: dict | None = None, **provenance_extra) -> None:
    """Write ``model.pt`` atomically (see module docstring for the format)."""
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model": model_name,
        "dataset": dataset,
        "model_kwargs": json.dumps(model_kwargs or {}),
        "config": json.dumps(config or {}, sort_keys=True, default=str),
        "provenance": json.dumps(provenance(**provenance_extra), sort_keys=True, default=str),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Sequential, dict]:
    """Rebuild the model from ``model.pt``; returns ``(model in eval mode, metadata dict)``.

    Missing, truncated or foreign files raise :class:`CTBenchError` with one line.
    """
    from ctbench.models import create_model

    path = Path(path)
    payload = load_torch(path, "ctbench model file", map_location, hint=MODEL_FILE_HINT)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else None
        if isinstance(fmt, str) and fmt.startswith("ctbench-train-"):  # train/checkpoint.pt, train/candidates.pt
            raise CTBenchError(f"{path} is a ctbench training file ({fmt}), not a ctbench model file: "
                               "`ctbench select train/candidates.pt --out model.pt` makes one")
        raise CTBenchError(f"{path} is a PyTorch file but not a ctbench model file (no format {FORMAT}; "
                           f"{MODEL_FILE_HINT})")
    meta = {
        "model": payload["model"],
        "dataset": payload["dataset"],
        "model_kwargs": json.loads(payload["model_kwargs"]),
        "config": json.loads(payload["config"]),
        "provenance": json.loads(payload["provenance"]),
    }
    model = create_model(meta["model"], meta["dataset"], **meta["model_kwargs"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CTBenchError(f"{path}: weights do not fit {meta['model']} on {meta['dataset']}: "
                           f"{str(e).splitlines()[0]}") from None
    model.to(map_location).eval()
    return model, meta
