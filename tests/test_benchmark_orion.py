"""The Orion peer (benchmarks/peers/orion_adapter.py) and its model, examples/orion_lenet5_mnist.

Orion itself needs CPython 3.11 (``.venv-orion``); what runs here is what the adapter does before
it imports Orion: reading Orion's LeNet weights out of ``model.onnx`` by ``state_dict`` key, and
refusing other models. The example's plain torch network (``train.py``) has Orion's attribute
names, so its ``state_dict`` stands in for Orion's; loaded with the ONNX weights it must give
onnxruntime's logits, i.e. the batch norms exported unfused are the trained ones.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from conftest import EXAMPLE, REPO, assert_matches_reference

sys.path.insert(0, str(REPO / "benchmarks" / "peers"))
sys.path.insert(0, str(REPO / "benchmarks"))

import orion_adapter  # noqa: E402
import peers  # noqa: E402
from common import CannotExpress, load_model, load_split  # noqa: E402

from hec.frontend.reference import onnxruntime_outputs  # noqa: E402

ORION_EXAMPLE = REPO / "examples" / "orion_lenet5_mnist"
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def orion_model():
    """The example's model.onnx, trained on first use (not kept in the repository: 6.7 MB)."""
    return peers.ensure_model(ORION_EXAMPLE)


def example_network():
    spec = importlib.util.spec_from_file_location("orion_lenet_train", ORION_EXAMPLE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OrionLeNet()


def test_orion_weights_from_onnx_give_onnxruntime_logits() -> None:
    net = example_network()
    weights = orion_adapter.lenet_weights(load_model(ORION_EXAMPLE), net.state_dict())
    # every parameter and running statistic, none left at its initial value
    assert set(weights) == {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    assert not np.allclose(weights["bn3.running_var"], 1.0)
    net.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in weights.items()})
    net.eval()
    x, y = load_split(ORION_EXAMPLE)
    x = x[:50]
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    assert_matches_reference(out, onnxruntime_outputs(ORION_EXAMPLE / "model.onnx", x), rel=1e-5)
    assert (out.argmax(1) == y[:50]).mean() >= 0.9


def test_orion_adapter_refuses_other_models() -> None:
    with pytest.raises(CannotExpress, match="orion.models.LeNet only"):
        orion_adapter.lenet_weights(load_model(EXAMPLE), example_network().state_dict())


def test_orion_parameters_are_within_the_128_bit_bound() -> None:
    cfg = orion_adapter.config(threads=1)["ckks_params"]
    assert cfg["LogN"] == 14 and cfg["RingType"] == "ConjugateInvariant"
    assert cfg["H"] == 1 << cfg["LogN"]  # a dense secret: the standard's table assumes one
    assert sum(cfg["LogQ"]) + sum(cfg["LogP"]) <= orion_adapter.MAX_LOGQP_128


def test_orion_runs_with_its_own_interpreter(tmp_path, monkeypatch) -> None:
    """``$HEC_ORION_PYTHON`` names Orion's interpreter, and only Orion's."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("HEC_ORION_PYTHON", str(wrapper))
    monkeypatch.delenv("HEC_PEERS_PYTHON", raising=False)
    assert peers.peer_python("json", *peers.OWN_PYTHON["Orion"]) == str(wrapper)
    assert peers.peer_python("json") != str(wrapper)
