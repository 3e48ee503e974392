"""Bad models get a HecError naming the node or file and what to do."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from hec.errors import ModelError, ShapeError, UnsupportedOpError
from hec.frontend import import_onnx
from hec.ir import interpret

from onnx_builders import ModelBuilder, run_onnxruntime


def test_unsupported_op_names_node_and_type() -> None:
    b = ModelBuilder((1, 4, 4))
    h = b.node("Conv", ["input", b.weight(2, 1, 3, 3)])
    model = b.build(b.node("LRN", [h], size=3))
    with pytest.raises(UnsupportedOpError) as err:
        import_onnx(model)
    msg = str(err.value)
    assert "LRN_2" in msg and "op LRN" in msg


def test_encrypted_weights_are_unsupported() -> None:
    b = ModelBuilder((4,))
    h = b.node("Gemm", ["input", b.weight(4, 4)])
    with pytest.raises(UnsupportedOpError, match="MatMul_2.*constant"):
        import_onnx(b.build(b.node("MatMul", [b.weight(3, 1), h])))


def test_grouped_conv_with_wrong_weight_is_rejected() -> None:
    b = ModelBuilder((2, 4, 4))
    model = b.build(b.node("Conv", ["input", b.weight(3, 1, 3, 3)], group=2))
    with pytest.raises(ModelError, match="Conv_1"):
        import_onnx(model)


def test_reshape_across_batch_is_rejected() -> None:
    b = ModelBuilder((2, 3))
    h = b.node("Reshape", ["input", b.const(np.array([2, 3]), np.int64)])
    with pytest.raises(UnsupportedOpError, match="batch axis"):
        import_onnx(b.build(h))


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        import_onnx(tmp_path / "nope.onnx")


def test_truncated_file(tmp_path) -> None:
    b = ModelBuilder((4,))
    data = b.build(b.node("Gemm", ["input", b.weight(4, 2)])).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.onnx"):
        import_onnx(path)


def test_opset_too_new_is_refused() -> None:
    b = ModelBuilder((4,), opset=24)
    with pytest.raises(ModelError, match="opset 24"):
        import_onnx(b.build(b.node("Gemm", ["input", b.weight(4, 2)])))


def test_older_opset_is_upgraded() -> None:
    """skl2onnx writes the lowest opset its ops need (9 for a LogisticRegression with ZipMap):
    ONNX's version converter brings it to 13, the same function."""
    b = ModelBuilder((4,), opset=11)
    model = b.build(b.node("Gemm", ["input", b.weight(4, 2), b.weight(2)]))
    graph = import_onnx(model)
    x = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_allclose(interpret(graph, x)[0], run_onnxruntime(model, x), rtol=1e-5)


def test_symbolic_sample_axis() -> None:
    b = ModelBuilder((4,))
    b.input = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["n", "k"])
    with pytest.raises(ShapeError, match="symbolic"):
        import_onnx(b.build(b.node("Gemm", ["input", b.weight(4, 2)])))


def test_missing_external_data(tmp_path) -> None:
    b = ModelBuilder((4,))
    model = b.build(b.node("Gemm", ["input", b.weight(4, 2)]))
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="m.data", size_threshold=0
    )
    (tmp_path / "m.data").unlink()
    with pytest.raises(ModelError, match="m.data.*missing"):
        import_onnx(path)
