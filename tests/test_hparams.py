"""config/hparams.yaml: schema validation, coverage, and the paper's Tables 6-10 transcribed here.

The PAPER dict below is transcribed from reference/ctbench-paper.txt (App. C, Tables 6-10, row by row
in the paper's column order PGD, EDAC, IBP, CROWN-IBP, SABR, TAPS, STAPS, MTL-IBP; "/" = None),
independently of the YAML, plus App. C.3 (schedule) and App. C.4 (attack strengths).
"""

from __future__ import annotations

import copy
import math

import pytest
import yaml

from ctbench.config import DEFAULT_HPARAMS, config_hash, load_hparams, load_schema, parse_overrides, resolve
from ctbench.core import eps_token, parse_eps, validate
from ctbench.errors import CTBenchError

COLUMNS = ["pgd", "edac", "ibp", "crown_ibp", "sabr", "taps", "staps", "mtl_ibp"]
_ = None
# row name -> 8 values in COLUMNS order
PAPER = {
    # Table 6: Best hyperparameter for MNIST eps = 0.1.
    "mnist_0.1": {
        "l1": [1e-5, 1e-5, 2e-6, 2e-6, 1e-6, 1e-6, 1e-6, 1e-5],
        "w_rob": [1.0, 1.0, 1.0, 1.0, 0.7, 0.7, 0.7, 0.7],
        "train_eps": [0.2] * 8,
        "eps_shrink": [_, _, _, _, 0.4, _, 0.4, _],
        "classifier_size": [_, _, _, _, _, 3, 1, _],
        "taps_grad_scale": [_, _, _, _, _, 4, 4, _],
        "relu_shrink": [_] * 8,
        "ibp_coef": [_, _, _, _, _, _, _, 0.02],
    },
    # Table 7: MNIST eps = 0.3.
    "mnist_0.3": {
        "l1": [5e-6, 5e-6, 1e-6, 1e-6, 2e-6, 2e-6, 2e-6, 1e-6],
        "w_rob": [1.0] * 8,
        "train_eps": [0.3] * 8,
        "eps_shrink": [_, _, _, _, 0.8, _, 0.8, _],
        "classifier_size": [_, _, _, _, _, 1, 1, _],
        "taps_grad_scale": [_, _, _, _, _, 3, 1, _],
        "relu_shrink": [_] * 8,
        "ibp_coef": [_, _, _, _, _, _, _, 0.5],
    },
    # Table 8: CIFAR-10 eps = 2/255.
    "cifar10_2_255": {
        "l1": [2e-5, 5e-6, 1e-6, 1e-6, 1e-6, 2e-6, 5e-6, 3e-6],
        "w_rob": [1.0, 1.0, 1.0, 1.0, 0.7, 1.0, 1.0, 0.9],
        "train_eps": [2 / 255, 2 / 255, 2 / 255, 2 / 255, 3 / 255, 2 / 255, 3 / 255, 2 / 255],
        "eps_shrink": [_, _, _, _, 0.1, _, 0.1, _],
        "classifier_size": [_, _, _, _, _, 5, 1, _],
        "taps_grad_scale": [_, _, _, _, _, 5, 5, _],
        "relu_shrink": [_, _, _, _, 0.8, _, 0.8, _],
        "ibp_coef": [_, _, _, _, _, _, _, 0.01],
    },
    # Table 9: CIFAR-10 eps = 8/255.
    "cifar10_8_255": {
        "l1": [1e-6, 1e-6, 0, 0, 0, 0, 0, 0],
        "w_rob": [1.0] * 8,
        "train_eps": [8 / 255] * 8,
        "eps_shrink": [_, _, _, _, 0.7, _, 0.9, _],
        "classifier_size": [_, _, _, _, _, 1, 1, _],
        "taps_grad_scale": [_, _, _, _, _, 2, 2, _],
        "relu_shrink": [_] * 8,
        "ibp_coef": [_, _, _, _, _, _, _, 0.5],
    },
    # Table 10: TinyImageNet eps = 1/255. The L1 row has only three cells in the paper text
    # ("5e-5 | 1e-5 | 5e-5", merged cells): read as PGD, EDAC = 5e-5; IBP = 1e-5; the rest 5e-5.
    "tinyimagenet_1_255": {
        "l1": [5e-5, 5e-5, 1e-5, 5e-5, 5e-5, 5e-5, 5e-5, 5e-5],
        "w_rob": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.7],
        "train_eps": [1 / 255] * 8,
        "eps_shrink": [_, _, _, _, 0.4, _, 0.6, _],
        "classifier_size": [_, _, _, _, _, 1, 1, _],
        "taps_grad_scale": [_, _, _, _, _, 8, 4, _],
        "relu_shrink": [_] * 8,
        "ibp_coef": [_, _, _, _, _, _, _, 0.05],
    },
}

