"""check-ranges: refuse a program whose values could outgrow what CKKS holds.

A CKKS value ``v`` at scale ``2^s`` is the integer ``v·2^s`` modulo the ciphertext modulus; at
the last level only the first prime ``q0`` is left, so ``|v|`` must stay well below
``2^(q0_bits - s)``. Past that the decryption wraps around and returns garbage, with no error
from the library. This pass bounds every value the lowered program will compute and raises
``RangeOverflow`` naming the ONNX node when one could pass ``2^(q0_bits - s - headroom)``.

The bounds are boxes (centre ± radius per element) propagated with interval arithmetic. The
walk is the lowering's own (``ChainLowering``): linear chains stay pending and are bounded only
where the program materializes them (``|A|·r`` around ``A·c + b``), so a value that exists only
inside a fused map is not checked, and a polynomial's internal values (the factors of a
degree-2 form, the products) are checked exactly as the lowering will emit them. The starting
points are the calibrated ranges: the input of a polynomial fitted by ``replace-activations``
lies in ``[-1, 1]`` by construction of its interval (calibration data plus margins), and that of
a model's own polynomial in the range ``calibrate-polynomials`` measured (``input_range``),
whatever a worst-case propagation would say; values computed from the encrypted input before
any such polynomial are unbounded unless ``input_range`` is given, and are not checked.

Preserves: the graph, exactly (it changes nothing). Requires: a tensor graph of polynomial
ops (run after ``replace-activations`` and ``fuse-polynomials``, before lowering).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hec.errors import ParameterError
from hec.ir import NON_POLYNOMIAL_KINDS, BatchCipherType, Graph, Op, Type, Value
from hec.ir.types import type_as
from hec.passes.chain_lowering import ChainLowering, PendingMap, compose_factors

__all__ = ["CheckRanges", "RangeOverflow", "value_bounds", "series_bound"]

Box = tuple[np.ndarray, np.ndarray]  # centre, radius (element-wise)


class RangeOverflow(ParameterError):
    """A value of the program could exceed what the CKKS modulus holds at its scale."""


def series_bound(coeffs, radius: float) -> float:
    """A bound on ``|Σ c_k T_k(t)|`` and on its partial sums for ``|t| <= radius``."""
    k = np.arange(len(coeffs))
    grow = np.cosh(k * np.arccosh(max(radius, 1.0)))
    return float(np.sum(np.abs(np.asarray(coeffs)) * grow))


def _poly_range(coeffs, lo: float, hi: float) -> tuple[float, float]:
    """The range of the Chebyshev series on ``[lo, hi]`` (dense grid, widened by its step)."""
    t = np.linspace(lo, hi, 2049)
    y = np.polynomial.chebyshev.chebval(t, coeffs)
    deriv = np.polynomial.chebyshev.chebder(coeffs) if len(coeffs) > 1 else np.zeros(1)
    slack = float(np.abs(np.polynomial.chebyshev.chebval(t, deriv)).max()) * (hi - lo) / 2048
    return float(y.min()) - slack, float(y.max()) + slack


class _Bounds(ChainLowering):
    """The lowering's walk, emitting placeholder values that carry boxes instead of a program."""

    dialect = "batch"  # placeholder types only; this graph is never verified nor kept

    def __init__(self, graph: Graph, limit: float, input_box: Box | None, what: str) -> None:
        super().__init__(graph)
        self.limit, self.input_box, self.what = limit, input_box, what
        self.box: dict[int, Box | None] = {}
        self.poly: Op | None = None  # the calibrated polynomial being lowered
        self.anchor: PendingMap | None = None  # its input, known to lie in ...
        self.anchor_range = (-1.0, 1.0)  # ... this range

    # -- the dialect's part ---------------------------------------------------------------
    def cipher_type(self, shape: tuple[int, ...], level: int) -> BatchCipherType:
        return BatchCipherType(tuple(shape), 1, level, 1)

    def materialize_pending(
        self, p: PendingMap, shape: tuple[int, ...], tensor: Value | None = None
    ) -> Value:
        if p.is_identity and self.anchor is None:
            return p.src
        box = self._pending_box(p)
        if p.is_identity:
            self.box[id(p.src)] = box
            return p.src
        if box is not None:
            self._check(box, p.origin, "its linear map's output")
        level = type_as(p.src.type, BatchCipherType).level + 1
        v = self._emit("matvec", [p.src], self.cipher_type(shape, level), p.origin)
        self.box[id(v)] = box
        return v

    # -- boxes ------------------------------------------------------------------------------
    def _box(self, v: Value) -> Box | None:
        if any(v is i for i in self.out.inputs):
            return self.input_box
        return self.box.get(id(v))

    def _pending_box(self, p: PendingMap) -> Box | None:
        """``p``'s box; inside a calibrated polynomial its input is bounded by its range."""
        a = self.anchor
        if (
            a is not None
            and p.src is a.src
            and len(p.factors) >= len(a.factors)
            and all(f is g for f, g in zip(p.factors, a.factors, strict=False))
        ):
            c, r = _calibrated(
                self._apply(self._box(a.src), a.factors, a.size), a.A.shape[0], self.anchor_range
            )
            return self._apply((c, r), p.factors[len(a.factors) :], len(c))
        return self._apply(self._box(p.src), p.factors, p.size)

    @staticmethod
    def _apply(box: Box | None, factors, size: int) -> Box | None:
        if box is None:
            return None
        c, r = box
        if not factors:
            return c, r
        A, b = compose_factors(tuple(factors), size)
        return A @ c + b, abs(A) @ r

    def _check(self, box: Box, origin: str, what: str) -> None:
        c, r = box
        bound = float(np.max(np.abs(c) + r)) if c.size else 0.0
        if math.isnan(bound):  # inf - inf in a box that overflowed float64
            bound = math.inf
        if not bound <= self.limit:
            raise RangeOverflow(
                f"node '{origin or '?'}': {what} can reach {bound:.3g}, beyond {self.limit:.3g}"
                f" ({self.what}); scale its weights down, or calibrate on data covering its input"
            )

    # -- ops that make new boxes ----------------------------------------------------------
    def _poly(self, op: Op) -> None:
        calibrated = "source" in op.attrs or "input_range" in op.attrs
        if calibrated:
            self.poly, self.anchor = op, self.pending[id(op.inputs[0])]
            lo, hi = op.attrs.get("input_range", (-1.0, 1.0))
            self.anchor_range = (float(lo), float(hi))
        try:
            super()._poly(op)
        finally:
            self.poly = self.anchor = None
            self.anchor_range = (-1.0, 1.0)

    def _emit(
        self,
        kind: str,
        inputs: list[Value],
        t: Type,
        origin: str,
        attrs: dict | None = None,
        consts: dict | None = None,
    ) -> Value:
        v = super()._emit(kind, inputs, t, origin, attrs, consts)
        boxes = [self._box(x) for x in inputs]
        box: Box | None = None
        if kind in ("rescale", "level_reduce"):
            box = boxes[0]
        elif kind == "add" and boxes[0] is not None and boxes[1] is not None:
            box = (boxes[0][0] + boxes[1][0], boxes[0][1] + boxes[1][1])
        elif kind == "mul" and boxes[0] is not None and boxes[1] is not None:
            box = _product(boxes[0], boxes[1], inputs[0] is inputs[1])
            self._check(box, origin, "a ciphertext product")
        elif kind == "poly":
            assert attrs is not None  # a poly is emitted with its coefficients
            box = self._series_box(boxes[0], attrs["coeffs"], origin, t)
        self.box[id(v)] = box
        return v

    def _series_box(self, box: Box | None, coeffs, origin: str, t: Type) -> Box | None:
        """A Chebyshev series' output box (and a check of its internal values)."""
        n = type_as(t, BatchCipherType).size
        if self.anchor is not None:  # a calibrated polynomial: its input within its range
            box = _calibrated(box, n, self.anchor_range)
        if box is None:
            return None
        lo, hi = float(np.min(box[0] - box[1])), float(np.max(box[0] + box[1]))
        internal = series_bound(coeffs, max(abs(lo), abs(hi)))
        if not internal <= self.limit:
            size = np.ones(n)
            self._check((size * internal, 0 * size), origin, "its polynomial's series")
        pmin, pmax = _poly_range(coeffs, lo, hi)
        return np.full(n, (pmin + pmax) / 2), np.full(n, (pmax - pmin) / 2)


