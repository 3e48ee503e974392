"""Calibration against onnxruntime: activations on the graph input, fixed-batch exports, shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from hec.calibrate import calibrate, observe
from hec.errors import InputError
from hec.frontend import import_onnx
from hec.frontend.reference import onnxruntime_outputs
from hec.optimize import accuracy, make_he_friendly
from hec.options import CompileOptions

from onnx_builders import ModelBuilder, run_onnxruntime


def _reads_input(seed: int = 1) -> onnx.ModelProto:
    """Relu and MaxPool both read the graph input directly (a dynamic batch axis)."""
    b = ModelBuilder((2, 6, 6), seed=seed)
    relu = b.node("Relu", ["input"])
    pooled = b.node("MaxPool", ["input"], kernel_shape=[2, 2], strides=[2, 2])
    t = b.node("Add", [b.node("MaxPool", [relu], kernel_shape=[2, 2], strides=[2, 2]), pooled])
    t = b.node("Flatten", [t])
    return b.build(b.node("Gemm", [t, b.weight(3, 18)], transB=1))


def _fixed_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """The same model with its batch axis fixed, as torch exports without ``dynamic_axes``."""
    fixed = onnx.ModelProto.FromString(model.SerializeToString())
    for v in (*fixed.graph.input, *fixed.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.checker.check_model(fixed)
    return fixed


def _data(n: int = 300) -> np.ndarray:
    return np.random.default_rng(0).uniform(-3.1, 3.2, (n, 2, 6, 6))


def test_ranges_of_the_graph_input_are_the_data_range_every_time() -> None:
    model = _reads_input()
    graph = import_onnx(model)
    x = _data()
    runs = [calibrate(model, graph, x) for _ in range(3)]
    x32 = x.astype(np.float32)
    assert "input" in runs[0]  # the MaxPool on the input is calibrated from the input itself
    for stats in runs:
        assert stats["input"].low == float(x32.min()) and stats["input"].high == float(x32.max())
        assert stats.keys() == runs[0].keys()
        for name, st in stats.items():
            assert (st.low, st.high) == (runs[0][name].low, runs[0][name].high), name
            np.testing.assert_array_equal(st.samples, runs[0][name].samples)
    # the Relu's input is the graph input too: its range is the data's
    relu_in = [n for n in runs[0] if n != "input"]
    for n in relu_in:
        assert runs[0][n].low > -3.2 and runs[0][n].high < 3.3


def test_observed_onnx_values_match_onnxruntime_per_sample() -> None:
    model = _reads_input()
    graph = import_onnx(model)
    x = _data(20)
    seen = observe(model, graph, x, ["t1"])  # the Relu's output, an ONNX tensor
    np.testing.assert_array_equal(seen["t1"], np.maximum(x.astype(np.float32), 0))


def test_fixed_batch_model_calibrates_like_the_dynamic_one() -> None:
    dynamic = _reads_input()
    fixed = _fixed_batch(dynamic, 1)
    x = _data(258)  # more than one chunk of 256
    ref = calibrate(dynamic, import_onnx(dynamic), x)
    got = calibrate(fixed, import_onnx(fixed), x)
    assert got.keys() == ref.keys()
    for n in ref:
        assert (got[n].low, got[n].high) == (ref[n].low, ref[n].high)


@pytest.mark.parametrize("batch", [1, 4])
def test_reference_outputs_of_a_fixed_batch_model(batch: int) -> None:
    dynamic = _reads_input()
    x = _data(258)  # not a multiple of 4: the last chunk is padded
    out = onnxruntime_outputs(_fixed_batch(dynamic, batch), x)
    assert out.shape == (258, 3)
    np.testing.assert_allclose(out, run_onnxruntime(dynamic, x), rtol=1e-6, atol=1e-6)


def test_fixed_batch_model_converts_and_measures_accuracy() -> None:
    fixed = _fixed_batch(_reads_input())
    graph = import_onnx(fixed)
    x = _data()
    make_he_friendly(fixed, graph, CompileOptions(), x)
    y = run_onnxruntime(_reads_input(), x).argmax(1)  # labels the original model gets right
    acc = accuracy(fixed, graph, x, y)
    assert acc["original"] == 1.0 and acc["samples"] == 300
    assert 0.5 < acc["converted"] <= 1.0


@pytest.mark.parametrize("shape", [(300, 72), (300, 2, 5, 5), (300, 1, 6, 6), (2, 6, 6)], ids=str)
def test_wrong_shape_is_an_input_error_naming_the_expected_shape(shape) -> None:
    model = _reads_input()
    graph = import_onnx(model)
    x = np.zeros(shape)
    with pytest.raises(InputError, match=r"the model takes \[N, 2, 6, 6\]"):
        calibrate(model, graph, x)
    with pytest.raises(InputError, match=r"--calib.*\[N, 2, 6, 6\]"):
        make_he_friendly(model, import_onnx(model), CompileOptions(), x)
