"""Polynomials evaluated in a numerically safe form (degree 2: square or product, by condition).

A degree-2 polynomial whose ``x²`` term is small next to its ``x`` term was lowered by completing
the square: a huge square minus a huge constant, which CKKS (a fixed number of bits per value)
turns into garbage. The lowering now picks a form whose intermediates stay of the size of the
result; these tests check the forms, the compiled programs against onnxruntime, and (slow) the
encrypted run against the simulator.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import hec
from hec.frontend import import_onnx
from hec.ir import interpret
from hec.optimize import make_he_friendly
from hec.passes.chain_lowering import quadratic_form
from hec.passes.polyfit import Fit, fit_chebyshev, significant_coeffs
from hec.passes.replace_activations import outside_fractions

from conftest import assert_matches_reference
from onnx_builders import ModelBuilder, run_onnxruntime

RNG = np.random.default_rng(7)


def _power_to_cheb(c: float, b: float, a: float) -> np.ndarray:
    return np.polynomial.chebyshev.poly2cheb([c, b, a])


@pytest.mark.parametrize(
    "a, b, c", [(1.0, 0.3, -0.2), (-2.0, 3.5, 1.0), (1e-6, 2.0, 0.5), (-3e-9, 1.0, 1e3)]
)
def test_quadratic_forms_are_exact_with_bounded_factors(a: float, b: float, c: float) -> None:
    q = quadratic_form(_power_to_cheb(c, b, a))
    t = np.linspace(-1, 1, 101)
    assert np.allclose(q(t), a * t * t + b * t + c, rtol=1e-12, atol=1e-12 * abs(c))
    # what the ciphertexts hold is of the size of the coefficients, not of B²/A
    assert q.factor_bound() <= 2 * np.sqrt(abs(a) + abs(b)) + 2 * np.sqrt(abs(a))
    assert abs(q.shift) <= abs(c) + 4 * (abs(a) + abs(b))
    assert q.kind == ("square" if abs(b / (2 * a)) <= 2 else "product")


def test_float_noise_coefficients_are_dropped_and_others_kept() -> None:
    assert significant_coeffs([0.1, 2.0, 1e-15]).tolist() == [0.1, 2.0]
    assert significant_coeffs([0.1, 2.0, 1e-9]).tolist() == [0.1, 2.0, 1e-9]
    assert significant_coeffs([0.0, 0.0]).tolist() == [0.0]
    # the report's levels are what the lowering spends: none for an affine map
    assert Fit(np.array([0.1, 2.0, 1e-15]), (-1.0, 1.0), 0.0, 0.0, 0.0).depth == 0
    assert Fit(np.array([0.1, 2.0, 1e-9]), (-1.0, 1.0), 0.0, 0.0, 0.0).depth == 1


def _quadratic_model(a: float, b: float, c: float):
    """``a·h² + b·h + c`` of a dense layer ``h``, written with ONNX Mul/Add (user polynomial)."""
    m = ModelBuilder((6,), seed=3)
    h = m.node("Gemm", ["input", m.weight(6, 5)])
    sq = m.node("Mul", [h, h])
    poly = m.node(
        "Add", [m.node("Mul", [sq, m.const(np.array(a))]), m.node("Mul", [h, m.const(np.array(b))])]
    )
    poly = m.node("Add", [poly, m.const(np.array(c))])
    return m.build(m.node("Gemm", [poly, m.weight(5, 3)]))


@pytest.mark.parametrize("a", [1e-10, 1e-7, 0.5])
def test_small_square_term_compiles_to_a_product_that_matches_onnxruntime(a, tmp_path) -> None:
    model = _quadratic_model(a, 1.5, 0.25)
    x = RNG.normal(0, 1, size=(16, 6))
    art = hec.compile(model, tmp_path / "out")
    # before: with a = 1e-10 the program squared ~5e4 and subtracted ~2.8e9 (off by 1e-6 in
    # float64 already, far beyond what CKKS's modulus holds)
    out = hec.simulate(art, x)
    assert_matches_reference(out, run_onnxruntime(model, x), rel=1e-5)  # float32 reference
    assert_matches_reference(
        out, interpret(import_onnx(model), x)[0], rel=1e-7
    )  # entries below 2^-26 are dropped
    consts = [v for op in art.program.ops for v in op.consts.values()]
    assert max(float(np.abs(v).max()) for v in consts) < 1e3  # no huge constant to cancel


def _tanh_model():
    m = ModelBuilder((4,), seed=5)
    h = m.node("Gemm", ["input", m.weight(4, 4)])
    return m.build(m.node("Gemm", [m.node("Tanh", [h]), m.weight(4, 3)]))


def test_tanh_on_symmetric_data_at_degree_two_is_affine(tmp_path) -> None:
    """The fit's x² coefficient is float noise (1e-15): dropped, so no square at all."""
    model = _tanh_model()
    x = RNG.normal(0, 1, size=(300, 4))
    x = np.concatenate([x, -x])
    art = hec.compile(model, tmp_path / "out", hec.CompileOptions(degree=2), calibration=x)
    assert art.report.totals.ciphertext_multiplies == 0
    graph = import_onnx(model)
    make_he_friendly(model, graph, hec.CompileOptions(degree=2), x)
    assert_matches_reference(
        hec.simulate(art, x[:20]), interpret(graph, x[:20])[0], rel=1e-7
    )  # entries below 2^-26 are dropped


