"""The client tail: a model's last steps after the logits run on the client, exactly."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from tests.onnx_builders import ModelBuilder

import hec
from hec.errors import ArtifactError, ModelError
from hec.frontend import load_model
from hec.frontend.client_tail import split_tail, with_batch_of
from hec.runtime.tail import apply_tail


def _ort_all(model: onnx.ModelProto, x: np.ndarray) -> dict:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


def _classifier(tail: str, classes: int = 3, seed: int = 0) -> tuple[onnx.ModelProto, str]:
    """Gemm · square · Gemm → ``tail``; returns the model and the logits' name."""
    b = ModelBuilder((6,), seed=seed)
    h = b.node("Gemm", ["input", b.weight(6, 5), b.weight(5)])
    h = b.node("Mul", [h, h])
    logits = b.node("Gemm", [h, b.weight(5, classes), b.weight(classes)])
    attrs = {"keepdims": 0, "axis": 1} if tail == "ArgMax" else {}
    return b.build(b.node(tail, [logits], **attrs)), logits


def _x(n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 6))


@pytest.mark.parametrize(
    ("tail", "kind", "classes"),
    [
        ("Softmax", "probability", 3),
        ("LogSoftmax", "log_probability", 3),
        ("ArgMax", "labels", 3),
        ("Sigmoid", "probability", 1),
    ],
)
def test_the_tail_runs_on_the_client_and_matches_onnxruntime(
    tail: str, kind: str, classes: int, tmp_path
) -> None:
    model, logits = _classifier(tail, classes)
    art = hec.compile(model, tmp_path / "art")
    assert art.client_tail == [tail] and art.report.client_tail == [tail]
    assert art.output_kind == kind
    assert (tmp_path / "art" / "tail.onnx").is_file()
    x = _x()
    # the program stops at the logits: it computes what the model computes before its tail
    head = with_batch_of(split_tail(load_model(model)).head, model)
    np.testing.assert_allclose(hec.simulate(art, x), _ort_all(head, x)[logits], atol=1e-5)
    assert art.output_shape == (classes,)
    # the client's outputs are the model's
    want = _ort_all(model, x)
    got = apply_tail(art, hec.simulate(art, x))
    assert list(got) == list(want)
    (name,) = want
    if kind == "labels":
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])
    else:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_a_hidden_nonlinearity_stays_on_the_server() -> None:
    b = ModelBuilder((6,))
    h = b.node("Sigmoid", [b.node("Gemm", ["input", b.weight(6, 4)])])
    split = split_tail(load_model(b.build(b.node("Gemm", [h, b.weight(4, 2)]))))
    assert split.tail is None and split.ops == []
    assert split.outputs[0]["kind"] == "logits"


def test_plumbing_before_the_final_step_stays_on_the_server() -> None:
    b = ModelBuilder((2, 3))
    flat = b.node("Flatten", [b.node("Mul", ["input", b.const(np.full((2, 3), 2.0))])])
    split = split_tail(load_model(b.build(b.node("Softmax", [flat]))))
    assert split.ops == ["Softmax"] and split.logits == flat
    assert [n.op_type for n in split.head.graph.node] == ["Mul", "Flatten"]