# App. C.3 (epochs, LR decay epochs, warm-up length, standard epoch, batch size, IBP-reg weight) and
# App. C.4 (default attack steps).
SCHEDULE = {
    "mnist_0.1": dict(
        dataset="mnist",
        eps=0.1,
        epochs=70,
        lr_milestones=[50, 60],
        eps_start_epoch=0,
        eps_end_epoch=20,
        batch_size=256,
        fast_reg=0.5,
        attack_steps=10,
    ),
    "mnist_0.3": dict(
        dataset="mnist",
        eps=0.3,
        epochs=70,
        lr_milestones=[50, 60],
        eps_start_epoch=0,
        eps_end_epoch=20,
        batch_size=256,
        fast_reg=0.5,
        attack_steps=5,
    ),
    "cifar10_2_255": dict(
        dataset="cifar10",
        eps=2 / 255,
        epochs=160,
        lr_milestones=[120, 140],
        eps_start_epoch=1,
        eps_end_epoch=81,
        batch_size=128,
        fast_reg=0.5,
        attack_steps=8,
    ),
    "cifar10_8_255": dict(
        dataset="cifar10",
        eps=8 / 255,
        epochs=240,
        lr_milestones=[200, 220],
        eps_start_epoch=1,
        eps_end_epoch=121,
        batch_size=128,
        fast_reg=0.5,
        attack_steps=10,
    ),
    "tinyimagenet_1_255": dict(
        dataset="tinyimagenet",
        eps=1 / 255,
        epochs=160,
        lr_milestones=[120, 140],
        eps_start_epoch=1,
        eps_end_epoch=81,
        batch_size=128,
        fast_reg=0.2,
        attack_steps=1,
    ),
}


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)


@pytest.fixture(scope="module")
def hparams():
    return load_hparams()


def test_schema_accepts_the_file(hparams):
    assert set(hparams["settings"]) == set(PAPER)


def test_every_schema_property_has_a_description():
    schema = load_schema()

    def walk(node, path):
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                assert "description" in sub, f"{path}.{name}"
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(schema, "schema")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: d["settings"]["mnist_0.1"]["methods"]["pgd"].__setitem__("l1", -1.0),
            "settings.mnist_0.1.methods.pgd.l1",
        ),
        (
            lambda d: d["settings"]["cifar10_2_255"]["methods"]["sabr"].__setitem__("eps_shrnk", 0.1),
            "eps_shrnk",
        ),
        (lambda d: d["settings"]["mnist_0.3"].__setitem__("epochs", "many"), "settings.mnist_0.3.epochs"),
        (lambda d: d["defaults"].__setitem__("model_selection", "best"), "defaults.model_selection"),
        (lambda d: d["settings"]["mnist_0.1"].pop("eps"), "eps"),
    ],
)
def test_schema_rejects_broken_copy_with_clear_message(tmp_path, mutate, message):
    data = yaml.safe_load(DEFAULT_HPARAMS.read_text())
    mutate(data)
    broken = tmp_path / "hparams.yaml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(CTBenchError) as err:
        load_hparams(broken)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_validate_reports_key_path():
    schema = load_schema()
    data = yaml.safe_load(DEFAULT_HPARAMS.read_text())
    data["settings"]["mnist_0.1"]["methods"]["sabr"]["w_rob"] = 2
    with pytest.raises(CTBenchError, match=r"settings\.mnist_0\.1\.methods\.sabr\.w_rob"):
        validate(data, schema)


@pytest.mark.parametrize("setting", sorted(PAPER))
@pytest.mark.parametrize("method", COLUMNS + ["standard"])
def test_every_cell_resolves(hparams, setting, method):
    cfg = resolve(setting, method, hparams=hparams, seed=0)
    assert cfg["method"] == method and cfg["setting"] == setting
    assert cfg["init"] == ("ibp" if method not in ("pgd", "edac", "standard") else "kaiming_uniform")


@pytest.mark.parametrize("setting", sorted(PAPER))
def test_tables_6_to_10(hparams, setting):
    for row, values in PAPER[setting].items():
        for method, expected in zip(COLUMNS, values, strict=True):
            got = resolve(setting, method, hparams=hparams)[row]
            assert _close(got, expected), f"{setting} {method} {row}: yaml {got} != paper {expected}"


