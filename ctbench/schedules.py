"""ε and learning-rate schedules (CTBench App. C.3; original ``utils.Scheduler``, ``mix_train.py``).

ε is scheduled per **training step**: the global step ``epoch · steps_per_epoch + batch`` ramps from
``start_epoch · N`` to ``end_epoch · N`` (N = steps per epoch), from ``start_value`` (0) to
``end_value`` (the train ε). Shapes of the ramp:

* ``smooth`` (original default; c = 0.25, e = 4): over the ramp length T (steps) with m = c·T,
  ``start + α·t^e`` for t ≤ m, then linear to ``end_value`` at t = T, where α makes value *and*
  slope continuous at m: ``α = d / ((T − m)·e·m^{e−1} + m·m^{e−1})``, d = end − start.
* ``linear``: straight line from start to end.
* ``constant``: ``end_value`` from step 0 (original ``--no-anneal``).

Before the ramp the value is ``start_value``, after it ``end_value``. CIFAR-10 / TinyImageNet start at
epoch 1 (epoch 0 is standard training at ε = 0); MNIST at epoch 0.

The learning rate uses ``torch.optim.lr_scheduler.MultiStepLR(milestones, gamma=0.2)`` stepped once
per epoch (:func:`make_lr_scheduler`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctbench.errors import CTBenchError

SCHEDULES = ("smooth", "linear", "constant")


@dataclass(frozen=True)
class EpsSchedule:
    """ε as a function of the global training step.

    Args:
        end_value: the train ε reached at the end of the ramp.
        start_epoch, end_epoch: ramp boundaries in epochs (``end_epoch >= start_epoch``).
        steps_per_epoch: N, batches per epoch.
        kind: ``smooth``, ``linear`` or ``constant``.
        start_value: value before and at the start of the ramp (0).
        mid_fraction, exponent: the smooth ramp's c = 0.25 and e = 4.
    """

    end_value: float
    start_epoch: int
    end_epoch: int
    steps_per_epoch: int
    kind: str = "smooth"
    start_value: float = 0.0
    mid_fraction: float = 0.25
    exponent: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise CTBenchError(f"unknown eps schedule {self.kind!r}; known: {', '.join(SCHEDULES)}")
        if self.end_epoch < self.start_epoch or self.steps_per_epoch < 1:
            raise CTBenchError("eps schedule needs end_epoch >= start_epoch and steps_per_epoch >= 1")

    @property
    def start_step(self) -> int:
        return self.start_epoch * self.steps_per_epoch

    @property
    def end_step(self) -> int:
        return self.end_epoch * self.steps_per_epoch

    def __call__(self, step: int) -> float:
        """ε at global step ``step`` (``epoch · steps_per_epoch + batch_index``)."""
        if self.kind == "constant" or step >= self.end_step:
            return float(self.end_value)
        if step <= self.start_step:
            return float(self.start_value)
        t = float(step - self.start_step)
        total = float(self.end_step - self.start_step)
        d = self.end_value - self.start_value
        if self.kind == "linear":
            return float(self.start_value + d * t / total)
        e, m = self.exponent, self.mid_fraction * total
        alpha = d / ((total - m) * e * m ** (e - 1) + m * m ** (e - 1))
        if t <= m:
            return float(self.start_value + alpha * t**e)
        slope = alpha * e * m ** (e - 1)
        return float(self.start_value + alpha * m**e + slope * (t - m))

    def at(self, epoch: int, batch: int) -> float:
        return self(epoch * self.steps_per_epoch + batch)

    def ramp_done(self, step: int) -> bool:
        """True once ε has reached its end value (step ≥ end of the ramp, or a constant schedule)."""
        return self.kind == "constant" or step >= self.end_step


def eps_schedule_from_config(cfg: dict, steps_per_epoch: int) -> EpsSchedule:
    """The :class:`EpsSchedule` of a resolved config (``train_eps``, ``eps_start_epoch``, ...)."""
    return EpsSchedule(
        end_value=float(cfg["train_eps"]),
        start_epoch=int(cfg["eps_start_epoch"]),
        end_epoch=int(cfg["eps_end_epoch"]),
        steps_per_epoch=steps_per_epoch,
        kind=cfg.get("eps_schedule") or "smooth",
    )


def make_lr_scheduler(optimizer: torch.optim.Optimizer, milestones, gamma: float = 0.2):
    """``MultiStepLR(milestones, gamma)``; call ``.step()`` once at the end of every epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
