"""Activations replaced by calibrated polynomials: Clip (ReLU6, Hardtanh, one bound), PRelu,
HardSigmoid, HardSwish, Selu, Mish, Abs, and GlobalMaxPool.

Each op's exact semantics in hec (the interpreter, i.e. ``ACTIVATIONS`` and the affine maps the
converter writes around them) equal onnxruntime to 1e-6; each small model compiled with
calibration data and simulated stays within a stated bound of onnxruntime on fresh inputs from
the same distribution.
"""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.errors import UnsupportedOpError
from hec.frontend import import_onnx
from hec.frontend.registry import CONVERTERS, HINTS
from hec.ir import interpret
from hec.options import CompileOptions

from onnx_builders import ModelBuilder, run_onnxruntime

CHANNELS = 3

# op type, extra constant inputs (None: absent), attributes, opset
CASES = {
    "relu6": ("Clip", [0.0, 6.0], {}, 17),
    "hardtanh": ("Clip", [-1.0, 1.0], {}, 17),
    "clip_min_only": ("Clip", [-0.5], {}, 17),
    "clip_max_only": ("Clip", [None, 0.5], {}, 17),
    "prelu_channels": ("PRelu", [np.array([0.1, 0.25, -0.2]).reshape(CHANNELS, 1, 1)], {}, 17),
    "prelu_shared": ("PRelu", [np.array([0.2])], {}, 17),
    "hard_sigmoid": ("HardSigmoid", [], {"alpha": 0.25, "beta": 0.4}, 17),
    "hard_swish": ("HardSwish", [], {}, 17),
    "selu": ("Selu", [], {}, 17),
    "mish": ("Mish", [], {}, 18),
    "abs": ("Abs", [], {}, 17),
}


def _activation(b: ModelBuilder, h: str, op: str, extra: list, attrs: dict) -> str:
    inputs = [h] + ["" if v is None else b.const(np.asarray(v)) for v in extra]
    return b.node(op, inputs, **attrs)


def _single(case: str):
    op, extra, attrs, opset = CASES[case]
    b = ModelBuilder((CHANNELS, 4, 4), opset=opset)
    return b.build(_activation(b, "input", op, extra, attrs))


def _network(case: str):
    """conv 2→3 (3×3, same) · activation · dense → 5 (or global max pool · dense)."""
    b = ModelBuilder((2, 6, 6), seed=7, opset=CASES.get(case, ("", [], {}, 17))[3])
    h = b.node("Conv", ["input", b.weight(CHANNELS, 2, 3, 3), b.weight(CHANNELS)], pads=[1] * 4)
    if case == "global_max_pool":
        h = b.node("GlobalMaxPool", [h])
        width = CHANNELS
    else:
        op, extra, attrs, _ = CASES[case]
        h = _activation(b, h, op, extra, attrs)
        width = CHANNELS * 36
    h = b.node("Flatten", [h])
    return b.build(b.node("Gemm", [h, b.weight(width, 5, scale=0.3), b.weight(5)]))


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, size=(n, 2, 6, 6))


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_semantics_equal_onnxruntime(case: str) -> None:
    model = _single(case)
    x = np.random.default_rng(1).normal(0.0, 3.0, size=(64, CHANNELS, 4, 4))
    ours = interpret(import_onnx(model), x)[0]
    np.testing.assert_allclose(ours, run_onnxruntime(model, x), rtol=1e-6, atol=1e-6)


def test_global_max_pool_exact_semantics_equal_onnxruntime() -> None:
    b = ModelBuilder((CHANNELS, 5, 4))
    model = b.build(b.node("GlobalMaxPool", ["input"]))
    x = np.random.default_rng(2).normal(size=(32, CHANNELS, 5, 4))
    np.testing.assert_allclose(interpret(import_onnx(model), x)[0], run_onnxruntime(model, x))


# Stated bounds (docs/activations.md has the measured values): on the calibration data itself
# (400 inputs, every activation input inside its interval) the largest error is at most
# MAX_ERROR of the largest |logit| and the argmax agrees with onnxruntime on AGREEMENT of them;
# on 400 fresh inputs of the same distribution (a few values fall outside the interval, where a
# polynomial diverges) 98% of the inputs stay within 2·MAX_ERROR and the argmax agrees on
# AGREEMENT of them.
MAX_ERROR = 0.08
AGREEMENT = 0.9
MAX_POOL_ERROR, MAX_POOL_AGREEMENT = 0.75, 0.9  # average pool with a calibrated affine map


