"""Schedule checks at resolve time and --scale-schedule (ctbench.config.check_schedule / scale_schedule)."""

import pytest

from ctbench.config import load_hparams, resolve
from ctbench.errors import CTBenchError


def test_every_paper_cell_passes_the_checks():
    hp = load_hparams()
    for key, setting in hp["settings"].items():
        for method in setting["methods"]:
            resolve(key, method, hparams=hp)


@pytest.mark.parametrize("overrides,keys", [
    ({"epochs": 5}, ["eps_end_epoch", "--scale-schedule"]),  # the ramp ends at epoch 20
    ({"epochs": 35}, ["lr_milestones [50, 60]", "--scale-schedule"]),  # decays never happen
    ({"epochs": 60}, ["lr_milestones [60]"]),  # a milestone at the last epoch boundary never applies
    ({"swa_start": 80, "model_selection": "last"}, ["swa_start 80"]),
])
def test_each_check_fires_naming_the_keys(overrides, keys):
    with pytest.raises(CTBenchError) as e:
        resolve("mnist_0.1", "ibp", overrides)
    for k in keys:
        assert k in str(e.value)
    assert "\n" not in str(e.value)


def test_train_eps_below_test_eps_warns(caplog):
    resolve("mnist_0.3", "sabr", {"train_eps": "0.2"})
    assert "train_eps 0.2 is below the test eps 0.3" in caplog.text
    caplog.clear()
    resolve("mnist_0.3", "standard")  # standard training at eps 0 is what the paper does
    resolve("mnist_0.3", "sabr")
    assert "below the test eps" not in caplog.text


@pytest.mark.parametrize("setting,scale,want", [
    ("mnist_0.1", 0.5, dict(epochs=35, eps_start_epoch=0, eps_end_epoch=10, lr_milestones=[25, 30])),
    ("cifar10_2_255", 0.1, dict(epochs=16, eps_start_epoch=0, eps_end_epoch=8, lr_milestones=[12, 14])),
    ("mnist_0.1", 0.01, dict(epochs=1, eps_start_epoch=0, eps_end_epoch=0, lr_milestones=[])),
])
def test_scale_schedule_shrinks_everything_together(setting, scale, want):
    cfg = resolve(setting, "ibp", {"schedule_scale": scale})
    assert {k: cfg[k] for k in want} == want and cfg["schedule_scale"] == scale
    mtl = resolve(setting, "mtl_ibp", {"schedule_scale": scale})
    assert mtl["swa_start"] is None or mtl["swa_start"] <= mtl["epochs"] - 1


def test_scale_schedule_from_the_command_line(capsys):
    from ctbench.cli import main

    assert main(["train", "--dataset", "mnist", "--eps", "0.1", "--method", "ibp", "--scale-schedule", "0.5",
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 35" in out and "eps_end_epoch: 10" in out and "schedule_scale: 0.5" in out
    assert main(["train", "--dataset", "mnist", "--eps", "0.1", "--method", "ibp", "--scale-schedule", "2",
                 "--print-config"]) == 2
    assert "--scale-schedule must lie in (0, 1]" in capsys.readouterr().err
