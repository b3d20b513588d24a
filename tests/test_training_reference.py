"""A short training gives the same history and weights as the code before the training loop was split into
small functions (issue 27): reference values recorded from that code (commit e0816c0) on CPU.

Two runs cover the loop's branches: PGD with SWA and ``model_selection: last``; IBP with a held-out validation
split, gradient clipping and selection by loss. Weights are compared by their per-tensor sums. The tolerance only
absorbs floating-point differences between machines; on one machine the values are bit-identical. The references
were recorded with 2 torch threads, and torch's reductions split their work by thread count, so the runs use 2
threads whatever the CPUs this process may use (with 1 thread the weights differ by up to 8e-3).
"""

from __future__ import annotations

import pytest
import torch

from ctbench.config import resolve
from ctbench.training import TrainOptions, train

TINY = {"epochs": 3, "eps_end_epoch": 1, "lr_milestones": [2], "batch_size": 32, "test_batch_size": 64,
        "attack_steps": 1, "attack_restarts": 1, "model": "cnn_small"}
CASES = {
    "pgd_swa": ("pgd", {"swa_start": 1, "swa_freq": 1, "model_selection": "last"}),
    "ibp_val": ("ibp", {"val_fraction": 0.25, "val_seed": 3, "model_selection": "loss", "grad_clip": 10.0}),
}

