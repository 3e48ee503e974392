"""Least-squares Chebyshev fits of a scalar function, weighted by where its inputs fall.

The fit minimizes ``Σ w_i (p(x_i) - f(x_i))²`` over calibration samples ``x_i`` (the observed
distribution, so the fit is good where the network actually is) plus a uniform grid over the
interval carrying ``grid_weight`` of the total weight (so the polynomial stays sane between and
near the edges of the samples). Work happens in ``t = affine(x) ∈ [-1, 1]``, where the Chebyshev
basis is well conditioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from hec.ir.slot_ops import max_degree_for_depth, poly_depth

__all__ = ["Fit", "fit_chebyshev", "depth_efficient_degrees"]


@dataclass(frozen=True)
class Fit:
    """A fitted polynomial on ``interval``; errors are measured on the calibration samples."""

    coeffs: np.ndarray  # Chebyshev coefficients in t ∈ [-1, 1]
    interval: tuple[float, float]
    rms_error: float  # root mean square of p - f over the samples
    max_error: float  # largest |p - f| over the samples and the whole interval
    rms_value: float  # root mean square of f over the samples (the error's yardstick)

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    @property
    def depth(self) -> int:
        """Levels it costs: degree 2 is one square (lowering), larger degrees a series."""
        return 1 if self.degree == 2 else poly_depth(tuple(self.coeffs))

    @property
    def relative_error(self) -> float:
        return self.rms_error / max(self.rms_value, 1e-12)

    def to_t(self, x: np.ndarray) -> np.ndarray:
        a, b = self.interval
        return (2.0 * x - (a + b)) / (b - a)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.polynomial.chebyshev.chebval(self.to_t(np.asarray(x)), self.coeffs)


def depth_efficient_degrees(max_depth: int = 7) -> list[int]:
    """Degrees worth trying: the largest degree for each depth (2 is one level)."""
    return [2] + [max_degree_for_depth(d) for d in range(3, max_depth + 1)]


def fit_chebyshev(
    f: Callable[[np.ndarray], np.ndarray],
    samples: np.ndarray,
    interval: tuple[float, float],
    degree: int,
    grid_weight: float = 0.1,
    grid_points: int = 256,
) -> Fit:
    a, b = interval
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[(x >= a) & (x <= b)]  # outside, T_k grows like cosh: such samples would dominate
    grid = np.linspace(a, b, grid_points)
    pts = np.concatenate([x, grid])
    w = np.concatenate(
        [
            np.full(x.size, (1.0 - grid_weight) / max(x.size, 1)),
            np.full(grid.size, grid_weight / grid.size),
        ]
    )
    t = (2.0 * pts - (a + b)) / (b - a)
    V = np.polynomial.chebyshev.chebvander(t, degree) * np.sqrt(w)[:, None]
    coeffs = scipy.linalg.lstsq(V, f(pts) * np.sqrt(w))[0]
    fit = Fit(coeffs, (a, b), 0.0, 0.0, 0.0)
    fx = f(x) if x.size else np.zeros(1)
    err = fit(x) - fx if x.size else np.zeros(1)
    # The stated maximum covers the whole interval, not only where samples fell: a dense grid,
    # refined around its worst point (kinks such as ReLU's sit between grid points).
    dense = np.linspace(a, b, 4097)
    i = int(np.argmax(np.abs(fit(dense) - f(dense))))
    fine = np.linspace(dense[max(i - 1, 0)], dense[min(i + 1, dense.size - 1)], 4097)
    worst = max(
        float(np.abs(err).max()),
        float(np.abs(fit(dense) - f(dense)).max()),
        float(np.abs(fit(fine) - f(fine)).max()),
    )
    return Fit(
        coeffs, (a, b), float(np.sqrt(np.mean(err**2))), worst, float(np.sqrt(np.mean(fx**2)))
    )
