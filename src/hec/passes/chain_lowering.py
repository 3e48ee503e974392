"""The walk both lowerings share: linear chains stay pending until a non-linear op needs them.

A tensor computed from an already emitted ciphertext value ``src`` by linear ops only is kept as
a ``PendingMap``: the list of affine maps (*factors*) applied to ``src``, in order. Nothing is
emitted until a non-linear op (a product, a polynomial, an add of two different sources) or a
graph output needs the tensor; then the dialect *materializes* the pending map. How it does that
is the one thing the dialects disagree on, so it is the hook subclasses implement:

- slot packing multiplies the factors into one matrix (one ``matvec``, one level);
- batch packing may split the list where that saves scalar multiplies without costing depth.

Everything else — fusing a residual ``x + f(x)`` whose branches share a source into ``I + F``,
folding the affine parts of polynomials into the neighbouring maps, aligning levels before an
add or a product — is common and lives here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from hec.ir import (
    LINEAR_KINDS,
    NON_POLYNOMIAL_KINDS,
    Graph,
    Op,
    TensorType,
    Type,
    Value,
    affine_map,
)
from hec.ir.slot_ops import poly_depth
from hec.ir.types import encrypted_type, type_as
from hec.passes.polyfit import significant_coeffs
from hec.passes.replace_activations import CalibrationMissing
from hec.progress import ProgressFn, no_progress

__all__ = [
    "PendingMap",
    "compose_factors",
    "is_identity_map",
    "ChainLowering",
    "Quadratic",
    "quadratic_form",
    "require_polynomial",
    "significant_coeffs",
]

Factor = tuple[sp.csr_matrix, np.ndarray]

# A walk still going after this many seconds names the layer it is on, then again as often (a
# small model's walk ends first and prints nothing).
NOTE_EVERY = 30.0


def compose_factors(factors: tuple[Factor, ...], size: int) -> Factor:
    """The affine maps ``factors``, applied in order to ``size`` elements, as one ``A x + b``."""
    A: sp.csr_matrix = sp.identity(size, format="csr")
    b = np.zeros(size)
    if factors:
        A, b = factors[0]
        for Ak, bk in factors[1:]:
            A, b = (Ak @ A).tocsr(), Ak @ b + bk
    return A, b


def is_identity_map(A: sp.csr_matrix, b: np.ndarray) -> bool:
    """Whether ``x ↦ A x + b`` is the identity."""
    return (
        A.shape[0] == A.shape[1]
        and A.nnz == A.shape[0]
        and not b.any()
        and np.array_equal(A.indptr, np.arange(A.shape[0] + 1))  # one entry a row
        and np.array_equal(A.indices, np.arange(A.shape[0]))
        and bool(np.all(A.data == 1.0))
    )


@dataclass(frozen=True)
class PendingMap:
    """A tensor not yet materialized: ``f_k(… f_1(src))`` with affine ``f_i(x) = A_i x + b_i``.

    ``size`` is the number of elements of ``src``'s tensor (the width of the identity map).
    """

    src: Value
    size: int
    factors: tuple[Factor, ...] = ()
    origins: tuple[str, ...] = ()
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def then(self, A: sp.spmatrix, b: np.ndarray, origin: str = "") -> PendingMap:
        """This map followed by ``x ↦ A x + b``."""
        factors = (*self.factors, (sp.csr_matrix(A), np.asarray(b, dtype=np.float64)))
        return PendingMap(self.src, self.size, factors, (*self.origins, origin))

    def scaled(self, scale: float, shift: float, origin: str = "") -> PendingMap:
        """``scale · (this + shift)``, elementwise (the affine part of a polynomial)."""
        n = self.A.shape[0]
        return self.then(scale * sp.identity(n, format="csr"), np.full(n, scale * shift), origin)

    def plus(self, other: PendingMap, origin: str = "") -> PendingMap:
        """The sum of two maps of one source: one factor, ``(A + A') x + (b + b')``."""
        assert other.src is self.src
        factor = ((self.A + other.A).tocsr(), self.b + other.b)
        return PendingMap(self.src, self.size, (factor,), (*self.origins, *other.origins, origin))

    @property
    def A(self) -> sp.csr_matrix:
        """The product of the factors' matrices (computed once)."""
        return self._product()[0]

    @property
    def b(self) -> np.ndarray:
        return self._product()[1]

    def _product(self) -> Factor:
        if "product" not in self._cache:
            self._cache["product"] = compose_factors(self.factors, self.size)
        return self._cache["product"]

    @cached_property
    def is_identity(self) -> bool:
        return is_identity_map(self.A, self.b)

    @property
    def origin(self) -> str:
        """The ONNX nodes the map came from, in order, without repeats."""
        return "+".join(dict.fromkeys(o for o in self.origins if o))


