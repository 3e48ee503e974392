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
from hec.passes.input_layouts import INPUT_LAYOUTS, NotApplicable, design_input_layout, im2col_slots

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
        input_layout: how the client packs the input (``input_layouts``): ``direct``,
            ``replicated`` or ``im2col``, designed for the first linear map that reads it
            (``im2col`` may raise the slot count when ``slots`` is not given).
    """

    slots: int | None = None
    negligible: float = 2.0**-26
    block_local: bool = False
    input_layout: str = "direct"
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
        if self.input_layout not in INPUT_LAYOUTS:
            raise LayoutError(f"input layout {self.input_layout!r} is not one of {INPUT_LAYOUTS}")
        try:
            lowering = self._lowering(graph, slots)
            out = lowering.lower()
        except _MoreSlots as more:  # im2col: every layer works in the slots the input needs
            if self.slots is not None or more.slots > MAX_SLOTS:
                raise NotApplicable(
                    f"im2col input: needs {more.slots} slots"
                    + (f", --slots gives {self.slots}" if self.slots else ", too many")
                ) from None
            lowering = self._lowering(graph, more.slots)
            out = lowering.lower()
        if self.input_layout != "direct" and not lowering.designed:
            raise NotApplicable(f"{self.input_layout} input: the input feeds no linear map first")
        graph.become(out)
        return True

    def _lowering(self, graph: Graph, slots: int) -> _Lowering:
        return _Lowering(graph, slots, self.negligible, self.block_local, self.input_layout)


class _MoreSlots(Exception):
    """The input layout needs ``slots`` slots: lower again with that many."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        self.slots = slots


class _Lowering(ChainLowering):
    """The shared walk (``chain_lowering``) with one ``matvec`` per materialized chain."""

    dialect = "slot"

    def __init__(
        self,
        graph: Graph,
        slots: int,
        negligible: float,
        block_local: bool = False,
        input_layout: str = "direct",
    ) -> None:
        super().__init__(graph)
        self.slots = slots
        self.negligible = negligible
        self.block_local = block_local
        self.input_layout = input_layout
        self.input_fixed = input_layout == "direct"  # the input's layout can change no more
        self.designed = False

    def cipher_type(self, shape: tuple[int, ...], level: int) -> CipherType:
        return CipherType(self.slots, level, 1, Layout(shape, self.slots))

    def materialize_pending(self, p: PendingMap, shape: tuple[int, ...]) -> Value:
        """Emit ``p`` as a ``matvec`` holding a tensor of ``shape`` (nothing if identity)."""
        from_input = any(p.src is v for v in self.out.inputs)
        if p.is_identity:
            self.input_fixed |= from_input  # read as it is: its layout stays
            return p.src
        S = self.slots
        rows_slot = np.arange(p.A.shape[0])  # contiguous output layout
        A = p.A.tocoo()
        keep = np.abs(A.data) >= self.negligible
        A = sp.coo_matrix((A.data[keep], (A.row[keep], A.col[keep])), shape=A.shape)
        r = rows_slot[A.row]
        if from_input and not self.input_fixed:  # the first map reading the input picks it
            c = self._design_input(p.src, A, shape)
        else:
            c = p.src.type.layout.slot_of_element()[A.col]
            if np.any(c < 0):
                raise LayoutError(f"{p.origin}: reads an input element its layout does not hold")
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

    def _design_input(self, x: Value, A: sp.coo_matrix, shape: tuple[int, ...]) -> np.ndarray:
        """Give the input ``x`` the layout ``input_layout`` designed for map ``A``; the slots
        the non-zeros of ``A`` read."""
        if self.input_layout == "im2col":
            need = im2col_slots(A.row, A.col, A.shape[0])
            if need > self.slots:
                raise _MoreSlots(need)
        layout, read = design_input_layout(
            self.input_layout, A.row, A.col, x.type.layout.shape, shape, self.slots
        )
        x.type = CipherType(self.slots, x.type.level, x.type.scale_deg, layout)
        self.input_fixed = self.designed = True
        return read
