"""model.pt: round trip with weights_only=True, and clear errors for bad files."""

import numpy as np
import pytest
import torch

from ctbench.errors import CTBenchError
from ctbench.modelfile import load_model, save_model
from ctbench.models import create_model


def test_round_trip(tmp_path):
    model = create_model("cnn_small", "mnist", init="ibp", seed=3)
    model.train()
    model(torch.rand(8, 1, 28, 28))  # move the BN running statistics away from their init
    save_model(tmp_path / "model.pt", model, model_name="cnn_small", dataset="mnist", config={"eps": 0.1}, seed=3)
    loaded, meta = load_model(tmp_path / "model.pt")
    assert not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert meta["config"] == {"eps": 0.1} and meta["provenance"]["seed"] == 3
    assert meta["provenance"]["torch"] == torch.__version__
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"], "no temporary files left behind"


@pytest.mark.parametrize("content", [b"", b"not a zip", None])
def test_bad_files(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"weights": torch.zeros(1)}, path)  # a torch file, but not ours
    else:
        path.write_bytes(content)
    with pytest.raises(CTBenchError, match="model.pt"):
        load_model(path)
    with pytest.raises(CTBenchError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_truncated_file(tmp_path):
    model = create_model("cnn_small", "mnist")
    save_model(tmp_path / "m.pt", model, model_name="cnn_small", dataset="mnist")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CTBenchError, match="not a ctbench model file"):
        load_model(tmp_path / "m.pt")


class _Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind", ["random", "pickle"])
@pytest.mark.parametrize("command", ["certify", "attack", "select"])
def test_foreign_files_are_named_as_such_by_every_command(tmp_path, capsys, kind, command):
    """Random bytes or an arbitrary pickle given as a model / candidates file: one line saying it is not a
    ctbench file, exit 2 — and never torch's advice to load it with weights_only=False."""
    path = tmp_path / "model.pt"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        torch.save({"state_dict": _Payload()}, path)
    args = {"certify": ["certify", "--model", str(path), "--eps", "0.1", "--out", str(tmp_path / "c.h5")],
            "attack": ["attack", "--model", str(path), "--eps", "0.1", "--out", str(tmp_path / "a.h5")],
            "select": ["select", str(path), "--out", str(tmp_path / "m.pt")]}[command]
    from ctbench.cli import main

    rc = main(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "is not a ctbench" in err and "weights_only" not in err.lower() and "this must never run" not in captured.out
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "a.h5").exists() and not (tmp_path / "m.pt").exists()


def test_wrong_architecture(tmp_path):
    save_model(tmp_path / "m.pt", create_model("cnn_small", "mnist"), model_name="cnn5", dataset="mnist")
    with pytest.raises(CTBenchError, match="do not fit cnn5"):
        load_model(tmp_path / "m.pt")
