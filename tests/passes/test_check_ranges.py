"""check-ranges: values bounded from the calibrated ranges; a program that could overflow the
CKKS modulus is refused in one line naming the node, ordinary models pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import hec
from hec.calibrate import load_dataset
from hec.frontend import import_onnx
from hec.ir import interpret
from hec.optimize import make_he_friendly
from hec.passes import PassManager
from hec.passes.check_ranges import CheckRanges, RangeOverflow, value_bounds

from conftest import REPO, assert_matches_reference
from onnx_builders import ModelBuilder, run_onnxruntime
from op_cases import CASES

RNG = np.random.default_rng(11)


def _model(gain: float, activation: str = "Relu", last_gain: float = 1.0):
    m = ModelBuilder((8,), seed=2)
    h = m.node("Gemm", ["input", m.weight(8, 6)])
    h = m.node(activation, [h])
    h = m.node("Mul", [h, m.const(np.array(gain))])
    return m.build(m.node("Gemm", [h, m.const(last_gain * m.rng.normal(0, 0.5, (6, 3)))]))


@pytest.mark.parametrize("degree", [2, 5])
@pytest.mark.parametrize(
    "gain, last_gain, node",
    [(1e9, 1.0, "Relu_2+Mul_3"), (1.0, 1e7, "Gemm_4")],
    ids=["in-the-polynomial", "in-the-map-after"],
)
def test_huge_constant_multiply_is_refused_in_one_line_naming_the_node(
    degree, gain, last_gain, node, tmp_path
) -> None:
    x = RNG.normal(0, 1, size=(200, 8))
    model = _model(gain, last_gain=last_gain)
    with pytest.raises(RangeOverflow) as info:
        hec.compile(model, tmp_path / "o", hec.CompileOptions(degree=degree), calibration=x)
    message = str(info.value)
    assert "\n" not in message and f"node '{node}'" in message and "2^" in message, message


def test_the_same_model_with_a_sane_gain_compiles(tmp_path) -> None:
    x = RNG.normal(0, 1, size=(200, 8))
    art = hec.compile(_model(3.0), tmp_path / "o", hec.CompileOptions(degree=5), calibration=x)
    assert art.report.totals.depth >= 3


@pytest.mark.parametrize("activation", ["Relu", "Tanh", "Sigmoid"])
@pytest.mark.parametrize("degree", [2, 5, 13])
def test_bounds_hold_on_the_calibration_data(activation: str, degree: int) -> None:
    """Every bound covers what the converted graph computes on the data it was fitted on."""
    model = _model(3.0, activation)
    x = RNG.normal(0, 1, size=(300, 8))
    graph = import_onnx(model)
    make_he_friendly(model, graph, hec.CompileOptions(degree=degree), x)
    bounds = value_bounds(graph)
    probe = graph.clone()
    probe.outputs = [v for v in probe.values() if v.name in bounds]
    # the output, and a series' input (degree 2 materializes only the factors of its product)
    assert len(probe.outputs) >= (1 if degree == 2 else 2)
    for v, actual in zip(probe.outputs, interpret(probe, x), strict=True):
        assert np.abs(actual).max() <= bounds[v.name] * (1 + 1e-9) + 1e-12, v.name


def test_a_limit_in_bits_from_the_parameters() -> None:
    assert CheckRanges(40, 60).limit == 2.0**17
    assert CheckRanges(30, 60, headroom_bits=2).limit == 2.0**28


def test_an_input_range_bounds_a_program_without_polynomials() -> None:
    m = ModelBuilder((4,), seed=1)
    model = m.build(m.node("Gemm", ["input", m.const(np.full((4, 2), 1e5))]))
    graph = import_onnx(model)
    PassManager([CheckRanges()]).run(graph.clone())  # nothing known of the input: no bound
    with pytest.raises(RangeOverflow, match="Gemm_1"):
        PassManager([CheckRanges(input_range=(0.0, 1.0))]).run(graph)


def test_compile_bounds_the_input_by_its_calibration_data(tmp_path) -> None:
    """A square-only network (nothing calibrated to anchor on): the calibration data's range
    bounds the values from the input, so a product that outgrows q0 is refused."""
    m = ModelBuilder((4,), seed=1)
    h = m.node("Gemm", ["input", m.const(np.full((4, 2), 300.0))])
    model = m.build(m.node("Gemm", [m.node("Mul", [h, h]), m.weight(2, 2)]))
    x = RNG.uniform(0, 1, size=(50, 4))
    hec.compile(model, tmp_path / "plain")  # no data: nothing known of the input, no bound
    with pytest.raises(RangeOverflow, match="Mul_2"):
        hec.compile(model, tmp_path / "calibrated", calibration=x)
    small = hec.CompileOptions(input_range=(0.0, 0.01))  # a user-given range wins
    hec.compile(model, tmp_path / "given", small, calibration=x)


def _residual_relu_mlp(blocks: int = 6, width: int = 12):
    """ReLU blocks with residual joins, as in a ResNet: ``t = relu(t + W2·relu(W1·t))``."""
    m = ModelBuilder((8,), seed=3)
    t = m.node("Gemm", ["input", m.weight(8, width)])
    for _ in range(blocks):
        h = m.node("Relu", [m.node("Gemm", [t, m.weight(width, width)])])
        t = m.node("Relu", [m.node("Add", [t, m.node("Gemm", [h, m.weight(width, width)])])])
    return m.build(m.node("Gemm", [t, m.weight(width, 3)]))


def test_a_models_own_polynomials_are_bounded_from_their_measured_ranges(tmp_path) -> None:
    """``hec optimize``'s output compiled again: its polynomials carry no fitted interval, and a
    worst-case propagation through 6 residual blocks overflows float64; with calibration data,
    ``calibrate-polynomials`` records each one's measured input range, the bounds start there
    (and hold on that data), and the program compiles at fixed scale bits."""
    from hec.optimize import optimize
    from hec.passes import he_friendly_pipeline

    x = RNG.normal(0, 1, size=(200, 8))
    he_model = tmp_path / "he.onnx"
    optimize(_residual_relu_mlp(), he_model, x, options=hec.CompileOptions(degree=2))
    span = (float(x.min()), float(x.max()))

    def converted(calibration):
        graph = import_onnx(onnx.load(str(he_model)))
        PassManager(he_friendly_pipeline(hec.CompileOptions(), None, calibration)).run(graph)
        return graph

    unanchored = value_bounds(converted(None), input_range=span)
    assert max(unanchored.values()) == np.inf
    graph = converted(x)
    polys = [op for op in graph.ops if op.kind == "poly"]
    assert len(polys) == 12 and all("input_range" in op.attrs for op in polys)
    bounds = value_bounds(graph, input_range=span)
    assert max(bounds.values()) < CheckRanges().limit
    probe = graph.clone()
    probe.outputs = [v for v in probe.values() if v.name in bounds]
    for v, actual in zip(probe.outputs, interpret(probe, x), strict=True):
        assert np.abs(actual).max() <= bounds[v.name] * (1 + 1e-9) + 1e-12, v.name
    fixed = hec.CompileOptions(precision=None)  # fixed scale bits: check-ranges decides
    art = hec.compile(he_model, tmp_path / "art", fixed, calibration=x)
    assert "input_range=" in (tmp_path / "art" / "tensor_ir.txt").read_text()
    assert_matches_reference(
        hec.simulate(art, x[:20]), run_onnxruntime(onnx.load(str(he_model)), x[:20]), rel=1e-5
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_models_pass(name: str) -> None:
    model, x = CASES[name]()
    graph = import_onnx(model, name)
    PassManager([CheckRanges(input_range=(float(x.min()), float(x.max())))]).run(graph)


@pytest.mark.parametrize("folder", ["cryptonets_digits", "lenet5_digits", "cnn_silu_digits"])
def test_example_models_pass(folder: str) -> None:
    path = REPO / "examples" / folder / "model.onnx"
    x, _ = load_dataset(REPO / "examples" / folder / "calib.npz")
    graph = import_onnx(path)
    make_he_friendly(path, graph, hec.CompileOptions(), x[:200])
    PassManager([CheckRanges(input_range=(float(x.min()), float(x.max())))]).run(graph)