# Completing the square is used while the parabola's vertex lies within this many half-widths
# of the interval's centre. ``u² ≈ |A|·(1 + |h|)²`` against a result of size ``|A| + |B|`` (``B =
# 2Ah``): CKKS's error on ``u²`` is magnified about ``|h|/2`` times, so 64 loses at most 5 bits
# of the result's precision. Beyond it, the product form costs a second linear map (a second
# matvec and its rotations: LeNet-5's first ReLU fit has its vertex at 6.9 half-widths).
_VERTEX_REACH = 64.0


@dataclass(frozen=True)
class Quadratic:
    """``p(t) = outer · f(t) · g(t) + shift`` with ``f(t) = a₁t + b₁``, ``g(t) = a₂t + b₂``.

    ``kind``: ``square`` (``f = g``: one affine map, squared) or ``product`` (two maps).
    """

    kind: str
    factors: tuple[tuple[float, float], tuple[float, float]]
    outer: float
    shift: float

    def __call__(self, t: np.ndarray) -> np.ndarray:
        (a1, b1), (a2, b2) = self.factors
        return self.outer * (a1 * t + b1) * (a2 * t + b2) + self.shift

    def factor_bound(self, radius: float = 1.0) -> float:
        """The largest ``|f(t)|, |g(t)|`` for ``|t| <= radius`` (what the ciphertexts hold)."""
        return max(abs(a) * radius + abs(b) for a, b in self.factors)


def quadratic_form(coeffs) -> Quadratic:
    """A numerically safe way to evaluate a degree-2 Chebyshev series on ``t ∈ [-1, 1]``.

    In power form ``A t² + B t + C``. Completing the square, ``sign(A)·u² + C - B²/(4A)`` with
    ``u = sqrt|A|·(t + h)``, ``h = B/(2A)``, is exact but, when the vertex ``-h`` is far from
    the interval (``A`` small next to ``B``), squares a huge ``u`` and cancels it with a huge
    constant: CKKS keeps a fixed number of bits, so the result is lost (and ``u²`` may exceed
    the modulus). There the product ``(A t + B)/g · (g t) + C`` is used instead, with
    ``g = sqrt(|A| + |B|)`` so both factors stay below ``g`` on the interval.
    """
    C, B, A = np.polynomial.chebyshev.cheb2poly(np.asarray(coeffs, dtype=np.float64))
    h = B / (2 * A)
    if abs(h) <= _VERTEX_REACH:
        s = float(np.sqrt(abs(A)))
        u = (s, float(s * h))
        return Quadratic("square", (u, u), float(np.sign(A)), float(C - B * B / (4 * A)))
    g = float(np.sqrt(abs(A) + abs(B)))
    return Quadratic("product", ((float(A / g), float(B / g)), (g, 0.0)), 1.0, float(C))


def require_polynomial(graph: Graph) -> None:
    """Refuse a graph that still has non-polynomial ops (ciphertexts cannot evaluate them)."""
    left = [op for op in graph.ops if op.kind in NON_POLYNOMIAL_KINDS]
    if left:
        raise CalibrationMissing(
            f"node '{left[0].origin}': {left[0].kind} "
            f"{left[0].attrs.get('fn', '')} must be replaced by "
            f"replace-activations before lowering"
        )