@pytest.mark.slow
def test_small_square_term_runs_encrypted_like_the_simulator(tmp_path) -> None:
    model = _quadratic_model(1e-7, 1.5, 0.25)
    x = RNG.normal(0, 1, size=(2, 6))
    art = hec.compile(model, tmp_path / "out")
    encrypted = hec.run(art, x).logits
    assert_matches_reference(encrypted, hec.simulate(art, x), rel=1e-4)


# -- a little outside the calibrated interval ---------------------------------------------------


def test_high_degree_fit_stays_bounded_a_little_beyond_its_interval() -> None:
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    samples = RNG.normal(0.0, 2.0, size=4000)
    interval = (samples.min(), samples.max())
    plain = fit_chebyshev(relu, samples, interval, 27)
    bounded = fit_chebyshev(relu, samples, interval, 27, tail=0.25)
    a, b = interval
    beyond = np.concatenate(
        [np.linspace(a - 0.125 * (b - a), a, 50), np.linspace(b, b + 0.125 * (b - a), 50)]
    )
    assert np.abs(plain(beyond) - relu(beyond)).max() > 10 * (b - a)  # the failure: it explodes
    assert np.abs(bounded(beyond) - relu(beyond)).max() <= bounded.max_error + (b - a) / 2
    assert bounded.tail_max_error <= bounded.max_error + b  # what the fit reports
    assert bounded.rms_error <= 1.5 * plain.rms_error  # inside, nearly as good


def _series_net():
    m = ModelBuilder((1, 48), seed=4)
    h = m.node("Conv", ["input", m.weight(4, 1, 5), m.weight(4)], pads=[2, 2])
    h = m.node("Relu", [h])
    h = m.node("Conv", [h, m.weight(4, 4, 3, scale=0.4), m.weight(4)], pads=[1, 1], strides=[2])
    h = m.node("Relu", [h])
    return m.build(m.node("Gemm", [m.node("Flatten", [h]), m.weight(96, 3, scale=0.2)]))