def _errors(art, model, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Per input: largest |error| / largest |logit| over the set; argmax agreement."""
    ref = run_onnxruntime(model, x)
    got = hec.simulate(art, x).reshape(ref.shape)
    per_input = np.abs(got - ref).max(axis=1) / np.abs(ref).max()
    return per_input, float(np.mean(got.argmax(1) == ref.argmax(1)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_with_calibration_matches_onnxruntime(case: str, tmp_path) -> None:
    model = _network(case)
    calib = _inputs(400, 3)
    art = hec.compile(model, tmp_path / "art", CompileOptions(), calibration=calib)
    assert [r["degree"] for r in art.report.activations]  # one polynomial, degree chosen
    err, agree = _errors(art, model, calib)
    print(f"\nMEASURED {case}: max {err.max():.4f} agreement {agree:.4f}", end="")
    assert err.max() <= MAX_ERROR and agree >= AGREEMENT
    err, agree = _errors(art, model, _inputs(400, 4))
    print(f" fresh: within {np.mean(err <= 2 * MAX_ERROR):.4f} agreement {agree:.4f}")
    assert np.mean(err <= 2 * MAX_ERROR) >= 0.98 and agree >= AGREEMENT


def test_global_max_pool_compiled_with_calibration(tmp_path) -> None:
    """Max over the whole plane ≈ a calibrated affine map of the average: coarser."""
    model = _network("global_max_pool")
    calib = _inputs(400, 3)
    art = hec.compile(model, tmp_path / "art", CompileOptions(), calibration=calib)
    assert [r["by"] for r in art.report.activations] == ["avgpool"]
    err, agree = _errors(art, model, calib)
    print(
        f"\nMEASURED global_max_pool: max {err.max():.4f} median {np.median(err):.4f} "
        f"agreement {agree:.4f}"
    )
    assert err.max() <= MAX_POOL_ERROR and agree >= MAX_POOL_AGREEMENT


def test_relu6_error_and_predictions(tmp_path) -> None:
    """ReLU6 on calibrated data: the logits' worst error and the predictions kept, at the
    default degree and at degree 27 (one level more: closer)."""
    model = _network("relu6")
    calib = _inputs(400, 3)
    found = {}
    for degree in (None, 27):
        options = CompileOptions(degree=degree)
        art = hec.compile(model, tmp_path / f"art{degree}", options, calibration=calib)
        (row,) = art.report.activations
        assert row["replaces"] == "clip01"
        # the interval covers the pre-activation values seen on the calibration data
        assert row["interval"][0] < row["observed"][0] < row["observed"][1] < row["interval"][1]
        err, agree = _errors(art, model, calib)
        found[degree] = (err.max(), agree, row["fit_rms"])
    (err, agree, rms), (err27, agree27, rms27) = found[None], found[27]
    assert err <= MAX_ERROR and agree >= AGREEMENT
    assert err27 <= MAX_ERROR / 2 and agree27 >= 0.95
    assert rms27 < rms and err27 < err


def test_no_hint_is_stale() -> None:
    """A hint is only read for an op no converter takes; what it says must be doable."""
    assert not set(HINTS) & set(CONVERTERS)
    for op in ("Clip", "PRelu", "HardSigmoid", "HardSwish", "Selu", "Mish", "Abs"):
        assert op in CONVERTERS


def test_clip_with_encrypted_bound_is_refused() -> None:
    b = ModelBuilder((4,))
    h = b.node("Clip", ["input", "input"])
    with pytest.raises(UnsupportedOpError, match="Clip_1.*constant"):
        import_onnx(b.build(h))


@pytest.mark.slow
def test_prelu_per_channel_encrypted_matches_simulation(tmp_path) -> None:
    """OpenFHE run of the per-channel PRelu network (two branches added): the simulator's
    output to CKKS precision, onnxruntime's within the stated bound."""
    model = _network("prelu_channels")
    calib = _inputs(400, 3)
    art = hec.compile(model, tmp_path / "art", CompileOptions(), calibration=calib)
    x = calib[:1]
    result = hec.run(art, x)
    np.testing.assert_allclose(result.logits, hec.simulate(art, x), atol=1e-3, rtol=0)
    ref = run_onnxruntime(model, x)
    assert (
        np.abs(result.logits - ref).max() <= MAX_ERROR * np.abs(run_onnxruntime(model, calib)).max()
    )
