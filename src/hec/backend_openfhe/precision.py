"""CKKS scale and first modulus chosen from the precision the outputs need.

The scale ``Δ = 2^s`` sets how much noise each operation leaves relative to the values; the first
prime ``q0`` sets the largest value the last level holds (``|v| < 2^(q0 - s)``). Both follow
from the program and typical inputs (the calibration data):

* **Values.** The slot program runs on the inputs in the simulator; the largest ``|v|`` any
  ciphertext takes (and, for a polynomial, the bound on its Chebyshev series' internal values)
  gives ``q0 = s + ⌈log2 max|v|⌉ + MARGIN_BITS + HEADROOM_BITS``: two bits for inputs a little
  past the calibration data's, three for the noise and the sign.
* **Noise.** The simulator runs again with the errors CKKS makes, in units of ``2^-s``:
  Gaussian noise where encryption, every rescale and every key switch (rotation) add it, with
  a per-slot standard deviation of ``c · N · 2^-s`` (``c`` = ``ENCRYPT_NOISE`` for a fresh
  ciphertext, 1 for a rounding: the canonical-embedding size of rounding ``N`` coefficients
  against a ternary secret, rounded up); and, for each level a polynomial spends, a factor
  ``1 ± δ`` on its output: OpenFHE's fixed scaling divides by a prime ``q ≡ 1 mod 2N`` near
  ``2^s`` but counts it as ``2^s``, and such primes lie about ``N · s · ln 2`` apart, so
  ``δ ≈ MISMATCH · s · N · 2^-s``. (The program's own rescales drift too, but
  ``scale_drift`` folds their exact error into the plaintexts; a polynomial rescales inside
  OpenFHE.) Both terms scale as ``2^-s``, so the error predicted at any scale is read off one
  run of each. The smallest ``s`` whose prediction, times ``SAFETY``, is within the target is
  chosen.

The prediction is an estimate, not a bound: `hec run --compare-onnx` measures the error of an
encrypted run, and the benchmark prints both (docs/precision.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hec.errors import ParameterError
from hec.ir import CipherType, Graph
from hec.ir.types import layout_of, type_as
from hec.passes.check_ranges import series_bound
from hec.runtime.plain_eval import evaluate_plain
from hec.runtime.simulator import SEMANTICS, rotate

__all__ = ["NoiseProfile", "PrecisionChoice", "measure_noise"]

MARGIN_BITS = 2  # inputs may reach 4x the largest value calibration saw
HEADROOM_BITS = 3  # noise and sign, as check-ranges keeps
ENCRYPT_NOISE = 4.0  # a fresh ciphertext's noise against a rounding's
MISMATCH = 0.35  # half the expected gap between primes = 1 mod 2N near 2^s, over N*s
SAFETY = 4.0  # the prediction is an estimate: aim this far below the target
TRIALS = 2  # noise draws per input
MAX_SAMPLES = 16  # calibration inputs simulated (each run holds every value of the program)
MIN_SCALE_BITS, MAX_MOD_BITS = 20, 60


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``NoiseProfile.choose`` decided and why (report.json's ``precision``)."""

    target: float
    scaling_bits: int
    first_mod_bits: int
    predicted_error: float  # the largest output deviation predicted at ``scaling_bits``
    max_value: float  # the largest |v| the program reached on the samples
    samples: int
    ring_dim: int  # the ring the noise was sized for

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "scaling_bits": self.scaling_bits,
            "first_mod_bits": self.first_mod_bits,
            "predicted_error": float(f"{self.predicted_error:.3g}"),
            "max_value": float(f"{self.max_value:.4g}"),
            "samples": self.samples,
            "ring_dim": self.ring_dim,
        }


