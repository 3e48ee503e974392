"""lower-to-slots: the tensor graph becomes a slot graph of ``matvec``, ``mul`` and ``poly`` ops.

Every chain of linear tensor ops between two non-linear points fuses into one affine map
``y = A x + b`` over flat indices (``A`` is the product of the ops' sparse matrices), and each
map becomes one ``matvec``: with ``x`` and ``y`` in slot layouts, ``A`` is a ``slots × slots``
matrix ``M`` and

    y = M x + b = Σ_k d_k ⊙ rot(x, k) + b,   d_k[i] = M[i, (i + k) mod slots]

(the generalized diagonal method). Columns of ``M`` that no tensor element occupies are zero, so
whatever unused slots of ``x`` hold never reaches ``y``. One map costs one level however many
layers it fused; a residual ``x + f(x)`` whose branches share a source fuses into ``I + F``.

Preserves: the function computed, exactly (up to float rounding of the matrix products).
Requires: a tensor graph. Produces: a slot graph whose values carry level and scale.
Golden: ``tests/passes/golden/lower_to_slots_*.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from hec.errors import LayoutError
from hec.ir import (
    LINEAR_KINDS,
    NON_POLYNOMIAL_KINDS,
    CipherType,
    Graph,
    Layout,
    Op,
    Value,
    affine_map,
)
from hec.ir.slot_ops import poly_depth
from hec.passes.replace_activations import CalibrationMissing

__all__ = ["LowerToSlots", "min_slots", "MAX_SLOTS"]

# The slots of the largest ring OpenFHE is asked for (2^17, see backend_openfhe.params): a tensor
# beyond this fits no ciphertext, so it is refused before any matrix is built for it.
MAX_SLOTS = 1 << 16


def min_slots(graph: Graph) -> int:
    """The smallest power of two that holds every tensor of the graph (at least 8)."""
    largest = max(v.type.size for v in graph.values())
    return max(8, 1 << (largest - 1).bit_length())


@dataclass
class _Pending:
    """A tensor not yet materialized: ``A @ src + b`` of an existing ciphertext ``src``."""

    src: Value
    A: sp.csr_matrix
    b: np.ndarray
    origins: tuple[str, ...]

    @property
    def is_identity(self) -> bool:
        A = self.A
        return (
            A.shape[0] == A.shape[1]
            and A.nnz == A.shape[0]
            and not self.b.any()
            and np.array_equal(A.indices, np.arange(A.shape[0]))
            and bool(np.all(A.data == 1.0))
        )


@dataclass(frozen=True)
class LowerToSlots:
    """Lower a tensor graph to the slot dialect (slot packing: one sample per ciphertext).

    Args:
        slots: slots per ciphertext; ``None`` picks ``min_slots(graph)``.
        negligible: matrix entries and biases below this magnitude are dropped. CKKS cannot
            carry them (OpenFHE refuses a plaintext that encodes to zero: at scale 2^s and ring
            2^15 that is below about 2^(12-s)), and their effect is under the noise anyway.
        block_local: key each diagonal by the exact shift ``c - r`` in ``(-slots, slots)``
            instead of ``(c - r) mod slots``, so that every term reads its own block even when
            a ciphertext holds several ``slots``-slot blocks side by side (sample blocks; see
            ``schedule-rotations``). Up to twice the diagonals; off by default.
    """

    slots: int | None = None
    negligible: float = 2.0**-26
    block_local: bool = False
    name: ClassVar[str] = "lower-to-slots"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        left = [op for op in graph.ops if op.kind in NON_POLYNOMIAL_KINDS]
        if left:
            raise CalibrationMissing(f"node '{left[0].origin}': {left[0].kind} "
                                     f"{left[0].attrs.get('fn', '')} must be replaced by "
                                     f"replace-activations before lowering")
        largest = max(v.type.size for v in graph.values())
        if largest > MAX_SLOTS:
            raise LayoutError(
                f"a tensor of {largest} elements exceeds the {MAX_SLOTS} slots of the largest "
                f"ciphertext; multi-ciphertext layouts are not supported yet"
            )
        slots = self.slots or min_slots(graph)
        if slots < min_slots(graph):
            raise LayoutError(
                f"a tensor of {max(v.type.size for v in graph.values())} elements "
                f"does not fit in {slots} slots; multi-ciphertext layouts are not "
                f"supported yet"
            )
        graph.become(_Lowering(graph, slots, self.negligible, self.block_local).lower())
        return True


class _Lowering:
    def __init__(
        self, graph: Graph, slots: int, negligible: float, block_local: bool = False
    ) -> None:
        self.block_local = block_local
        self.src_graph = graph
        self.slots = slots
        self.negligible = negligible
        self.out = Graph(graph.name, dialect="slot")
        self.pending: dict[int, _Pending] = {}

    def lower(self) -> Graph:
        for v in self.src_graph.inputs:
            t = CipherType(self.slots, 0, 1, Layout(v.shape, self.slots))
            self._identity(v, self.out.add_input(v.name, t))
        for op in self.src_graph.ops:
            if op.kind in LINEAR_KINDS:
                p = self.pending[id(op.inputs[0])]
                A, b = affine_map(op)
                self.pending[id(op.result)] = _Pending(
                    p.src, (A @ p.A).tocsr(), A @ p.b + b, (*p.origins, op.origin)
                )
            elif op.kind == "add":
                p, q = (self.pending[id(v)] for v in op.inputs)
                if p.src is q.src:  # both branches read one ciphertext: one fused map
                    self.pending[id(op.result)] = _Pending(
                        p.src, (p.A + q.A).tocsr(), p.b + q.b, (*p.origins, *q.origins, op.origin)
                    )
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
            self.pending[id(op.result)] = _Pending(
                p.src, (c1 * p.A).tocsr(), c1 * p.b + c0, (*p.origins, op.origin)
            )
            return
        if len(coeffs) == 3:
            C, B, A = power
            s, h = np.sqrt(abs(A)), B / (2 * A)
            if s == 1.0 and h == 0.0:
                x = self._materialize(op.inputs[0])
            else:
                x = self._materialize_pending(
                    _Pending(p.src, (s * p.A).tocsr(), s * (p.b + h), (*p.origins, op.origin)),
                    op.inputs[0].shape,
                )
            squared = self._square_or_product(None, x, x, op.origin)
            sign = float(np.sign(A))
            self.pending[id(op.result)] = _Pending(
                squared, sign * sp.identity(n, format="csr"), np.full(n, C - B * B / (4 * A)), ()
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
        layout = x.type.layout
        return self._emit("rescale", [prod], CipherType(self.slots, x.type.level + 1, 1, layout),
                          origin)

    # -- helpers --------------------------------------------------------------------------
    def _identity(self, tensor: Value, cipher: Value) -> None:
        n = tensor.type.size
        self.pending[id(tensor)] = _Pending(cipher, sp.identity(n, format="csr"), np.zeros(n), ())

    def _result(
        self,
        tensor: Value,
        kind: str,
        inputs: list[Value],
        level: int,
        origin: str,
        attrs: dict | None = None,
    ) -> None:
        """Emit the op computing ``tensor`` (at scale Δ, in the tensor's layout)."""
        t = CipherType(self.slots, level, 1, Layout(tensor.shape, self.slots))
        self._identity(tensor, self._emit(kind, inputs, t, origin, attrs))

    def _emit(
        self,
        kind: str,
        inputs: list[Value],
        t: CipherType,
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
        """Emit the pending affine map of ``tensor`` as a ``matvec`` (once)."""
        y = self._materialize_pending(self.pending[id(tensor)], tensor.shape)
        self._identity(tensor, y)
        return y

    def _materialize_pending(self, p: _Pending, shape: tuple[int, ...]) -> Value:
        """Emit ``p`` as a ``matvec`` holding a tensor of ``shape`` (nothing if identity)."""
        if p.is_identity:
            return p.src
        S = self.slots
        rows_slot = np.arange(p.A.shape[0])  # contiguous output layout
        cols_slot = p.src.type.layout.slot_of_element()
        A = p.A.tocoo()
        keep = np.abs(A.data) >= self.negligible
        A = sp.coo_matrix((A.data[keep], (A.row[keep], A.col[keep])), shape=A.shape)
        r, c = rows_slot[A.row], cols_slot[A.col]
        # Within one S-slot vector, shifts c - r and c - r - S are the same rotation; across
        # blocks they are not, so block-local programs keep them apart.
        k = c - r if self.block_local else (c - r) % S
        offsets, which = np.unique(k, return_inverse=True)
        diags = np.zeros((len(offsets), S))
        diags[which, r] = A.data
        bias = np.zeros(S)
        bias[rows_slot] = np.where(np.abs(p.b) >= self.negligible, p.b, 0.0)
        origin = "+".join(dict.fromkeys(o for o in p.origins if o))  # ordered, no repeats
        x = p.src
        t = CipherType(S, x.type.level + 1, 1, Layout(shape, S))
        return self._emit(
            "matvec",
            [x],
            t,
            origin,
            attrs={"offsets": tuple(int(o) for o in offsets)},
            consts={"diags": diags, "bias": bias},
        )
