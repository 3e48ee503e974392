"""Max and Min, with constants and between encrypted tensors: ``b ± relu(±(a - b))``.

The import is exact (the interpreter equals onnxruntime to 1e-6: ReLU itself is still exact
there); compiled with calibration data, the ReLUs become polynomials and the simulated program
stays within a stated bound of onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.errors import UnsupportedOpError
from hec.frontend import import_onnx
from hec.ir import interpret

from onnx_builders import ModelBuilder, run_onnxruntime


def _model(case: str):
    b = ModelBuilder((6,), seed=4)
    h = b.node("Gemm", ["input", b.weight(6, 4), b.weight(4)])
    if case == "max_scalar":
        h = b.node("Max", [h, b.const(np.array(0.25))])
    elif case == "min_per_element":
        h = b.node("Min", [b.const(np.array([[0.3, -0.2, 0.1, 0.0]])), h])
    elif case == "max_two_encrypted":
        g = b.node("Gemm", ["input", b.weight(6, 4)])
        h = b.node("Max", [h, g])
    elif case == "min_encrypted_and_constants":
        g = b.node("Gemm", ["input", b.weight(6, 4)])
        h = b.node("Min", [h, b.const(np.array(0.4)), g, b.const(np.array([0.2]))])
    return b.build(b.node("Gemm", [h, b.weight(4, 3)]))


CASES = ["max_scalar", "min_per_element", "max_two_encrypted", "min_encrypted_and_constants"]


@pytest.mark.parametrize("case", CASES)
def test_import_equals_onnxruntime(case: str) -> None:
    model = _model(case)
    x = np.random.default_rng(1).normal(size=(50, 6))
    (got,) = interpret(import_onnx(model), x)
    np.testing.assert_allclose(got, run_onnxruntime(model, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_compiled_within_bound(tmp_path, case: str) -> None:
    model = _model(case)
    rng = np.random.default_rng(2)
    calib, x = rng.normal(size=(400, 6)), rng.normal(size=(200, 6))
    art = hec.compile(model, tmp_path / case, calibration=calib)
    got, want = hec.simulate(art, x), run_onnxruntime(model, x)
    assert np.abs(got - want).max() <= 0.15 * np.abs(want).max()  # the ReLU fits
    assert np.mean(got.argmax(axis=1) == want.argmax(axis=1)) >= 0.9


def test_constant_that_widens_is_refused() -> None:
    b = ModelBuilder((4,))
    model = b.build(b.node("Max", ["input", b.const(np.zeros((3, 4)))]))
    with pytest.raises(UnsupportedOpError, match="widen"):
        import_onnx(model)
