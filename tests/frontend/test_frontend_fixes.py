"""Regression tests of frontend defects: Dropout in training mode, constant operands where the
encrypted one belongs, Flatten's negative axes, every unsupported node in one error."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hec
from hec.errors import ShapeError, UnsupportedOpError
from hec.frontend import import_onnx
from hec.ir import interpret

from conftest import assert_matches_reference
from onnx_builders import ModelBuilder, run_onnxruntime


def _x(*shape: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(5).uniform(-1, 1, (batch, *shape)).astype(np.float32)


def _dropout(training: bool | None, ratio: float = 0.3) -> ModelBuilder:
    b = ModelBuilder((6,), opset=13)
    ins = ["input", b.const(np.array(ratio))]
    if training is not None:
        ins.append(b.const(np.array(training), np.bool_))
    b.out = b.node("Gemm", [b.node("Dropout", ins), b.weight(6, 3)])
    return b


def test_dropout_in_training_mode_is_refused() -> None:
    b = _dropout(True)
    with pytest.raises(UnsupportedOpError, match="Dropout_1.*training_mode=True") as err:
        import_onnx(b.build(b.out))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("training", "ratio"), [(False, 0.3), (None, 0.3), (True, 0.0)])
def test_dropout_at_inference_is_identity(training: bool | None, ratio: float) -> None:
    b = _dropout(training, ratio)
    model, x = b.build(b.out), _x(6)
    assert_matches_reference(interpret(import_onnx(model), x)[0], run_onnxruntime(model, x))


def _encrypted_operand(op: str) -> ModelBuilder:
    b = ModelBuilder((1, 4, 4))
    h = b.node("Conv", ["input", b.weight(1, 1, 3, 3)])  # [1, 1, 2, 2]: data-derived
    if op == "Pow":
        b.out = b.node("Pow", [b.weight(1, 1, 2, 2), h])
    elif op == "Conv-weight":
        b.out = b.node("Conv", [b.weight(1, 1, 4, 4), h])
    elif op == "Conv-data":
        b.out = b.node("Conv", [b.weight(1, 1, 4, 4), b.weight(1, 1, 3, 3)])
        b.nodes[-1].input[1] = "input"
        b.nodes[-1].input[0] = b.const(np.ones((1, 1, 4, 4)))
    elif op == "MatMul":
        b.out = b.node("MatMul", [b.weight(2, 2), h])
    elif op == "Gemm":
        b.out = b.node("Gemm", [b.weight(1, 4), b.node("Flatten", [h])], transB=1)
    return b


@pytest.mark.parametrize(
    ("op", "match"),
    [
        ("Pow", "Pow_2.*input 0 \\(base\\) is a constant"),
        ("Conv-weight", "Conv_2.*input 0 \\(data\\) is a constant"),
        ("Conv-data", "Conv_2.*input 0 \\(data\\) is a constant"),
        ("Gemm", "Gemm_3.*constant B"),
    ],
)
def test_constant_where_the_encrypted_operand_belongs(op: str, match: str) -> None:
    b = _encrypted_operand(op)
    with pytest.raises(UnsupportedOpError, match=match) as err:
        import_onnx(b.build(b.out))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("axis", [1, -3])
def test_flatten_axis_keeping_the_batch_apart(axis: int) -> None:
    b = ModelBuilder((2, 3, 3))
    h = b.node("Flatten", ["input"], axis=axis)
    model, x = b.build(b.node("Gemm", [h, b.weight(18, 4)])), _x(2, 3, 3)
    assert_matches_reference(interpret(import_onnx(model), x)[0], run_onnxruntime(model, x))


def test_flatten_axis_2_needs_a_fixed_batch() -> None:
    b = ModelBuilder((2, 3, 3))
    h = b.node("Flatten", ["input"], axis=-2)
    with pytest.raises(UnsupportedOpError, match="Flatten_1.*axis=-2.*fixed at 1"):
        import_onnx(b.build(b.node("MatMul", [h, b.weight(9, 4)])))


@pytest.mark.parametrize("axis", [0, 2, -1])
def test_flatten_any_axis_with_a_fixed_batch(axis: int) -> None:
    b = ModelBuilder((2, 3, 3))
    b.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3, 3])
    h = b.node("Flatten", ["input"], axis=axis)
    width = {0: 18, 2: 9, -1: 3}[axis]
    h = b.node("MatMul", [h, b.weight(width, 4)])
    model, x = (
        b.build(b.node("Reshape", [h, b.const(np.array([1, -1]), np.int64)])),
        _x(2, 3, 3, batch=1),
    )
    assert_matches_reference(interpret(import_onnx(model), x)[0], run_onnxruntime(model, x))


def test_an_output_without_the_batch_axis_is_refused() -> None:
    b = ModelBuilder((2, 3, 3))
    b.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3, 3])
    h = b.node("Flatten", ["input"], axis=2)
    with pytest.raises(ShapeError, match="output 't1' \\(shape \\[2, 9\\]\\) has lost the batch"):
        import_onnx(b.build(h))


def test_every_unsupported_node_is_listed() -> None:
    b = ModelBuilder((2, 4, 4))
    h = b.node("LRN", ["input"], size=3)
    h = b.node("Conv", [h, b.weight(2, 2, 3, 3)], pads=[1, 1, 1, 1])
    h = b.node("Hardmax", [h], axis=1)
    h = b.node("Conv", [h, b.weight(2, 2, 3, 3)])
    h = b.node("Round", [b.node("Flatten", [h])])
    with pytest.raises(UnsupportedOpError) as err:
        import_onnx(b.build(h))
    lines = str(err.value).splitlines()
    assert lines[0].startswith("3 nodes cannot be compiled")
    assert [line.split("'")[1] for line in lines[1:]] == ["LRN_1", "Hardmax_3", "Round_6"]
    assert err.value.errors[1].op_type == "Hardmax"


def test_one_unsupported_node_keeps_its_one_line() -> None:
    b = ModelBuilder((2, 4, 4))
    h = b.node("LRN", ["input"], size=3)
    with pytest.raises(UnsupportedOpError) as err:
        import_onnx(b.build(b.node("Conv", [h, b.weight(2, 2, 3, 3)])))
    assert str(err.value).startswith("node 'LRN_1': op LRN is not supported")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(3, 4, 5), (4, 5)])
def test_constant_times_encrypted_matmul(shape: tuple[int, ...], tmp_path) -> None:
    """``MatMul(W, x)``: a left multiplication, linear in ``x`` (two transposes and a matmul)."""
    b = ModelBuilder(shape)
    h = b.node("MatMul", [b.weight(2, 4), "input"])
    model, x = b.build(b.node("Mul", [h, h])), _x(*shape)
    ref = run_onnxruntime(model, x)
    assert_matches_reference(interpret(import_onnx(model), x)[0], ref)
    assert_matches_reference(hec.simulate(hec.compile(model, tmp_path / "out"), x), ref)


def test_constant_times_a_vector_is_refused() -> None:
    b = ModelBuilder((4,))
    with pytest.raises(UnsupportedOpError, match="MatMul_2.*rank 2 times an encrypted"):
        import_onnx(b.build(b.node("MatMul", [b.weight(2, 1), b.node("Neg", ["input"])])))