class ChainLowering:
    """Lower a tensor graph into the ciphertext dialect ``dialect`` (subclasses say how).

    Subclasses implement ``cipher_type`` (the type of a materialized tensor at scale Δ) and
    ``materialize_pending`` (emit a pending map); inputs get ``cipher_type(shape, 0)``.
    """

    dialect: str

    def __init__(self, graph: Graph) -> None:
        self.src_graph = graph
        self.out = Graph(graph.name, dialect=self.dialect)
        self.pending: dict[int, PendingMap] = {}
        # ``progress(stage, ops walked, ops)`` as the walk goes (a ResNet's walk takes minutes)
        self.progress: ProgressFn = no_progress
        self.stage = "lower"

    # -- the dialect's part ---------------------------------------------------------------
    def cipher_type(self, shape: tuple[int, ...], level: int) -> Type:
        raise NotImplementedError

    def materialize_pending(
        self, p: PendingMap, shape: tuple[int, ...], tensor: Value | None = None
    ) -> Value:
        """Emit ops computing ``p`` (a tensor of ``shape``); return ``p.src`` if identity.

        ``tensor``: the tensor-graph value ``p`` computes (or feeds, for the affine part of a
        polynomial), so a dialect can look at who reads it.
        """
        raise NotImplementedError

    def elementwise_type(self, shape: tuple[int, ...], level: int, like: Value) -> Type:
        """The type of an element-wise result of ``like`` (same slots): the tensor's type."""
        return self.cipher_type(shape, level)

    # -- the walk -------------------------------------------------------------------------
    def lower(self) -> Graph:
        for v in self.src_graph.inputs:
            self._identity(v, self.out.add_input(v.name, self.cipher_type(v.shape, 0)))
        ops = self.src_graph.ops
        noted = time.monotonic()
        for i, op in enumerate(ops):
            self.progress(self.stage, i, len(ops))
            if time.monotonic() - noted >= NOTE_EVERY:  # a long walk: which layer it is on
                noted = time.monotonic()
                self.progress(self.stage, i, len(ops), f"at layer '{op.origin}'")
            if op.kind in LINEAR_KINDS:
                A, b = affine_map(op)
                self.pending[id(op.result)] = self.pending[id(op.inputs[0])].then(A, b, op.origin)
            elif op.kind == "add":
                p, q = (self.pending[id(v)] for v in op.inputs)
                if p.src is q.src:  # both branches read one ciphertext: one fused map
                    self.pending[id(op.result)] = p.plus(q, op.origin)
                else:
                    x, y = self._aligned(op.inputs[0], op.inputs[1], op.origin)
                    self._result(op.result, "add", [x, y], encrypted_type(x.type).level, op.origin)
            elif op.kind == "mul":
                x, y = self._aligned(op.inputs[0], op.inputs[1], op.origin)
                self._square_or_product(op.result, x, y, op.origin)
            elif op.kind == "poly":
                self._poly(op)
            else:
                raise NotImplementedError(f"lowering of tensor op {op.kind}")
        self.out.outputs = [self._materialize(v) for v in self.src_graph.outputs]
        self.progress(self.stage, len(ops), len(ops))
        return self.out

    # -- polynomials ----------------------------------------------------------------------
    def _poly(self, op: Op) -> None:
        """Degree <= 1 is affine (fused, free); degree 2 costs one level; more: a series.

        Coefficients below float rounding are dropped first (a tanh fitted on symmetric data
        has an ``x²`` term of 1e-15 that is noise, not signal). Degree 2 is evaluated in the
        well-conditioned form ``quadratic_form`` picks (see there): a square of an affine map
        of the input, or a product of two affine maps of it. Affine maps of the input fuse
        into the linear map before, the outer affine stays pending and fuses into the one
        after: a single ciphertext product, one level, whatever the coefficients. Larger
        degrees: the Chebyshev series on ``[-1, 1]``, the interval the input was mapped to.
        """
        coeffs = significant_coeffs(op.attrs["coeffs"])
        p = self.pending[id(op.inputs[0])]
        n = type_as(op.result.type, TensorType).size
        if len(coeffs) <= 2:
            power = np.polynomial.chebyshev.cheb2poly(coeffs)
            c0, c1 = (power.tolist() + [0.0, 0.0])[:2]
            self.pending[id(op.result)] = p.then(
                c1 * sp.identity(n, format="csr"), np.full(n, c0), op.origin
            )
            return
        if len(coeffs) == 3:
            self._quadratic(op, p, quadratic_form(coeffs))
            return
        x = self._materialize(op.inputs[0])
        level = encrypted_type(x.type).level + poly_depth(tuple(coeffs))
        self._result(op.result, "poly", [x], level, op.origin, {"coeffs": tuple(coeffs)})

    def _quadratic(self, op: Op, p: PendingMap, q: Quadratic) -> None:
        """Emit ``q.outer · (f(t) ⊙ g(t)) + q.shift`` with ``f, g`` affine maps of ``t``."""
        n = type_as(op.result.type, TensorType).size
        shape, tensor = op.inputs[0].shape, op.inputs[0]
        eye = sp.identity(n, format="csr")
        (a1, b1), (a2, b2) = q.factors
        if q.kind == "square" and a1 == 1.0 and b1 == 0.0:
            x = y = self._materialize(tensor)
        elif q.kind == "square":
            x = y = self.materialize_pending(
                p.then(a1 * eye, np.full(n, b1), op.origin), shape, tensor
            )
        else:
            y = self.materialize_pending(p.then(a2 * eye, np.full(n, b2), op.origin), shape, tensor)
            x = self.materialize_pending(p.then(a1 * eye, np.full(n, b1), op.origin), shape, tensor)
            if encrypted_type(x.type).with_state(0, 1) != encrypted_type(y.type).with_state(0, 1):
                # the two maps chose different layouts: the first factor from the second
                # ciphertext (one more level, but the same product)
                ratio, offset = a1 / a2, b1 - a1 * b2 / a2
                x = self.materialize_pending(
                    PendingMap(y, n).then(ratio * eye, np.full(n, offset), op.origin),
                    shape,
                    tensor,
                )
            x, y = self._same_level(x, y, op.origin)
        product = self._square_or_product(None, x, y, op.origin)
        self.pending[id(op.result)] = PendingMap(product, n).then(
            q.outer * eye, np.full(n, q.shift)
        )

    def _square_or_product(self, tensor: Value | None, x: Value, y: Value, origin: str) -> Value:
        """``x ⊙ y`` then rescale: one level. Records it as ``tensor`` when given."""
        xt = encrypted_type(x.type)
        prod = self._emit("mul", [x, y], xt.with_state(xt.level, 2), origin)
        if tensor is not None:
            self._result(tensor, "rescale", [prod], xt.level + 1, origin)
            return self.pending[id(tensor)].src
        t = self.elementwise_type(x.shape, xt.level + 1, x)
        return self._emit("rescale", [prod], t, origin)

    # -- helpers --------------------------------------------------------------------------
    def _identity(self, tensor: Value, cipher: Value) -> None:
        self.pending[id(tensor)] = PendingMap(cipher, type_as(tensor.type, TensorType).size)

    def _result(
        self,
        tensor: Value,
        kind: str,
        inputs: list[Value],
        level: int,
        origin: str,
        attrs: dict | None = None,
    ) -> None:
        """Emit the op computing ``tensor`` (at scale Δ, element-wise from ``inputs[0]``)."""
        t = self.elementwise_type(tensor.shape, level, inputs[0])
        self._identity(tensor, self._emit(kind, inputs, t, origin, attrs))

    def _emit(
        self,
        kind: str,
        inputs: list[Value],
        t: Type,
        origin: str,
        attrs: dict | None = None,
        consts: dict | None = None,
    ) -> Value:
        return self.out.add(kind, inputs, t, attrs, consts, origin)

    def _aligned(self, a: Value, b: Value, origin: str) -> tuple[Value, Value]:
        """Materialize two tensors and bring them to one level (the deeper one's)."""
        return self._same_level(self._materialize(a), self._materialize(b), origin)

    def _same_level(self, x: Value, y: Value, origin: str) -> tuple[Value, Value]:
        """Bring two ciphertexts to one level (the deeper one's)."""
        level = max(encrypted_type(x.type).level, encrypted_type(y.type).level)

        def drop(v: Value) -> Value:
            t = encrypted_type(v.type)
            if t.level == level:
                return v
            return self._emit(
                "level_reduce",
                [v],
                t.with_state(level, 1),
                origin,
                {"levels": level - t.level},
            )

        return drop(x), drop(y)

    def _materialize(self, tensor: Value) -> Value:
        """Emit the pending affine map of ``tensor`` (once)."""
        y = self.materialize_pending(self.pending[id(tensor)], tensor.shape, tensor)
        self._identity(tensor, y)
        return y
