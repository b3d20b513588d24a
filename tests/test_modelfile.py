"""model.pt: round trip with weights_only=True, and clear errors for bad files."""

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
    with pytest.raises(CTBenchError, match="cannot read"):
        load_model(tmp_path / "m.pt")


def test_wrong_architecture(tmp_path):
    save_model(tmp_path / "m.pt", create_model("cnn_small", "mnist"), model_name="cnn5", dataset="mnist")
    with pytest.raises(CTBenchError, match="do not fit cnn5"):
        load_model(tmp_path / "m.pt")
