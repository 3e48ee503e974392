"""replace-activations: calibrated polynomial fits, their stated errors, and what they cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hec
from hec.calibrate import calibrate
from hec.errors import HecError, UnsupportedOpError
from hec.frontend import import_onnx
from hec.ir.slot_ops import poly_depth
from hec.ir.tensor_ops import ACTIVATIONS as FUNCTIONS
from hec.passes import FusePolynomials, PassManager, ReplaceActivations
from hec.passes.polyfit import depth_efficient_degrees, fit_chebyshev

from golden import check_golden
from onnx_builders import ModelBuilder

GOLDEN = Path(__file__).parent / "golden"
RNG = np.random.default_rng(0)


@pytest.mark.parametrize("fn", sorted(FUNCTIONS))
@pytest.mark.parametrize("degree", [2, 5, 13])
def test_each_polynomial_stays_within_its_stated_error(fn: str, degree: int) -> None:
    f = lambda x: FUNCTIONS[fn](x, 0.1)  # noqa: E731
    samples = RNG.normal(0.5, 2.0, size=3000)
    fit = fit_chebyshev(f, samples, (samples.min(), samples.max()), degree)
    fresh = RNG.uniform(*fit.interval, size=20000)
    assert np.abs(fit(fresh) - f(fresh)).max() <= fit.max_error * 1.001
    assert fit.degree == degree and fit.depth == (1 if degree == 2 else poly_depth(fit.coeffs))


def test_higher_degree_fits_better_and_costs_more_levels() -> None:
    f = lambda x: FUNCTIONS["relu"](x, 0.0)  # noqa: E731
    samples = RNG.normal(0, 3, size=5000)
    fits = [fit_chebyshev(f, samples, (-10, 10), d) for d in depth_efficient_degrees(6)]
    errors = [fit.rms_error for fit in fits]
    depths = [fit.depth for fit in fits]
    assert errors == sorted(errors, reverse=True) and depths == [1, 3, 4, 5, 6]


def _model():
    b = ModelBuilder((1, 6, 6))
    h = b.node("Conv", ["input", b.weight(3, 1, 3, 3), b.weight(3)], pads=[1, 1, 1, 1])
    h = b.node("Relu", [h])
    h = b.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Flatten", [h])
    h = b.node("Gemm", [h, b.weight(27, 8, scale=0.3)])
    h = b.node("Mul", [h, b.node("Sigmoid", [h])])  # SiLU as TorchScript writes it
    x = np.random.default_rng(1).uniform(0, 1, size=(200, 1, 6, 6))  # not RNG: order-free
    return b.build(b.node("Gemm", [h, b.weight(8, 4)])), x


def test_replacement_golden_and_accuracy_of_the_function() -> None:
    model, x = _model()
    graph = import_onnx(model, "relu_maxpool_silu")
    stats = calibrate(model, graph, x)
    assert set(stats) == {"t1", "t2", "t5"}  # the Relu input, the MaxPool input, the SiLU input
    assert stats["t2"].max_from_average is not None
    PassManager([ReplaceActivations(stats, degree=5), FusePolynomials()]).run(graph)
    kinds = [op.kind for op in graph.ops]
    assert "activation" not in kinds and "maxpool" not in kinds and kinds.count("poly") == 2
    check_golden(str(graph), GOLDEN / "replace_activations.txt")


def test_missing_calibration_names_the_node(tmp_path) -> None:
    model, _ = _model()
    with pytest.raises(HecError, match="Relu_2.*relu.*--calib"):
        hec.compile(model, tmp_path / "out")


def test_an_op_that_cannot_be_replaced_is_named() -> None:
    b = ModelBuilder((4,))
    h = b.node("Gemm", ["input", b.weight(4, 4)])
    with pytest.raises(UnsupportedOpError, match="Softmax_2"):
        import_onnx(b.build(b.node("Gemm", [b.node("Softmax", [h]), b.weight(4, 2)])))


@pytest.mark.parametrize("degree", [2, 5, 13, 27])
def test_depth_grows_as_the_degree_says(degree: int, tmp_path) -> None:
    model, x = _model()
    art = hec.compile(model, tmp_path / "out", hec.CompileOptions(degree=degree), calibration=x)
    linear_levels = 3  # conv; pool+gemm; gemm
    per_activation = 1 if degree == 2 else poly_depth((0.0,) * (degree + 1))
    assert art.report.totals.depth == linear_levels + 2 * per_activation
    for row in art.report.activations:
        if row["replaces"] != "maxpool":
            assert row["degree"] == degree


def test_region_with_a_polynomial_inside_is_evaluated_right() -> None:
    """GELU's tanh form as exporters expand it (``0.5·x·(1 + tanh(c·(x + 0.044715·x³)))``):
    the region holds the cube (a poly op) before the Tanh; its scalar function equals the
    formula (the poly's coefficients and the values were passed to chebval swapped)."""
    from hec.passes.elementwise import find_regions, region_function

    b = ModelBuilder((5,))
    x3 = b.node("Pow", ["input", b.const(np.array(3.0))])
    inner = b.node("Add", ["input", b.node("Mul", [x3, b.const(np.array(0.044715))])])
    t = b.node("Tanh", [b.node("Mul", [inner, b.const(np.array(np.sqrt(2 / np.pi)))])])
    half_x = b.node("Mul", ["input", b.const(np.array(0.5))])
    model = b.build(b.node("Mul", [half_x, b.node("Add", [t, b.const(np.array(1.0))])]))
    (region,) = find_regions(import_onnx(model), lambda r: "activation" in r.kinds)
    x = np.linspace(-3, 3, 301)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    got = region_function(region)(x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)  # float32 constants
