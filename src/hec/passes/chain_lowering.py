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

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from hec.ir import LINEAR_KINDS, NON_POLYNOMIAL_KINDS, Graph, Op, Type, Value, affine_map
from hec.ir.slot_ops import poly_depth
from hec.passes.replace_activations import CalibrationMissing

__all__ = ["PendingMap", "ChainLowering", "require_polynomial"]

Factor = tuple[sp.csr_matrix, np.ndarray]


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
            A: sp.csr_matrix = sp.identity(self.size, format="csr")
            b = np.zeros(self.size)
            if self.factors:
                A, b = self.factors[0]
                for Ak, bk in self.factors[1:]:
                    A, b = (Ak @ A).tocsr(), Ak @ b + bk
            self._cache["product"] = (A, b)
        return self._cache["product"]

    @cached_property
    def is_identity(self) -> bool:
        A = self.A
        return (
            A.shape[0] == A.shape[1]
            and A.nnz == A.shape[0]
            and not self.b.any()
            and np.array_equal(A.indices, np.arange(A.shape[0]))
            and bool(np.all(A.data == 1.0))
        )

    @property
    def origin(self) -> str:
        """The ONNX nodes the map came from, in order, without repeats."""
        return "+".join(dict.fromkeys(o for o in self.origins if o))


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
        for op in self.src_graph.ops:
            if op.kind in LINEAR_KINDS:
                A, b = affine_map(op)
                self.pending[id(op.result)] = self.pending[id(op.inputs[0])].then(A, b, op.origin)
            elif op.kind == "add":
                p, q = (self.pending[id(v)] for v in op.inputs)
                if p.src is q.src:  # both branches read one ciphertext: one fused map
                    self.pending[id(op.result)] = p.plus(q, op.origin)
                else:
                    x, y = self._aligned(*op.inputs, op.origin)
                    self._result(op.result, "add", [x, y], x.type.level, op.origin)
            elif op.kind == "mul":
                x, y = self._aligned(*op.inputs, op.origin)
                self._square_or_product(op.result, x, y, op.origin)
            elif op.kind == "poly":
                self._poly(op)
            else:
                raise NotImplementedError(f"lowering of tensor op {op.kind}")
        self.out.outputs = [self._materialize(v) for v in self.src_graph.outputs]
        return self.out

    # -- polynomials ----------------------------------------------------------------------
    def _poly(self, op: Op) -> None:
        """Degree <= 1 is affine (fused, free); degree 2 costs one level; more: a series.

        Degree 2 in power form is ``A t² + B t + C = sign(A)·u² + C - B²/(4A)`` with
        ``u = sqrt|A|·(t + B/(2A))``. ``u`` is an affine map of ``t``'s source, so it fuses into
        the linear map before; the outer affine stays pending and fuses into the one after.
        What is left is a single ciphertext square: one level, whatever the coefficients.
        """
        coeffs = np.trim_zeros(np.asarray(op.attrs["coeffs"], dtype=np.float64), "b")
        power = np.polynomial.chebyshev.cheb2poly(coeffs)
        p = self.pending[id(op.inputs[0])]
        n = op.result.type.size
        if len(coeffs) <= 2:
            c0, c1 = (power.tolist() + [0.0, 0.0])[:2]
            self.pending[id(op.result)] = p.then(
                c1 * sp.identity(n, format="csr"), np.full(n, c0), op.origin
            )
            return
        if len(coeffs) == 3:
            C, B, A = power
            s, h = np.sqrt(abs(A)), B / (2 * A)
            if s == 1.0 and h == 0.0:
                x = self._materialize(op.inputs[0])
            else:
                x = self.materialize_pending(
                    p.scaled(s, h, op.origin), op.inputs[0].shape, op.inputs[0]
                )
            squared = self._square_or_product(None, x, x, op.origin)
            sign = float(np.sign(A))
            self.pending[id(op.result)] = PendingMap(squared, n).then(
                sign * sp.identity(n, format="csr"), np.full(n, C - B * B / (4 * A))
            )
            return
        x = self._materialize(op.inputs[0])
        level = x.type.level + poly_depth(tuple(coeffs))
        self._result(op.result, "poly", [x], level, op.origin, {"coeffs": tuple(coeffs)})

    def _square_or_product(self, tensor: Value | None, x: Value, y: Value, origin: str) -> Value:
        """``x ⊙ y`` then rescale: one level. Records it as ``tensor`` when given."""
        prod = self._emit("mul", [x, y], x.type.with_state(x.type.level, 2), origin)
        if tensor is not None:
            self._result(tensor, "rescale", [prod], x.type.level + 1, origin)
            return self.pending[id(tensor)].src
        t = self.elementwise_type(x.shape, x.type.level + 1, x)
        return self._emit("rescale", [prod], t, origin)

    # -- helpers --------------------------------------------------------------------------
    def _identity(self, tensor: Value, cipher: Value) -> None:
        self.pending[id(tensor)] = PendingMap(cipher, tensor.type.size)

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
        x, y = self._materialize(a), self._materialize(b)
        level = max(x.type.level, y.type.level)

        def drop(v: Value) -> Value:
            if v.type.level == level:
                return v
            return self._emit(
                "level_reduce",
                [v],
                v.type.with_state(level, 1),
                origin,
                {"levels": level - v.type.level},
            )

        return drop(x), drop(y)

    def _materialize(self, tensor: Value) -> Value:
        """Emit the pending affine map of ``tensor`` (once)."""
        y = self.materialize_pending(self.pending[id(tensor)], tensor.shape, tensor)
        self._identity(tensor, y)
        return y
