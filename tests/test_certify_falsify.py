"""The cascade's falsifier (ctbench/certify/falsify.py): margin-loss PGD with targeted restarts finds the
counterexamples that the original cross-entropy PGD and an untargeted margin PGD miss."""

import numpy as np
import torch
from torch import nn

from ctbench.certify.cascade import CertifySettings, certify_model
from ctbench.certify.hdf5 import read_h5
from ctbench.certify.stages import Status

D = 100  # inputs; the box is [0, 1]^D (x = 0.5, eps = 0.5)


def _linear(weight, bias) -> nn.Sequential:
    net = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0])).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        net[1].bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return net


def saturating_net(scale: float = 10.0) -> nn.Sequential:
    """z_0 − z_1 = scale · (90 − Σx): negative only near the all-ones corner (Σx > 90), which a random start
    (Σx ≈ 50 ± 3) never reaches. There the true logit leads by ~400, softmax underflows in float32 and the
    cross-entropy gradient is exactly 0, so sign-PGD on it never moves; the margin's gradient is −scale."""
    w = np.stack([-scale / 2 * np.ones(D), scale / 2 * np.ones(D)])
    return _linear(w, [45 * scale, -45 * scale])


def decoy_net() -> nn.Sequential:
    """Three classes, label 0 (z_0 = 0). Class 1 is the runner-up everywhere on the box but can never win
    (z_1 = −0.5 + 0.4·x_0 ≤ −0.1); class 2 wins near the corner of the last 20 inputs
    (z_2 = 10·(mean(x_80..99) − 0.95)). An untargeted margin only follows its maximum, class 1."""
    w = np.zeros((3, D))
    w[1, 0] = 0.4
    w[2, 80:] = 10 / 20
    return _linear(w, [0.0, -0.5, -9.5])


def _falsified(net, num_classes, **settings) -> tuple[np.ndarray, np.ndarray]:
    data = [(torch.full((1, 10, 10), 0.5), 0) for _ in range(4)]
    s = CertifySettings(eps=0.5, eps_str="0.5", stages=("PGD",), pgd_steps=20, **settings)
    out = _falsified.tmp / f"{hash(tuple(sorted(settings.items())))}.h5"
    certify_model(net, data, range(len(data)), s, out, num_classes=num_classes)
    d, _ = read_h5(out)
    return d["status"], d["stage_margins"][:, 0]


def test_margin_loss_finds_what_cross_entropy_misses(tmp_path):
    _falsified.tmp = tmp_path
    net = saturating_net()
    with torch.no_grad():  # the clean point is robust by a wide margin: nothing to find by accident
        assert float(net(torch.full((1, 1, 10, 10), 0.5))[0, 0] - net(torch.full((1, 1, 10, 10), 0.5))[0, 1]) > 300
    status, margin = _falsified(net, 2, pgd_loss="ce", pgd_restarts=5)
    assert (status == int(Status.UNKNOWN)).all() and (margin > 0).all()
    status, margin = _falsified(net, 2, pgd_loss="margin", pgd_restarts=1)
    assert (status == int(Status.FALSIFIED)).all() and (margin < 0).all()
    with torch.no_grad():  # the stage's margin is the model's at a point of the box
        assert float(net(torch.ones(1, 1, 10, 10)) @ torch.tensor([1.0, -1.0])) < 0


def test_targeted_restarts_find_what_the_untargeted_margin_misses(tmp_path):
    _falsified.tmp = tmp_path
    net = decoy_net()
    status, margin = _falsified(net, 3, pgd_targets=0, pgd_restarts=6)
    assert (status == int(Status.UNKNOWN)).all() and (margin > 0).all()
    # restarts: untargeted, towards class 1, towards class 2 (found); default targets = 3 (capped at 2 here)
    status, margin = _falsified(net, 3, pgd_restarts=3)
    assert (status == int(Status.FALSIFIED)).all() and (margin < 0).all()