REFERENCE = {'ibp_val': {'history': [{'epoch': 1,
                          'eps': 0.11794871794871795,
                          'lr': 0.0005,
                          'train_nat_acc': 0.3888888888888889,
                          'train_nat_loss': 1.9706872834099665,
                          'train_reg_loss': 0.34825422818539664,
                          'train_rob_acc': 0.05555555555555555,
                          'train_rob_loss': 164.1793530782064,
                          'val_eps': 0.1,
                          'val_loss': 162.96566772460938,
                          'val_nat_acc': 0.7083333333333334,
                          'val_rob_acc': 0.0},
                         {'epoch': 2,
                          'eps': 0.2,
                          'lr': 0.0005,
                          'train_nat_acc': 0.7638888888888888,
                          'train_nat_loss': 1.2938505278693304,
                          'train_reg_loss': 0.0007542483314561347,
                          'train_rob_acc': 0.0,
                          'train_rob_loss': 247.74769422743054,
                          'val_eps': 0.1,
                          'val_loss': 59.417134602864586,
                          'val_nat_acc': 0.7083333333333334,
                          'val_rob_acc': 0.0},
                         {'epoch': 3,
                          'eps': 0.2,
                          'lr': 0.0001,
                          'train_nat_acc': 0.6944444444444444,
                          'train_nat_loss': 1.4058925575680203,
                          'train_reg_loss': 0.0008166751488008433,
                          'train_rob_acc': 0.0,
                          'train_rob_loss': 104.78459167480469,
                          'val_eps': 0.1,
                          'val_loss': 50.23561096191406,
                          'val_nat_acc': 0.6666666666666666,
                          'val_rob_acc': 0.0}],
             'selected_epoch': 3,
             'weight_sums': {'0.mean': 0.1307000070810318,
                             '0.std': 0.30809998512268066,
                             '1.bias': 0.8714136201888323,
                             '1.weight': -4.9085255868849345,
                             '11.bias': -0.20047600381076336,
                             '11.weight': -2.0811949005365022,
                             '2.bias': -0.019424774160142988,
                             '2.running_mean': 0.7001298293471336,
                             '2.running_var': 6.23220344632864,
                             '2.weight': 15.98886114358902,
                             '4.bias': -0.0652677834732458,
                             '4.weight': -1.075145433297621,
                             '5.bias': 0.07643056922825053,
                             '5.running_mean': -0.3659672975772992,
                             '5.running_var': 0.4995758756995201,
                             '5.weight': 31.99433022737503,
                             '8.bias': -0.006065410532755777,
                             '8.weight': -106.33536298029168,
                             '9.bias': -0.09226511646556901,
                             '9.running_mean': -29.735028572380543,
                             '9.running_var': 11.6456827968359,
                             '9.weight': 99.75589793920517}},
 'pgd_swa': {'history': [{'epoch': 1,
                          'eps': 0.11794871794871795,
                          'lr': 0.0005,
                          'train_nat_acc': 0.14583333333333334,
                          'train_nat_loss': 2.541198412577311,
                          'train_reg_loss': 0.056471177687247597,
                          'train_rob_acc': 0.041666666666666664,
                          'train_rob_loss': 4.757158279418945,
                          'val_eps': 0.1,
                          'val_loss': 6.176924228668213,
                          'val_nat_acc': 0.17708333333333334,
                          'val_rob_acc': 0.0},
                         {'epoch': 2,
                          'eps': 0.2,
                          'lr': 0.0005,
                          'train_nat_acc': 0.4375,
                          'train_nat_loss': 1.7031227747599285,
                          'train_reg_loss': 0.05639557416240374,
                          'train_rob_acc': 0.0,
                          'train_rob_loss': 6.6396857897440595,
                          'val_eps': 0.1,
                          'val_loss': 5.1416862805684405,
                          'val_nat_acc': 0.3333333333333333,
                          'val_rob_acc': 0.0},
                         {'epoch': 3,
                          'eps': 0.2,
                          'lr': 0.0001,
                          'train_nat_acc': 0.5520833333333334,
                          'train_nat_loss': 1.4194249312082927,
                          'train_reg_loss': 0.05637645969788233,
                          'train_rob_acc': 0.0,
                          'train_rob_loss': 5.601572036743164,
                          'val_eps': 0.1,
                          'val_loss': 4.948250452677409,
                          'val_nat_acc': 0.3854166666666667,
                          'val_rob_acc': 0.0}],
             'selected_epoch': 3,
             'weight_sums': {'0.mean': 0.1307000070810318,
                             '0.std': 0.30809998512268066,
                             '1.bias': 0.856437711045146,
                             '1.weight': 6.470883913571015,
                             '11.bias': -0.19654955342411995,
                             '11.weight': -6.135840288625332,
                             '2.bias': -0.0025579291159374407,
                             '2.running_mean': 0.9762930981814861,
                             '2.running_var': 24.181632339954376,
                             '2.weight': 15.999852299690247,
                             '4.bias': -0.06413187755970284,
                             '4.weight': 4.973687708339639,
                             '5.bias': -0.026193884143140167,
                             '5.running_mean': 1.546099815517664,
                             '5.running_var': 29.74071580171585,
                             '5.weight': 31.99649441242218,
                             '8.bias': -0.017275213187531335,
                             '8.weight': -2.1687634477677875,
                             '9.bias': -0.12913866419694386,
                             '9.running_mean': 0.21712097898125648,
                             '9.running_var': 71.38772973418236,
                             '9.weight': 99.83192485570908}}}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", sorted(CASES))
def test_short_training_matches_the_recorded_reference(tmp_path, case, two_threads):
    method, extra = CASES[case]
    cfg = resolve(("mnist_mini", "0.1"), method, {**TINY, **extra}, seed=1)
    summary = train(cfg, tmp_path, TrainOptions(max_steps=3, subset=96, show_progress=False))
    ref = REFERENCE[case]
    assert summary["status"] == "done" and summary["selected_epoch"] == ref["selected_epoch"]
    history = [{k: v for k, v in r.items() if k != "time_s"} for r in summary["history"]]
    assert len(history) == len(ref["history"])
    for got, want in zip(history, ref["history"], strict=True):
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    state = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    sums = {k: float(v.double().sum()) for k, v in state.items() if v.is_floating_point()}
    assert sums == pytest.approx(ref["weight_sums"], rel=1e-4, abs=1e-5)