def _calibrated(box: Box | None, n: int, known: tuple[float, float]) -> Box:
    """``known`` (the polynomial's calibrated input range) intersected with ``box`` if known;
    where they are disjoint (a given ``input_range`` the calibration data do not keep to), the
    box, which follows from the given range."""
    a, b = known
    if box is None:
        return np.full(n, (a + b) / 2), np.full(n, (b - a) / 2)
    lo, hi = np.maximum(box[0] - box[1], a), np.minimum(box[0] + box[1], b)
    lo, hi = np.where(lo <= hi, lo, box[0] - box[1]), np.where(lo <= hi, hi, box[0] + box[1])
    return (lo + hi) / 2, (hi - lo) / 2


def _product(x: Box, y: Box, square: bool) -> Box:
    """Interval product, element-wise (``x ⊙ x`` when ``square``: never negative)."""
    xl, xh, yl, yh = x[0] - x[1], x[0] + x[1], y[0] - y[1], y[0] + y[1]
    with np.errstate(over="ignore", invalid="ignore"):  # past float64: inf, then refused
        ends = np.stack([xl * yl, xl * yh, xh * yl, xh * yh])
        lo, hi = ends.min(0), ends.max(0)
        if square:
            lo = np.where((xl <= 0) & (xh >= 0), 0.0, np.minimum(xl * xl, xh * xh))
            hi = np.maximum(xl * xl, xh * xh)
        return (lo + hi) / 2, (hi - lo) / 2


