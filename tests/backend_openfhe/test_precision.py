"""--precision: the CKKS scale and first prime chosen from the error the outputs tolerate."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.backend_openfhe.precision import (
    HEADROOM_BITS,
    MARGIN_BITS,
    NoiseProfile,
    measure_noise,
)
from hec.backend_openfhe.report_schema import ProgramReport
from hec.errors import ParameterError
from hec.options import CompileOptions
from hec.passes.replace_activations import CalibrationMissing

from onnx_builders import ModelBuilder, run_onnxruntime


def _square_net(seed: int = 3):
    """Gemm, x², Gemm, x², Gemm: values grow through the squares, as in CryptoNets."""
    b = ModelBuilder((16,), seed=seed)
    h = b.node("Gemm", ["input", b.weight(16, 12)])
    h = b.node("Mul", [h, h])
    h = b.node("Gemm", [h, b.weight(12, 8)])
    h = b.node("Mul", [h, h])
    return b.build(b.node("Gemm", [h, b.weight(8, 4)]))


def _data(n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, size=(n, 16)).astype(np.float32)


def test_choose_takes_the_smallest_scale_within_the_target() -> None:
    noise = NoiseProfile(per_unit=50.0, per_unit_scale=200.0, max_value=30.0, samples=8)
    coarse, fine = noise.choose(1e-1, 1 << 14), noise.choose(1e-4, 1 << 14)
    assert coarse.scaling_bits < fine.scaling_bits  # a tighter target costs scale bits
    for c in (coarse, fine):
        assert 4 * c.predicted_error <= c.target  # within the target, with the safety factor
        # one bit less would not be
        assert 4 * noise.predicted(c.scaling_bits - 1, 1 << 14) > c.target
        # 30 needs 5 bits above the scale, plus the margin and the headroom
        assert c.first_mod_bits == c.scaling_bits + 5 + MARGIN_BITS + HEADROOM_BITS


def test_choose_refuses_values_and_noise_that_no_prime_holds() -> None:
    noise = NoiseProfile(per_unit=1e6, per_unit_scale=1e6, max_value=2.0**30, samples=8)
    with pytest.raises(ParameterError, match="no CKKS scale gives outputs within"):
        noise.choose(1e-3, 1 << 14)


def test_measured_values_and_noise_follow_the_program(tmp_path) -> None:
    art = hec.compile(_square_net(), tmp_path / "a", calibration=_data())
    noise = measure_noise(art.program, _data())
    reference = run_onnxruntime(_square_net(), _data())
    assert noise.max_value >= float(np.abs(reference).max())  # outputs are values too
    assert noise.per_unit > 0
    # its rescales' drift is corrected; only a polynomial's own rescales would drift
    assert noise.per_unit_scale == 0


def test_compile_with_precision_records_its_choice(tmp_path) -> None:
    options = CompileOptions(precision=1e-2)
    art = hec.compile(_square_net(), tmp_path / "p", options, calibration=_data())
    report = ProgramReport.read(tmp_path / "p")
    assert report.precision is not None
    assert report.precision["target"] == 1e-2
    assert art.params.scaling_bits == report.precision["scaling_bits"] < 40
    assert art.params.first_mod_bits == report.precision["first_mod_bits"]
    # a looser target never needs more bits
    loose = hec.compile(
        _square_net(), tmp_path / "l", CompileOptions(precision=1.0), calibration=_data()
    )
    assert loose.params.scaling_bits <= art.params.scaling_bits
    # without --precision: the default 1e-2 with calibration data ...
    auto = hec.compile(_square_net(), tmp_path / "a", calibration=_data())
    assert ProgramReport.read(tmp_path / "a").precision["target"] == 1e-2
    assert auto.params.scaling_bits == art.params.scaling_bits
    # ... fixed bits where given (or precision=None), and no precision section
    fixed = CompileOptions(scaling_bits=38)
    assert (
        hec.compile(_square_net(), tmp_path / "f", fixed, calibration=_data()).params.scaling_bits
        == 38
    )
    assert ProgramReport.read(tmp_path / "f").precision is None
    hec.compile(_square_net(), tmp_path / "n", CompileOptions(precision=None), calibration=_data())
    assert ProgramReport.read(tmp_path / "n").precision is None
    # ... and without calibration data the default bits (no error: nothing was asked)
    assert hec.compile(_square_net(), tmp_path / "u").params.scaling_bits == 40


def test_precision_needs_calibration_data(tmp_path) -> None:
    with pytest.raises(CalibrationMissing, match="--precision"):
        hec.compile(_square_net(), tmp_path / "x", CompileOptions(precision=1e-2))


@pytest.mark.slow
def test_encrypted_outputs_stay_within_the_target(tmp_path) -> None:
    target = 1e-2
    art = hec.compile(
        _square_net(), tmp_path / "e", CompileOptions(precision=target), calibration=_data()
    )
    x = _data(3)
    got = hec.run(art, x).logits
    want = run_onnxruntime(_square_net(), x)
    assert float(np.abs(got - want).max()) <= target


def test_rescale_primes_are_the_contexts() -> None:
    from hec.backend_openfhe.params import CKKSParams
    from hec.backend_openfhe.scale_drift import rescale_primes

    params = CKKSParams(ring_dim=1 << 14, depth=4, slots=8, scaling_bits=34, first_mod_bits=45)
    primes = rescale_primes(params)
    assert len(primes) == 5
    assert primes[0].bit_length() == 45
    for q in primes[1:]:
        assert q % (2 << 14) == 1  # NTT-friendly: q ≡ 1 mod 2N
        assert abs(q / 2**34 - 1) < 1e-3  # near the scale, not equal to it
    assert len(set(primes)) == 5


def test_drift_correction_leaves_the_simulated_values_exact(tmp_path) -> None:
    """The simulator applies each rescale's recorded drift; the corrected plaintexts cancel it."""
    options = CompileOptions(precision=1e-2)
    art = hec.compile(_square_net(), tmp_path / "d", options, calibration=_data())
    factors = [op.attrs["factor"] for op in art.program.ops if op.kind == "rescale"]
    assert factors and all(f != 1.0 and abs(f - 1) < 1e-3 for f in factors)
    drifted_and_corrected = hec.simulate(art, _data(4))
    want = run_onnxruntime(_square_net(), _data(4))
    np.testing.assert_allclose(drifted_and_corrected, want, rtol=1e-5, atol=1e-5)
    # without the correction the same drift shows (the factors are not all 1)
    for op in art.program.ops:
        op.attrs.pop("factor", None)
    assert np.abs(hec.simulate(art, _data(4)) - drifted_and_corrected).max() > 1e-9
