"""Model selection on a held-out part of the training set (val_fraction / val_seed): disjoint from the
training samples used, deterministic under its seed, recorded in model.pt and shown in Table 1's notes."""

import json

import pandas as pd
import pytest
import torch

from ctbench.config import resolve
from ctbench.errors import CTBenchError
from ctbench.modelfile import load_model
from ctbench.report import row_note
from ctbench.training import TrainOptions, selection_split, train, validation_split


def test_split_is_disjoint_complete_and_deterministic():
    tr, va = validation_split(1000, 0.1, seed=3)
    assert len(va) == 100 and len(tr) == 900 and not set(tr) & set(va) and sorted(tr + va) == list(range(1000))
    assert validation_split(1000, 0.1, seed=3) == (tr, va)
    assert validation_split(1000, 0.1, seed=4)[1] != va
    with pytest.raises(CTBenchError, match="leaves no training images"):
        validation_split(1, 0.5, seed=0)


def test_training_never_sees_the_held_out_images(tmp_path, monkeypatch):
    """The loader of every epoch draws only from the training part; validation reads exactly the held-out
    part; model.pt's provenance and the summary's note say what selection used."""
    cfg = resolve(("mnist_mini", "0.1"), "ibp", {"epochs": 2, "eps_end_epoch": 1, "lr_milestones": [],
                                                 "model": "cnn_small", "batch_size": 20, "val_fraction": 0.25,
                                                 "val_seed": 7, "attack_steps": 1}, seed=0)
    cfg["dataset"] = "mnist_mini"
    import ctbench.training as tr

    seen = {}
    real_loader = tr._loader

    def spy(ds, batch_size, shuffle, seed, opts):
        key = "train" if shuffle else "eval"
        if isinstance(ds, torch.utils.data.Subset):
            seen.setdefault(key, set()).update(int(i) for i in ds.indices)
        return real_loader(ds, batch_size, shuffle, seed, opts)

    monkeypatch.setattr(tr, "_loader", spy)
    train(cfg, tmp_path, TrainOptions(subset=80, max_steps=2, show_progress=False))
    train_idx, val_idx = validation_split(80, 0.25, 7)
    assert seen["train"] == set(train_idx) and set(val_idx) <= seen["eval"]
    assert not seen["train"] & set(val_idx)
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["provenance"]["selection_split"] == "held-out 25% of the training set (seed 7, 20 images)"
    row = pd.Series({"dataset": "mnist", "eps": "0.1", "model": "cnn7", "epochs": 70, "train_subset": None,
                     "n": 10000, "selection_split": meta["provenance"]["selection_split"]})
    assert row_note(row, None) == ("model selected on held-out 25% of the training set (seed 7, 20 images), "
                                   "trained on the rest")
    assert row_note(row.replace("held-out 25% of the training set (seed 7, 20 images)", "test"), None) == ""


def test_default_is_the_papers_test_split():
    cfg = resolve("mnist_0.1", "ibp")
    assert cfg["val_fraction"] is None and selection_split(cfg) == "test"
    assert json.dumps(selection_split({"val_fraction": 0.1})) == '"held-out 10% of the training set (seed 0)"'


def test_cheaper_per_epoch_evaluation_is_opt_in_recorded_and_noted(tmp_path, monkeypatch):
    """Issue 25: val_every / val_samples validate every k epochs (and the last) on the first n images; the
    skipped epochs have no validation values and are never selected; model.pt and Table 1's note say so."""
    import math

    import ctbench.training as tr

    cfg = resolve(("mnist_mini", "0.1"), "ibp", {"epochs": 3, "eps_start_epoch": 0, "eps_end_epoch": 0,
                                                 "lr_milestones": [], "model": "cnn_small", "batch_size": 20,
                                                 "attack_steps": 1, "val_every": 2, "val_samples": 30}, seed=0)
    cfg["dataset"] = "mnist_mini"
    sizes = []
    real_evaluate = tr.evaluate

    def spy(method, model, loader, eps, device, dtype=torch.float32):
        sizes.append(len(loader.dataset))
        return real_evaluate(method, model, loader, eps, device, dtype)

    monkeypatch.setattr(tr, "evaluate", spy)
    train(cfg, tmp_path, TrainOptions(subset=80, max_steps=2, show_progress=False))
    assert sizes == [30, 30]  # epochs 2 and 3 (the last), 30 images each
    history = pd.read_csv(tmp_path / "train/history.csv")
    assert math.isnan(history.val_nat_acc[0]) and history.val_nat_acc[1:].notna().all()
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["provenance"]["selection_split"] == "test, first 30 images, every 2 epochs"
    assert meta["provenance"]["selected_epoch"] in (2, 3)
    row = pd.Series({"dataset": "mnist", "eps": "0.1", "model": "cnn7", "epochs": 70, "train_subset": None,
                     "n": 10000, "selection_split": meta["provenance"]["selection_split"]})
    assert row_note(row, None) == "model selected on test, first 30 images, every 2 epochs"


def test_the_cheaper_evaluation_keys_leave_existing_fingerprints_alone():
    """Adding val_every / val_samples to the schema re-runs nothing: while null they are not fingerprinted."""
    from ctbench.fingerprint import LATER_KEYS, train_fingerprint

    cfg = resolve("mnist_0.1", "ibp")
    assert all(cfg[k] is None for k in LATER_KEYS)
    before = {k: v for k, v in cfg.items() if k not in LATER_KEYS}  # a config resolved before the keys existed
    assert train_fingerprint(cfg, {}, 1) == train_fingerprint(before, {}, 1)
    assert train_fingerprint(resolve("mnist_0.1", "ibp", {"val_every": 5}), {}, 1) != train_fingerprint(cfg, {}, 1)
    assert selection_split(cfg) == "test"