def value_bounds(graph: Graph, limit: float = np.inf, input_range=None) -> dict[str, float]:
    """The bound on ``|v|`` of each materialized tensor of ``graph`` (name → bound)."""
    b = _run(graph, limit, input_range, "no limit")
    named = {}
    for tensor, p in b.pending.items():
        box = b._box(p.src) if p.is_identity else None
        if box is not None:
            named[tensor] = float(np.max(np.abs(box[0]) + box[1]))
    return {v.name: named[id(v)] for v in graph.values() if id(v) in named}


def _run(graph: Graph, limit: float, input_range, what: str) -> _Bounds:
    box = None
    if input_range is not None:
        lo, hi = input_range
        n = math.prod(graph.inputs[0].shape)
        box = np.full(n, (lo + hi) / 2.0), np.full(n, (hi - lo) / 2.0)
    b = _Bounds(graph, limit, box, what)
    b.lower()
    return b


@dataclass(frozen=True)
class CheckRanges:
    """Refuse a program in which a value could exceed ``2^(q0 - scale - headroom)``.

    Args:
        scaling_bits: bits of the CKKS scale Δ (``CompileOptions.scaling_bits``).
        first_mod_bits: bits of the first prime ``q0`` (``CompileOptions.first_mod_bits``).
        headroom_bits: bits kept free below ``q0`` for the noise and the sign.
        input_range: ``(low, high)`` of the encrypted input's elements, if known.
    """

    scaling_bits: int = 40
    first_mod_bits: int = 60
    headroom_bits: int = 3
    input_range: tuple[float, float] | None = None
    name: ClassVar[str] = "check-ranges"
    dialect: ClassVar[str] = "tensor"

    @property
    def limit(self) -> float:
        return 2.0 ** (self.first_mod_bits - self.scaling_bits - self.headroom_bits)

    def run(self, graph: Graph) -> bool:
        if any(op.kind in NON_POLYNOMIAL_KINDS for op in graph.ops):
            return False  # the lowering refuses it, naming the op to replace
        if any(op.kind == "poly" for op in graph.ops) or self.input_range is not None:
            what = (
                f"a {self.first_mod_bits}-bit first modulus at scale 2^{self.scaling_bits} "
                f"holds |v| < 2^{self.first_mod_bits - self.scaling_bits}, "
                f"{self.headroom_bits} bits kept for noise"
            )
            _run(graph, self.limit, self.input_range, what)
        return False