def test_falsifier_is_sound_and_stops_on_broken_samples():
    """Every confirmed point lies in the box with a negative margin; broken samples get no further restarts."""
    from ctbench.certify.falsify import falsify

    net = saturating_net()
    x = torch.full((3, 1, 10, 10), 0.5)
    y = torch.zeros(3, dtype=torch.int64)
    lo, hi = torch.zeros_like(x), torch.ones_like(x)
    seen = []

    def confirm(x_adv, idx):
        seen.append(idx.tolist())
        with torch.no_grad():
            z = net(x_adv).double()
        m = z[:, 0] - z[:, 1]
        return (m < 0) & ((x_adv >= lo[idx]) & (x_adv <= hi[idx])).flatten(1).all(1), m

    broken, best, m = falsify(net, x, y, lo, hi, confirm, steps=20, restarts=4, targets=1, check_every=0)
    assert broken.all() and (m < 0).all() and (best >= lo).all() and (best <= hi).all()
    assert seen == [[0, 1, 2], [0, 1, 2]]  # the clean check and one restart; then nothing is left to search
    seen.clear()
    broken, best, m = falsify(net, x, y, lo, hi, confirm, steps=20, restarts=4, targets=1)
    assert broken.all() and (m < 0).all() and (best >= lo).all() and (best <= hi).all()
    # the clean check, the check at step 10 (all broken: the restart ends there), the restart's result
    assert seen == [[0, 1, 2], [0, 1, 2], [0, 1, 2]]


class _Counting(nn.Module):
    """The wrapped network, counting the inputs it evaluates (in either precision)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.net(x)


def _mixed_problem(seed=0):
    """A random MLP and inputs of which a PGD with a few steps breaks some, and some only later or never."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    net.eval()
    x = torch.rand(64, 1, 6, 6)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def test_the_falsifier_stops_a_broken_sample_inside_its_restart():
    """Issue 25: with checks inside the restart, the falsifier breaks at least the samples it broke before,
    every point it returns for them is a confirmed counterexample, and it evaluates the network on fewer
    inputs (the broken samples leave the batch at the next check)."""
    from ctbench.certify.falsify import falsify

    net, x, y = _mixed_problem()
    counted = _Counting(net)
    lo, hi = (x - 0.15).clamp(0, 1), (x + 0.15).clamp(0, 1)  # about two thirds of the samples can be broken

    def confirm(points, idx):
        with torch.no_grad():
            z = counted(points).double()
        true = z.gather(1, y[idx, None]).squeeze(1)
        other = z.masked_fill(torch.nn.functional.one_hot(y[idx], 4).bool(), float("-inf")).amax(1)
        inside = ((points >= lo[idx]) & (points <= hi[idx])).flatten(1).all(1)
        return inside & (other > true), (true - other)

    results = {}
    for check_every in (0, 10):
        counted.rows = 0
        torch.manual_seed(1)
        broken, best, m = falsify(counted, x, y, lo, hi, confirm, steps=100, restarts=3, targets=2,
                                  check_every=check_every)
        results[check_every] = broken, best, m, counted.rows
    (b0, _, _, rows0), (b10, best10, m10, rows10) = results[0], results[10]
    assert 0 < int(b0.sum()) < len(y), "the problem must have broken and unbroken samples"
    assert bool((b10 | ~b0).all()) and int(b10.sum()) >= int(b0.sum())
    assert bool((m10[b10] < 0).all()) and bool(confirm(best10[b10], b10.nonzero().flatten())[0].all())
    assert rows10 < 0.8 * rows0, (rows10, rows0)


def test_pgd_with_a_check_that_never_fires_is_the_plain_attack():
    """done=None and a done that confirms nothing give the same points (same random draws): the early stop
    changes nothing for samples it does not stop."""
    from ctbench.attacks import pgd_attack

    net, x, y = _mixed_problem(3)
    lo, hi = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    torch.manual_seed(2)
    plain = pgd_attack(net, x, y, lo, hi, steps=25, restarts=3, loss="margin")
    torch.manual_seed(2)
    never = pgd_attack(net, x, y, lo, hi, steps=25, restarts=3, loss="margin",
                       done=lambda points, idx: torch.zeros(len(idx), dtype=torch.bool))
    assert torch.equal(plain, never)


def test_the_attack_stops_a_broken_sample_too():
    """`ctbench attack`'s PGD (cross-entropy, restarts inside one call) drops a sample once its best point is
    broken in float32 and float64: at least the same samples broken, on fewer network evaluations."""
    import copy

    from ctbench.certify.attack import attack_batch

    net, x, y = _mixed_problem()
    counted = _Counting(net)
    model64 = copy.deepcopy(net).double()
    out = {}
    for check_every in (0, 10):
        counted.rows = 0
        torch.manual_seed(4)
        broken, margin = attack_batch(counted, model64, x, y, 0.15, attack="pgd", steps=60, restarts=3, loss="ce",
                                      num_classes=4, seed=0, check_every=check_every)
        out[check_every] = broken, margin, counted.rows
    (b0, _, rows0), (b10, m10, rows10) = out[0], out[10]
    assert 0 < int(b0.sum()) < len(y) and bool((b10 | ~b0).all())
    assert bool((m10[b10] < 0).all()) and rows10 < 0.8 * rows0, (rows10, rows0)
