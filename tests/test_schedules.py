"""ε schedule (original utils.Scheduler "smooth", reference §3 "Eps schedule") and the LR schedule."""

from __future__ import annotations

import pytest
import torch

from ctbench.errors import CTBenchError
from ctbench.schedules import EpsSchedule, make_lr_scheduler


def reference_smooth(step, start_step, end_step, start_value, end_value, c=0.25, e=4):
    """Transcribed from the description: polynomial start + α·t^e for the first c of the ramp, then
    linear to the end value; α = d / ((T − m)·e·m^(e−1) + m·m^(e−1)), m = c·T."""
    if step <= start_step:
        return start_value
    if step >= end_step:
        return end_value
    T = end_step - start_step
    m = c * T
    d = end_value - start_value
    alpha = d / ((T - m) * e * m ** (e - 1) + m * m ** (e - 1))
    t = step - start_step
    if t <= m:
        return start_value + alpha * t**e
    mid_value = start_value + alpha * m**e
    mid_slope = alpha * e * m ** (e - 1)
    return mid_value + mid_slope * (t - m)


@pytest.mark.parametrize(
    "start_epoch, end_epoch, n, end", [(0, 20, 235, 0.2), (1, 81, 391, 2 / 255), (1, 121, 7, 8 / 255)]
)
def test_smooth_matches_reference(start_epoch, end_epoch, n, end):
    s = EpsSchedule(end, start_epoch, end_epoch, n, "smooth")
    for step in list(range(0, (end_epoch + 2) * n, max(1, n // 3))) + [s.start_step + 1, s.end_step - 1]:
        assert s(step) == pytest.approx(
            reference_smooth(step, start_epoch * n, end_epoch * n, 0.0, end), rel=1e-12, abs=1e-15
        )


def test_smooth_continuity_monotonicity_endpoints():
    n, end = 100, 0.3
    s = EpsSchedule(end, 1, 21, n, "smooth")
    values = [s(k) for k in range(0, 25 * n)]
    assert all(v == 0.0 for v in values[: n + 1])  # epoch 0 (and the ramp start) is eps = 0
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # monotone
    assert values[21 * n] == end and values[-1] == end
    steps = torch.tensor(values, dtype=torch.float64)
    diffs = steps[1:] - steps[:-1]
    assert diffs.max() <= 2 * end / (20 * n) * 1.0001  # no jump: slope bounded by the linear-phase slope
    # slope continuous at the junction m = T/4
    m = s.start_step + 20 * n // 4
    assert (s(m + 1) - s(m)) == pytest.approx(s(m) - s(m - 1), rel=0.02)
    # the linear phase is linear
    assert s(m + 300) - s(m + 200) == pytest.approx(s(m + 200) - s(m + 100), rel=1e-9)


def test_linear_and_constant():
    lin = EpsSchedule(0.2, 0, 10, 10, "linear")
    assert lin(0) == 0 and lin(50) == pytest.approx(0.1) and lin(100) == 0.2 and lin(1000) == 0.2
    const = EpsSchedule(0.2, 0, 10, 10, "constant")
    assert const(0) == 0.2 and const.ramp_done(0)
    assert not lin.ramp_done(99) and lin.ramp_done(100)
    with pytest.raises(CTBenchError):
        EpsSchedule(0.2, 0, 10, 10, "cosine")
    with pytest.raises(CTBenchError):
        EpsSchedule(0.2, 5, 1, 10)


def test_zero_length_ramp_is_a_step():
    s = EpsSchedule(0.1, 3, 3, 10)
    assert s(29) == 0.0 and s(30) == 0.1


def test_multistep_lr_per_epoch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=5e-4)
    sched = make_lr_scheduler(opt, [50, 60], 0.2)
    lrs = []
    for _ in range(70):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert (
        lrs[49] == pytest.approx(5e-4) and lrs[50] == pytest.approx(1e-4) and lrs[60] == pytest.approx(2e-5)
    )
