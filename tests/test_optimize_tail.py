"""hec optimize on a model whose last step runs on the client: the tail survives the conversion."""

from __future__ import annotations

import numpy as np
import onnx

from hec.optimize import optimize

from onnx_builders import ModelBuilder, run_onnxruntime


def _softmax_classifier() -> onnx.ModelProto:
    b = ModelBuilder((6,), seed=3)
    hidden = b.node("Relu", [b.node("Gemm", ["input", b.weight(6, 8), b.weight(8)])])
    return b.build(b.node("Softmax", [b.node("Gemm", [hidden, b.weight(8, 3)])], axis=-1))


def test_optimize_keeps_the_client_tail(tmp_path) -> None:
    model = _softmax_classifier()
    x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    labels = run_onnxruntime(model, x).argmax(axis=1)
    path, out = tmp_path / "model.onnx", tmp_path / "friendly.onnx"
    onnx.save(model, str(path))  # as a user passes it: a file
    report = optimize(path, out, x, labels)
    friendly = onnx.load(str(out))
    assert friendly.graph.node[-1].op_type == "Softmax"  # exact, on the client, not approximated
    assert not any(n.op_type == "Relu" for n in friendly.graph.node)  # replaced by a polynomial
    probs = run_onnxruntime(friendly, x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(probs.argmax(axis=1) == labels) >= 0.9
    assert report["accuracy"]["converted"] >= 0.9