def _series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 48)
    f, p = rng.uniform(1, 6, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
    return (np.sin(2 * np.pi * f * t + p) + 0.2 * rng.normal(size=(n, 48)))[:, None, :]


def _tabular_net_and_data():
    datasets = pytest.importorskip("sklearn.datasets")
    x = datasets.load_breast_cancer().data
    x = (x - x.mean(0)) / x.std(0)
    m = ModelBuilder((30,), seed=6)
    h = m.node("Gemm", ["input", m.weight(30, 16, scale=0.3), m.weight(16, scale=0.1)])
    h = m.node("Relu", [h])
    h = m.node("Gemm", [h, m.weight(16, 8, scale=0.4)])
    h = m.node("Relu", [h])
    return m.build(m.node("Gemm", [h, m.weight(8, 2)])), x


@pytest.mark.parametrize("net, gain", [("series-conv1d", 1.2), ("tabular-mlp", 1.1)])
def test_inputs_a_little_outside_the_calibration_degrade_gracefully(net: str, gain: float) -> None:
    if net == "series-conv1d":
        model, x = _series_net(), _series(300, 1)
    else:
        model, x = _tabular_net_and_data()
    calib, test = x[::2], x[1::2] * gain  # test inputs stronger than those calibrated on
    graph = import_onnx(model)
    make_he_friendly(model, graph, hec.CompileOptions(degree=27), calib)
    ref = run_onnxruntime(model, test).reshape(len(test), -1)
    out = interpret(graph, test)[0].reshape(len(test), -1)
    assert outside_fractions(graph, test)["inputs"] > 0  # the inputs do leave the intervals
    assert np.abs(out).max() <= 3 * np.abs(ref).max()  # before: 1e13 and more
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.9


def test_compile_report_has_the_fraction_of_calibration_inputs_outside(tmp_path) -> None:
    model, x = _series_net(), _series(120, 2)
    art = hec.compile(model, tmp_path / "o", hec.CompileOptions(degree=5), calibration=x)
    rows = [r for r in art.report.activations if r["replaces"] == "relu"]
    assert len(rows) == 2
    for r in rows:
        share = r["inputs_outside"]["calibration"]
        assert share["inputs"] == len(x) and 0.0 <= share["fraction"] <= 1.0
    overall = art.report.inputs_outside["calibration"]
    graph = import_onnx(model)
    make_he_friendly(model, graph, hec.CompileOptions(degree=5), x)
    assert overall == pytest.approx({k: outside_fractions(graph, x)[k] for k in overall})
    assert outside_fractions(graph, 2.0 * x)["inputs"] > overall["inputs"]


# -- ONNX's own node test cases, encrypted ---------------------------------------------------


# ONNX's node cases for these ops (collecting them imports every case: done once, when needed)
_ONNX_CASES = ("test_sigmoid", "test_sigmoid_example", "test_tanh", "test_tanh_example")


@functools.cache
def _onnx_cases() -> dict:
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some case generators overflow casts on purpose
        cases = collect_testcases(None)
    return {c.name: c for c in cases if c.name.startswith(("test_tanh", "test_sigmoid"))}


def _with_batch_axis(model, on_server: bool):
    """The element-wise case as a model with a batch axis of one in front. ``on_server``: its
    output negated twice, so a final Sigmoid is not left to the client (``client_tail``)."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for v in [*model.graph.input, *model.graph.output]:
        dims = v.type.tensor_type.shape.dim
        dims.insert(0, onnx.TensorShapeProto.Dimension(dim_value=1))
    if on_server:
        y = model.graph.output[0].name
        model.graph.node[-1].output[0] = f"{y}_act"
        model.graph.node.append(helper.make_node("Neg", [f"{y}_act"], [f"{y}_neg"]))
        model.graph.node.append(helper.make_node("Neg", [f"{y}_neg"], [y]))
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("on_server", [False, True], ids=["as-is", "kept-on-server"])
@pytest.mark.parametrize("name", _ONNX_CASES)
def test_onnx_tanh_and_sigmoid_cases_run_encrypted_like_the_simulator(
    name: str, on_server: bool, tmp_path
) -> None:
    assert sorted(_onnx_cases()) == sorted(_ONNX_CASES)  # every such case of this onnx
    case = _onnx_cases()[name]
    (inputs, expected), *_ = case.data_sets
    model = _with_batch_axis(case.model, on_server)
    x = inputs[0][None].astype(np.float64)
    art = hec.compile(model, tmp_path / "o", calibration=x)  # calibrated on its own input
    simulated = hec.simulate(art, x)
    rows = [r for r in art.report.activations if r["replaces"] in ("tanh", "sigmoid")]
    if rows:  # evaluated encrypted as a polynomial (as-is, a final Sigmoid is the client's)
        (row,) = rows
        assert np.abs(simulated - expected[0][None]).max() <= row["fit_max"] + 1e-6
    else:
        assert not on_server and art.report.client_tail == ["Sigmoid"]
    encrypted = hec.run(art, x).logits
    assert np.abs(encrypted - simulated).max() <= 1e-2
