"""Hostile models: the compiler answers every one with a ``HecError`` (one line in the CLI).

Hypothesis mutates serialized models (truncation, byte flips, splices) and their structure
(absurd input shapes, attributes and initializer dimensions, huge initializers). Compiling a
mutant may succeed (a flipped weight is still a model) or raise a ``HecError``; any other
exception, a crash or a runaway allocation fails the test.
"""

from __future__ import annotations

import os

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import hec
from hec.errors import HecError

from cli_helpers import assert_one_line_error
from cli_helpers import hec as hec_cli
from conftest import EXAMPLE
from op_cases import CASES

SEED_CASES = (
    "conv_strided_asymmetric",
    "gemm_trans_b",
    "avgpool_pads",
    "pad_modes",
    "reshape_flatten",
    "cryptonets_like",
)
SEEDS = [CASES[name]()[0] for name in SEED_CASES] + [onnx.load(str(EXAMPLE / "model.onnx"))]
SEED_BYTES = [m.SerializeToString() for m in SEEDS]
# Small and fixed for CI; HEC_FUZZ_EXAMPLES=600 explores further with fresh random examples.
_EXAMPLES = os.environ.get("HEC_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXAMPLES or 60),
    deadline=None,
    derandomize=_EXAMPLES is None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ABSURD = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**31 - 1, 2**31, 2**40, 2**62, -(2**40), 10**9, 65537, 100000]),
)


def compile_or_refuse(model, out) -> None:
    """Compile; a ``HecError`` is the accepted way to refuse."""
    try:
        hec.compile(model, out)
    except HecError as exc:
        first, *more = str(exc).strip().splitlines() or [""]
        assert first, str(exc)
        if more:  # several failed nodes: a summary line, then one line per node
            assert first.endswith("before export") and len(more) >= 2, str(exc)
            assert all(line.startswith("  ") and "\n" not in line for line in more), str(exc)


@st.composite
def mutated_bytes(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_BYTES)))
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "garbage"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 12))):
            # Mostly the structure at the front (names, dims, attributes), sometimes weights.
            hi = len(data) - 1 if draw(st.booleans()) else min(len(data) - 1, 400)
            data[draw(st.integers(0, hi))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "splice":
        i = draw(st.integers(0, len(data)))
        return bytes(data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:])
    return draw(st.binary(min_size=0, max_size=512))


@FUZZ
@given(mutated_bytes())
def test_mutated_model_files(tmp_path, data: bytes) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    compile_or_refuse(path, tmp_path / "out")


@st.composite
def mutated_structure(draw) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(draw(st.sampled_from(SEEDS)))
    g = model.graph
    kinds = ["input_dim", "attribute", "opset", "node"]
    kinds += ["init_dims", "huge_init"] if g.initializer else []
    kind = draw(st.sampled_from(kinds))
    if kind == "input_dim":
        dims = g.input[0].type.tensor_type.shape.dim
        d = dims[draw(st.integers(0, len(dims) - 1))]
        d.Clear()
        d.dim_value = draw(ABSURD)
    elif kind == "attribute":
        attrs = [a for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.INTS]
        attrs += [a for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.INT]
        if attrs:
            a = draw(st.sampled_from(attrs))
            if a.type == onnx.AttributeProto.INTS:
                a.ints[draw(st.integers(0, len(a.ints) - 1))] = draw(ABSURD)
            else:
                a.i = draw(ABSURD)
    elif kind == "init_dims":
        init = draw(st.sampled_from(list(g.initializer)))
        if init.dims:
            init.dims[draw(st.integers(0, len(init.dims) - 1))] = draw(ABSURD)
    elif kind == "huge_init":
        # A weight declaring billions of elements (no data), or a real 64 MB one.
        init = draw(st.sampled_from(list(g.initializer)))
        if draw(st.booleans()):
            init.ClearField("raw_data")
            del init.float_data[:]
            init.dims[:] = [2**20, 2**20]
        else:
            big = helper.make_tensor(
                init.name, TensorProto.FLOAT, [1 << 24], vals=bytes(4 << 24), raw=True
            )
            init.CopyFrom(big)
    elif kind == "node":
        node = g.node[draw(st.integers(0, len(g.node) - 1))]
        what = draw(st.sampled_from(["op_type", "inputs", "drop", "auto_pad"]))
        if what == "op_type":
            node.op_type = draw(
                st.sampled_from(
                    [
                        "Conv",
                        "Gemm",
                        "MatMul",
                        "Add",
                        "Mul",
                        "Pad",
                        "Reshape",
                        "AveragePool",
                        "Flatten",
                        "Foo",
                    ]
                )
            )
        elif what == "inputs" and node.input:
            names = [i.name for i in g.initializer] + [n.output[0] for n in g.node] + ["", "?"]
            node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
        elif what == "drop":
            g.node.remove(node)
        else:
            node.attribute.append(
                helper.make_attribute(
                    "auto_pad",
                    draw(st.sampled_from(["SAME_UPPER", "SAME_LOWER", "VALID", "BOGUS"])),
                )
            )
    else:
        model.opset_import[0].version = draw(st.sampled_from([1, 12, 22, 99, 2**31 - 1]))
    return model


@FUZZ
@given(mutated_structure())
def test_mutated_model_structure(tmp_path, model: onnx.ModelProto) -> None:
    compile_or_refuse(model, tmp_path / "out")


def test_absurd_input_shape_is_refused_quickly(tmp_path) -> None:
    """A sample of 2^20 elements cannot fit any ciphertext: refused before any matrix exists."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1 << 20])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1 << 20])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "g", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(HecError, match="slots"):
        hec.compile(model, tmp_path / "out")


def test_cli_gives_one_line_for_hostile_models(tmp_path) -> None:
    data = SEED_BYTES[-1]
    cases = {
        "truncated.onnx": data[: len(data) // 3],
        "garbage.onnx": bytes(range(256)) * 4,
        "empty.onnx": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        proc = hec_cli("compile", str(tmp_path / name), "-o", str(tmp_path / "out"))
        assert_one_line_error(proc, name)