@pytest.mark.parametrize("setting", sorted(SCHEDULE))
def test_schedule_app_c3_c4(hparams, setting):
    for method in COLUMNS + ["standard"]:
        cfg = resolve(setting, method, hparams=hparams)
        for key, expected in SCHEDULE[setting].items():
            if key == "attack_steps" and method == "mtl_ibp":
                # App. C.4: 1 step for MTL-IBP everywhere except CIFAR-10 2/255.
                expected = SCHEDULE[setting]["attack_steps"] if setting == "cifar10_2_255" else 1
            if key == "fast_reg" and method in ("pgd", "edac", "standard"):
                expected = 0.0  # the warm-up regularizer is for certified training
            got = cfg[key]
            assert got == expected or _close(got, expected), f"{setting} {method} {key}: {got} != {expected}"
        # App. C.3: Adam, lr 5e-4, decay 0.2, clipping 10; App. C.4: 3 restarts.
        assert (cfg["optimizer"], cfg["lr"], cfg["lr_decay"], cfg["grad_clip"], cfg["attack_restarts"]) == (
            "adam",
            5e-4,
            0.2,
            10.0,
            3,
        )


def test_mtl_ibp_attack_scale_and_swa(hparams):
    assert resolve("cifar10_2_255", "mtl_ibp", hparams=hparams)["attack_eps_scale"] == 2.0  # App. C.4
    for s in PAPER:
        cfg = resolve(s, "mtl_ibp", hparams=hparams)
        assert cfg["swa_start"] is not None and cfg["model_selection"] == "last"  # §4.1
    tin = resolve("tinyimagenet_1_255", "crown_ibp", hparams=hparams)
    assert tin["grad_accu_batch"] == 64 and tin["swa_start"] == 150
    assert resolve("tinyimagenet_1_255", "taps", hparams=hparams)["grad_accu_batch"] == 32


def test_resolution_order_and_overrides(hparams):
    cfg = resolve(("mnist_mini", "0.1"), "sabr", {"l1": 5e-6, "epochs": 3, "eps_end_epoch": 1, "lr_milestones": [2]},
                  hparams=hparams, seed=1)
    assert cfg["dataset"] == "mnist_mini" and cfg["setting"] == "mnist_0.1"
    assert cfg["l1"] == 5e-6 and cfg["epochs"] == 3 and cfg["eps_shrink"] == 0.4 and cfg["seed"] == 1
    with pytest.raises(CTBenchError, match="unknown hyperparameter"):
        resolve("mnist_0.1", "pgd", {"nope": 1}, hparams=hparams)
    with pytest.raises(CTBenchError, match="config: w_rob"):
        resolve("mnist_0.1", "pgd", {"w_rob": 3}, hparams=hparams)
    with pytest.raises(CTBenchError, match="no hyperparameter setting"):
        resolve(("mnist", "0.2"), "pgd", hparams=hparams)
    with pytest.raises(CTBenchError, match="swa_start requires"):
        resolve("mnist_0.1", "pgd", {"swa_start": 3}, hparams=hparams)


def test_config_hash(hparams):
    a = resolve("mnist_0.1", "pgd", hparams=hparams, seed=0)
    b = copy.deepcopy(a)
    assert config_hash(a) == config_hash(b)
    b["l1"] = 2e-5
    assert config_hash(a) != config_hash(b)
    assert config_hash(a) != config_hash(resolve("mnist_0.1", "pgd", hparams=hparams, seed=1))


@pytest.mark.parametrize(
    "text, value, token",
    [("0.1", 0.1, "0.1"), ("2/255", 2 / 255, "2_255"), ("2_255", 2 / 255, "2_255"), ("0", 0.0, "0")],
)
def test_eps_parsing(text, value, token):
    assert parse_eps(text) == pytest.approx(value, abs=0)
    assert eps_token(text) == token
    assert parse_eps(eps_token(text)) == parse_eps(text)


@pytest.mark.parametrize("bad", ["-0.1", "abc", "1/0", "", True])
def test_eps_parsing_rejects(bad):
    with pytest.raises(CTBenchError):
        parse_eps(bad)


def test_parse_overrides():
    assert parse_overrides(["l1=1e-5", "lr_milestones=[1, 2]", "swa_start=null"]) == {
        "l1": 1e-5,
        "lr_milestones": [1, 2],
        "swa_start": None,
    }
    for bad in ["l1", "=3", "L1=2", "a=[1"]:
        with pytest.raises(CTBenchError, match="malformed --set"):
            parse_overrides([bad])
