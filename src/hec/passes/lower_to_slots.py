"""lower-to-slots: the tensor graph becomes a slot graph of ``matvec``, ``mul`` and ``poly`` ops.

Every chain of linear tensor ops between two non-linear points fuses into one affine map
``y = A x + b`` over flat indices (``A`` is the product of the ops' sparse matrices), and each
map becomes one ``matvec``: with ``x`` and ``y`` in slot layouts, ``A`` is a ``slots × slots``
matrix ``M`` and

    y = M x + b = Σ_k d_k ⊙ rot(x, k) + b,   d_k[i] = M[i, (i + k) mod slots]

(the generalized diagonal method). Columns of ``M`` that no tensor element occupies are zero, so
whatever unused slots of ``x`` hold never reaches ``y``. One map costs one level however many
layers it fused; a residual ``x + f(x)`` whose branches share a source fuses into ``I + F``.
The walk itself (pending maps, polynomials, level alignment) is shared with ``lower-to-batch``
and lives in ``chain_lowering``.

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
from hec.ir import CipherType, Graph, Layout, Value
from hec.passes.chain_lowering import ChainLowering, PendingMap, require_polynomial

__all__ = ["LowerToSlots", "min_slots", "MAX_SLOTS"]

# The slots of the largest ring OpenFHE is asked for (2^17, see backend_openfhe.params): a tensor
# beyond this fits no ciphertext, so it is refused before any matrix is built for it.
MAX_SLOTS = 1 << 16


def min_slots(graph: Graph) -> int:
    """The smallest power of two that holds every tensor of the graph (at least 8)."""
    largest = max(v.type.size for v in graph.values())
    return max(8, 1 << (largest - 1).bit_length())


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
        require_polynomial(graph)
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


class _Lowering(ChainLowering):
    """The shared walk (``chain_lowering``) with one ``matvec`` per materialized chain."""

    dialect = "slot"

    def __init__(
        self, graph: Graph, slots: int, negligible: float, block_local: bool = False
    ) -> None:
        super().__init__(graph)
        self.slots = slots
        self.negligible = negligible
        self.block_local = block_local

    def cipher_type(self, shape: tuple[int, ...], level: int) -> CipherType:
        return CipherType(self.slots, level, 1, Layout(shape, self.slots))

    def materialize_pending(self, p: PendingMap, shape: tuple[int, ...]) -> Value:
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
        x = p.src
        t = CipherType(S, x.type.level + 1, 1, Layout(shape, S))
        return self._emit(
            "matvec",
            [x],
            t,
            p.origin,
            attrs={"offsets": tuple(int(o) for o in offsets)},
            consts={"diags": diags, "bias": bias},
        )
