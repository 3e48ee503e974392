"""Least-squares Chebyshev fits of a scalar function, weighted by where its inputs fall.

The fit minimizes ``Σ w_i (p(x_i) - f(x_i))²`` over calibration samples ``x_i`` (the observed
distribution, so the fit is good where the network actually is) plus a uniform grid over the
interval carrying ``grid_weight`` of the total weight (so the polynomial stays sane between and
near the edges of the samples). Work happens in ``t = affine(x) ∈ [-1, 1]``, where the Chebyshev
basis is well conditioned.

Outside ``[-1, 1]`` a least-squares polynomial of high degree grows like ``T_k``: an input 20%
beyond the interval already meets values of 1e10 and more, and the next layer's polynomial turns
that into 1e45. With ``tail > 0`` the fit also covers ``1 < |t| <= 1 + tail`` (a grid with
target ``f`` there too), weighted only as much as it takes to keep the polynomial close to
``f``, hence bounded, a little beyond the interval: the interval keeps nearly all the weight,
and a fit that is already bounded there is not changed at all (``tail_max_error`` says how
close). See docs/polynomials.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from hec.ir.slot_ops import max_degree_for_depth, poly_depth

__all__ = ["Fit", "fit_chebyshev", "depth_efficient_degrees", "significant_coeffs"]

# Chebyshev coefficients this small relative to the largest are float noise, not the function.
_NOISE = 1e-12


def significant_coeffs(coeffs) -> np.ndarray:
    """``coeffs`` without trailing terms below float noise (at least one coefficient left).

    On ``[-1, 1]`` the dropped terms change the value by less than ``1e-12·max|c|`` in all.
    """
    c = np.trim_zeros(np.asarray(coeffs, dtype=np.float64), "b")
    if c.size == 0:
        return np.zeros(1)
    big = float(np.abs(c).max())
    keep = np.flatnonzero(np.abs(c) > _NOISE * big)
    return c[: int(keep.max()) + 1]


@dataclass(frozen=True)
class Fit:
    """A fitted polynomial on ``interval``; errors are measured on the calibration samples."""

    coeffs: np.ndarray  # Chebyshev coefficients in t ∈ [-1, 1]
    interval: tuple[float, float]
    rms_error: float  # root mean square of p - f over the samples
    max_error: float  # largest |p - f| over the samples and the whole interval
    rms_value: float  # root mean square of f over the samples (the error's yardstick)
    tail: float = 0.0  # the fit also covers 1 < |t| <= 1 + tail
    tail_max_error: float = float("nan")  # largest |p - f| there (nan without tails)

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    @property
    def depth(self) -> int:
        """Levels it costs: affine none, degree 2 one product (lowering), larger a series
        (terms below float noise are not evaluated)."""
        coeffs = significant_coeffs(self.coeffs)
        degree = len(coeffs) - 1
        return 0 if degree <= 1 else 1 if degree == 2 else poly_depth(tuple(coeffs))

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
    tail: float = 0.0,
    tail_tolerance: float = 0.1,
) -> Fit:
    """Weighted least squares; with ``tail``, tails weighted just enough to keep ``p`` near ``f``.

    The tails' weight starts at zero (the plain fit) and grows until the largest ``|p - f|`` on
    them is within the interval's largest error plus ``tail_tolerance`` of ``f``'s range on the
    interval: a fit already bounded there is left as it is.
    """
    a, b = interval
    x: np.ndarray = np.asarray(samples, dtype=np.float64).ravel()
    x = x[(x >= a) & (x <= b)]  # outside, T_k grows like cosh: such samples would dominate
    grid = np.linspace(a, b, grid_points)
    edge = np.linspace(1.0, 1.0 + tail, grid_points // 4 + 1)[1:] if tail > 0 else np.zeros(0)
    tails = (a + b) / 2.0 + (b - a) / 2.0 * np.concatenate([-edge, edge])
    pts = np.concatenate([x, grid, tails])
    inside = np.concatenate(
        [
            np.full(x.size, (1.0 - grid_weight) / max(x.size, 1)),
            np.full(grid.size, grid_weight / grid.size),
            np.zeros(tails.size),
        ]
    )
    outside = np.concatenate([np.zeros(x.size + grid.size), np.full(tails.size, 1.0)])
    outside /= max(tails.size, 1)
    t = (2.0 * pts - (a + b)) / (b - a)
    V, y = np.polynomial.chebyshev.chebvander(t, degree), f(pts)
    f_grid, f_tails = f(grid), f(tails)
    allowed = tail_tolerance * float(np.ptp(f_grid))
    for share in (0.0, 1e-4, 1e-3, 1e-2, 0.05, 0.2) if tails.size else (0.0,):
        sw = np.sqrt((1.0 - share) * inside + share * outside)
        coeffs = scipy.linalg.lstsq(V * sw[:, None], y * sw)[0]
        p = np.polynomial.chebyshev.chebval
        grid_err = float(np.abs(p(t[x.size : x.size + grid.size], coeffs) - f_grid).max())
        tail_err = float(np.abs(p(t[x.size + grid.size :], coeffs) - f_tails).max(initial=0.0))
        if tail_err <= grid_err + allowed:
            break
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
    tail_err = tail_err if tails.size else float("nan")
    return Fit(
        coeffs,
        (a, b),
        float(np.sqrt(np.mean(err**2))),
        worst,
        float(np.sqrt(np.mean(fx**2))),
        tail,
        tail_err,
    )
