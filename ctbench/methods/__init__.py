"""Training methods by the literature's names, one file each (registry :data:`METHODS`).

=============  ==================================================================  ================
``standard``   cross-entropy on clean inputs                                       ``standard.py``
``pgd``        PGD adversarial training (Madry et al. 2018)                        ``pgd.py``
``edac``       PGD + EDAC extra-gradient step (Zhang et al. 2023)                  ``edac.py``
=============  ==================================================================  ================

Bound-based methods (``ibp``, ``crown_ibp``, ``sabr``, ``taps``, ``staps``, ``mtl_ibp``) live in their own
files too. Every module in this package is imported on first use, so **adding a method is adding one
file** that defines a :class:`~ctbench.methods.base.TrainingMethod` subclass decorated with
``@METHODS.register("name")`` and overriding ``robust_loss`` (contract in ``base.py``).

Example::

    method = get_method("pgd")(resolved_config)        # or create_method(resolved_config)
    out = method.step(model, x, y, eps, optimizer=opt)  # gradients in p.grad; opt.step() is the caller's
"""

from __future__ import annotations

import importlib
import pkgutil

from ctbench.methods.base import StepOutput, TrainingMethod, input_box
from ctbench.registry import Registry

#: name → TrainingMethod subclass.
METHODS: Registry[type[TrainingMethod]] = Registry("method")

_loaded = False


def _load_all() -> None:
    """Import every module of this package once (each registers its method)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_method(name: str) -> type[TrainingMethod]:
    """The method class registered as ``name`` (unknown names: CTBenchError listing the known ones)."""
    _load_all()
    return METHODS.get(name)


def method_names() -> list[str]:
    _load_all()
    return list(METHODS)


def create_method(config: dict) -> TrainingMethod:
    """Instantiate ``config["method"]`` with a resolved config (``ctbench.config.resolve``)."""
    return get_method(config["method"])(config)


__all__ = [
    "METHODS",
    "StepOutput",
    "TrainingMethod",
    "create_method",
    "get_method",
    "input_box",
    "method_names",
]