@dataclass(frozen=True)
class NoiseProfile:
    """How a program's outputs respond to CKKS noise, and the values it reaches (measured)."""

    # largest output deviation per unit of a rounding's noise std (additive), and per unit of
    # a polynomial level's relative scale error (multiplicative)
    per_unit: float
    per_unit_scale: float
    max_value: float
    samples: int

    def predicted(self, scaling_bits: int, ring_dim: int) -> float:
        """The largest output error predicted at scale ``2^scaling_bits`` and ring ``ring_dim``."""
        unit = ring_dim * 2.0**-scaling_bits
        return (self.per_unit + self.per_unit_scale * MISMATCH * scaling_bits) * unit

    def choose(self, target: float, ring_dim: int) -> PrecisionChoice:
        """The smallest scale whose predicted error (times ``SAFETY``) is within ``target`` at
        ring ``ring_dim``, and the first prime that holds the values above it.

        Raises:
            ParameterError: no scale meets ``target`` with the values the program reaches.
        """
        if not target > 0:
            raise ParameterError(f"--precision must be positive, got {target}")
        value_bits = max(0, math.ceil(math.log2(max(self.max_value, 1e-30))))
        above = value_bits + MARGIN_BITS + HEADROOM_BITS
        for s in range(MIN_SCALE_BITS, MAX_MOD_BITS - above + 1):
            predicted = self.predicted(s, ring_dim)
            if predicted * SAFETY <= target:
                q0 = max(s + above, s + 1)
                return PrecisionChoice(
                    target, s, q0, predicted, self.max_value, self.samples, ring_dim
                )
        raise ParameterError(
            f"no CKKS scale gives outputs within {target:g}: values reach "
            f"{self.max_value:.3g} (needing {above} bits above the scale in a "
            f"{MAX_MOD_BITS}-bit first prime) and the noise needs more bits below it; relax "
            f"--precision or give --scaling-bits and --first-mod-bits"
        )


def measure_noise(program: Graph, samples: np.ndarray) -> NoiseProfile:
    """Simulate slot ``program`` on up to ``MAX_SAMPLES`` of ``samples`` (``[n, *input
    shape]``), clean and with noise, and measure how its outputs respond."""
    x = _packed(program, samples[:MAX_SAMPLES])
    clean, max_value = _run_clean(program, x)
    reference = 1e-9  # an error small enough for the outputs to respond linearly
    rng = np.random.default_rng(0)

    def deviation(std: float, scale_error: float) -> float:
        runs = (_run_noisy(program, x, std, scale_error, rng) for _ in range(TRIALS))
        return max(float(np.max(np.abs(out - clean))) for out in runs) / reference

    return NoiseProfile(deviation(reference, 0.0), deviation(0.0, reference), max_value, len(x))


def _packed(program: Graph, samples: np.ndarray) -> np.ndarray:
    layout = layout_of(program.inputs[0].type)
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), *layout.shape)
    return layout.pack(x)


def _read(program: Graph, out: np.ndarray) -> np.ndarray:
    layout = type_as(program.outputs[0].type, CipherType).layout
    return out[:, layout.slot_of_element()] if layout is not None else out


def _run_clean(program: Graph, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The outputs, and the largest |v| of any value (polynomials: their series' bound)."""
    top = [float(np.max(np.abs(x)))]

    def watch(fn):
        def run(op, *args):
            y = fn(op, *args)
            top.append(float(np.max(np.abs(y))))
            if op.kind == "poly":
                top.append(series_bound(op.attrs["coeffs"], float(np.max(np.abs(args[0])))))
            return y

        return run

    semantics = {kind: watch(fn) for kind, fn in SEMANTICS.items()}
    out = evaluate_plain(program, semantics, [x])[0]
    return _read(program, out), max(top)


def _run_noisy(
    program: Graph, x: np.ndarray, std: float, scale_error: float, rng: np.random.Generator
) -> np.ndarray:
    """The outputs with noise of ``std`` per slot after every rescale and rotation and
    ``ENCRYPT_NOISE · std`` on the input, and each polynomial's output off by a factor
    ``1 ± scale_error`` per level it spends (one sign per level: the prime it divides by)."""

    def noise(shape) -> np.ndarray:
        return rng.normal(0.0, std, size=shape) if std else np.zeros(shape)

    def poly(op, v: np.ndarray) -> np.ndarray:
        levels = _level(op.result) - _level(op.inputs[0])
        drift = float(np.prod(1.0 + scale_error * rng.choice((-1.0, 1.0), size=levels)))
        return SEMANTICS["poly"](op, v) * drift

    semantics = {
        **SEMANTICS,
        "rescale": lambda op, v: SEMANTICS["rescale"](op, v) + noise(v.shape),
        "rotate": lambda op, v: rotate(v, op.attrs["k"]) + noise(v.shape),
        "rotate_sum": lambda op, *vs: sum(
            rotate(v, k) + noise(v.shape) for v, k in zip(vs, op.attrs["ks"], strict=True)
        ),
        "poly": poly,
    }
    x = x + ENCRYPT_NOISE * noise(x.shape)
    return _read(program, evaluate_plain(program, semantics, [x])[0])


def _level(v) -> int:
    return type_as(v.type, CipherType).level
