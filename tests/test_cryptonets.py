"""The bundled CryptoNets-style digits model, end to end (the issue's acceptance test)."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.frontend.reference import onnxruntime_outputs
from hec.runtime import Client, Server

from conftest import EXAMPLE, assert_matches_reference

N_ENCRYPTED = 50


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return hec.compile(EXAMPLE / "model.onnx", tmp_path_factory.mktemp("cn") / "out")


@pytest.fixture(scope="module")
def test_split():
    data = np.load(EXAMPLE / "test.npz")
    return data["x"], data["y"]


def test_simulator_matches_onnxruntime_on_the_whole_test_split(artifact, test_split) -> None:
    x, y = test_split
    ref = onnxruntime_outputs(EXAMPLE / "model.onnx", x)
    logits = hec.simulate(artifact, x)
    assert_matches_reference(logits, ref, rel=1e-6)
    assert (logits.argmax(1) == ref.argmax(1)).all()
    assert (logits.argmax(1) == y).mean() > 0.9  # the model is a real classifier


def test_dynamo_export_compiles_to_the_same_program(artifact, test_split, tmp_path) -> None:
    other = hec.compile(EXAMPLE / "model_dynamo.onnx", tmp_path / "dyn")
    assert other.report.totals == artifact.report.totals
    x = test_split[0][:20]
    np.testing.assert_allclose(hec.simulate(other, x), hec.simulate(artifact, x), atol=1e-9)


@pytest.mark.slow
def test_encrypted_inference_on_50_test_images(artifact, test_split) -> None:
    x = test_split[0][:N_ENCRYPTED]
    ref = onnxruntime_outputs(EXAMPLE / "model.onnx", x)
    client = Client(artifact)
    server = Server(artifact, client.context)
    for i in range(N_ENCRYPTED):
        out = client.decrypt(server.evaluate(client.encrypt(x[i])))
        np.testing.assert_allclose(out.values, ref[i], atol=1e-2, rtol=0, err_msg=f"image {i}")
        assert out.values.argmax() == ref[i].argmax(), f"image {i}"