def _with_outputs(model: onnx.ModelProto, *names: str) -> onnx.ModelProto:
    """``model`` with more outputs, each ``[batch, 3]``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for name in names:
        info = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 3])
        model.graph.output.append(info)
    return model


def test_logits_that_are_an_output_too_pass_through_the_tail(tmp_path) -> None:
    model, logits = _classifier("Softmax")
    model = _with_outputs(model, logits)
    art = hec.compile(model, tmp_path / "art")
    x = _x()
    got, want = apply_tail(art, hec.simulate(art, x)), _ort_all(model, x)
    assert list(got) == list(want) == [model.graph.output[0].name, logits]
    assert art.output_kinds[logits] == "logits"
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_a_tail_reading_two_server_tensors_is_refused() -> None:
    b = ModelBuilder((6,))
    a = b.node("Gemm", ["input", b.weight(6, 3)])
    c = b.node("Gemm", ["input", b.weight(6, 3)])
    sa, sc = b.node("Softmax", [a]), b.node("Softmax", [c])
    model = _with_outputs(b.build(sa), sc)
    with pytest.raises(ModelError, match=r"read 2 tensors computed from the input"):
        split_tail(load_model(model))


def test_a_modified_tail_is_refused(tmp_path) -> None:
    model, _ = _classifier("Softmax")
    hec.compile(model, tmp_path / "art")
    tail = tmp_path / "art" / "tail.onnx"
    tail.write_bytes(tail.read_bytes().replace(b"Softmax", b"Sigmoid"))
    with pytest.raises(ArtifactError, match="tail.onnx changed"):
        hec.load_artifact(tmp_path / "art")


def test_a_model_without_tail_returns_its_output_under_its_name(tmp_path) -> None:
    b = ModelBuilder((6,))
    out = b.node("Gemm", ["input", b.weight(6, 2)])
    art = hec.compile(b.build(out), tmp_path / "art")
    assert art.tail is None and art.client_tail == [] and art.output_kind == "logits"
    x = _x(4)
    logits = hec.simulate(art, x)
    got = apply_tail(art, logits)
    assert list(got) == [out]
    np.testing.assert_array_equal(got[out], logits)


@pytest.mark.slow
def test_decrypting_returns_the_models_outputs(tmp_path) -> None:
    """The deployment path (encrypt, evaluate, decrypt from bytes): the client's outputs."""
    from hec.runtime import Client, Server

    model, _ = _classifier("Sigmoid", classes=1)
    art = hec.compile(model, tmp_path / "art")
    x = _x(1)
    Client(art).save_keys(tmp_path / "keys")
    client = Client.from_keys(art, tmp_path / "keys", secret=True)
    server = Server.from_eval_keys(art, tmp_path / "keys" / "public")
    dec = client.decrypt_bytes(server.evaluate_bytes(client.encrypt_to_bytes(x)))
    (name,) = dec.outputs
    assert art.output_kinds[name] == "probability"
    np.testing.assert_allclose(dec.outputs[name], _ort_all(model, x)[name], atol=1e-3)
    np.testing.assert_allclose(dec.values, hec.simulate(art, x), atol=1e-3)


def _linear_classifier(targets: int, labels: list[int], post: str, multi: int):
    rng = np.random.default_rng(targets + len(post) + multi)
    w, b = rng.normal(size=(targets, 5)), rng.normal(size=targets)
    node = helper.make_node(
        "LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
        coefficients=w.ravel().tolist(), intercepts=b.tolist(), post_transform=post,
        classlabels_ints=labels, multi_class=multi,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "lc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", len(labels)]),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=9)


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize(("targets", "labels"), [(1, [0, 1]), (1, [3, 7]), (3, [0, 1, 2])])
@pytest.mark.parametrize("multi", [0, 1])
def test_a_linear_classifier_splits_into_scores_and_an_identity_classifier(
    post: str, targets: int, labels: list[int], multi: int
) -> None:
    model = _linear_classifier(targets, labels, post, multi)
    split = split_tail(load_model(model))
    assert split.ops == ["LinearClassifier"]
    assert [n.op_type for n in split.head.graph.node] == ["MatMul", "Add"]
    x = np.random.default_rng(2).normal(size=(32, 5))
    scores = _ort_all(with_batch_of(split.head, model), x)[split.logits]
    got, want = _ort_all(split.tail, scores), _ort_all(model, x)
    np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)


@pytest.mark.parametrize("multi", [0, 1])
def test_a_binary_classifiers_raw_scores_convert_as_onnxruntime_computes_them(multi) -> None:
    """``post_transform`` NONE with one coefficient row: onnxruntime returns ``[1 - s, s]``."""
    from hec.frontend import build_graph
    from hec.ir import interpret

    model = _linear_classifier(1, [0, 1], "NONE", multi)
    proto = load_model(model)
    proto.graph.node[0].output[0] = ""  # the label unused: the scores alone on the server
    del proto.graph.output[0]
    x = np.random.default_rng(3).normal(size=(8, 5))
    got = interpret(build_graph(proto), x)[0]
    np.testing.assert_allclose(got, _ort_all(model, x)["scores"], atol=1e-5)
