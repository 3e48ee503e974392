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

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from hec.errors import LayoutError
from hec.ir import LINEAR_KINDS, CipherType, Graph, Layout, Value
from hec.ir.types import layout_of, type_as
from hec.passes.chain_lowering import ChainLowering, PendingMap, require_polynomial
from hec.passes.expand_copies import copies_for, readout_plan
from hec.passes.input_layouts import (
    INPUT_LAYOUTS,
    NotApplicable,
    design_input_layout,
    im2col_slots,
    multiplexed_input,
    padded_rows,
)
from hec.passes.output_layouts import (
    OUTPUT_LAYOUTS,
    choose_output_layout,
    layout_period,
    make_periodic,
    map_cost,
    one_channel_starts,
    periodic_reads,
)
from hec.passes.stencil_sums import (
    STENCIL_SUMS,
    Stencil,
    find_stencil,
    stencil_rotations,
    sum_rounds,
)
from hec.progress import ProgressFn, no_progress

__all__ = [
    "CheckInputLayout",
    "LowerToSlots",
    "SlotLowering",
    "READOUTS",
    "min_slots",
    "MAX_SLOTS",
    "check_fits_one_ciphertext",
]

# How the last map (the output layer) is computed: ``matrix``: a map like any other;
# ``copies``: the client packs one copy of the input per output and each copy computes one
# output as a dot product (``readout`` op, expanded by ``expand-copies``).
READOUTS = ("matrix", "copies")

# The slots of the largest ring OpenFHE is asked for (2^17, see backend_openfhe.params): a tensor
# beyond this fits no ciphertext, so it is refused before any matrix is built for it.
MAX_SLOTS = 1 << 16


def check_fits_one_ciphertext(graph: Graph) -> None:
    """Refuse a graph with a tensor larger than the largest ciphertext (slot packing holds each
    tensor in one); cheap, so ``hec.compile`` asks before calibrating."""
    largest = max(math.prod(v.shape) for v in graph.values())
    if largest > MAX_SLOTS:
        name = next(v for v in graph.values() if math.prod(v.shape) == largest).name
        raise LayoutError(
            f"tensor '{name}' has {largest} elements, more than the {MAX_SLOTS} slots of the "
            f"largest ciphertext; multi-ciphertext layouts are not supported yet (batch packing, "
            f"--packing batch, holds one element per ciphertext)"
        )


def min_slots(graph: Graph) -> int:
    """The smallest power of two that holds every tensor of the graph (at least 8)."""
    largest = max(math.prod(v.shape) for v in graph.values())
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
        output_layouts: a map whose output only linear maps read (through element-wise
            polynomials) may keep it on its input's grid (``output_layouts``): ``auto`` where
            that is cheaper (rotations, plaintext multiplies), ``anchored`` the same and a
            pruned dense layer's neurons on slots they read, ``strided`` wherever it can,
            ``contiguous``: never.
        fold_short_maps: whether the scheduler folds short maps (``auto`` costs it so).
        readout: ``matrix`` or ``copies``: the output layer as one ``readout`` op over
            ``copies`` (the output size rounded up to a power of two) repeats of the
            ``slots``-slot program, so that its dot products need no diagonal (see
            ``expand_copies``). Raises ``NotApplicable`` where the model ends without a
            linear map or the copies would not fit ``MAX_SLOTS``.
        stencil_sums: an average pool as rotate-and-add (``stencil_sums``): ``auto`` where
            cheaper than fusing it into the next map, ``always``, ``never``. Not with
            ``block_local`` (pools stay fused there).
    """

    slots: int | None = None
    negligible: float = 2.0**-26
    block_local: bool = False
    input_layout: str = "direct"
    output_layouts: str = "auto"
    fold_short_maps: bool = True
    stencil_sums: str = "auto"
    readout: str = "matrix"
    progress: ProgressFn = field(default=no_progress, compare=False, repr=False)
    name: ClassVar[str] = "lower-to-slots"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        require_polynomial(graph)
        check_fits_one_ciphertext(graph)
        slots = self.slots or min_slots(graph)
        if slots < min_slots(graph):
            raise LayoutError(
                f"a tensor of {max(math.prod(v.shape) for v in graph.values())} elements "
                f"does not fit in {slots} slots; multi-ciphertext layouts are not "
                f"supported yet"
            )
        self._check_choices()
        if self.readout == "copies":
            if len(graph.outputs) != 1:
                raise NotApplicable("copies readout: the model has more than one output")
            copies = copies_for(math.prod(graph.outputs[0].shape))
            if copies * slots > MAX_SLOTS:
                raise NotApplicable(
                    f"copies readout: {copies} copies of {slots} slots exceed the "
                    f"{MAX_SLOTS} slots of the largest ciphertext"
                )
        try:
            lowering = self._lowering(graph, slots, self.progress)
            out = lowering.lower()
        except _MoreSlots as more:  # im2col: every layer works in the slots the input needs
            self._refuse_more_slots(more)
            lowering = self._lowering(graph, more.slots, self.progress)
            out = lowering.lower()
        if self.input_layout != "direct" and not lowering.designed:
            raise NotApplicable(f"{self.input_layout} input: the input feeds no linear map first")
        graph.become(out)
        # the decisions this program was lowered under: print(graph) shows them, program.json
        # keeps them
        graph.attrs.update(
            input_layout=self.input_layout,
            output_layouts=self.output_layouts,
            readout=self.readout,
            stencil_sums="never" if self.block_local else self.stencil_sums,  # none when local
            slots=lowering.slots,
        )
        if self.block_local:
            graph.attrs["block_local"] = True
        return True

    def _check_choices(self) -> None:
        if self.input_layout not in INPUT_LAYOUTS:
            raise LayoutError(f"input layout {self.input_layout!r} is not one of {INPUT_LAYOUTS}")
        if self.readout not in READOUTS:
            raise LayoutError(f"readout {self.readout!r} is not one of {READOUTS}")

    def check_input_layout(self, graph: Graph) -> None:
        """Refuse ``input_layout`` for ``graph`` the way ``run`` would, but cheaply: the walk
        stops as soon as the input's layout is designed (the first linear map), so a layout
        that cannot apply costs one layer's matrix, not a whole lowering. Changes nothing.

        Raises:
            NotApplicable: the layout does not suit the first map, or needs more slots than
                ``slots`` (when given) or the largest ciphertext.
        """
        self._check_choices()
        if self.input_layout == "direct":
            return
        slots = max(self.slots or 0, min_slots(graph))
        lowering = self._lowering(graph, slots)
        lowering.stop_when_designed = True
        try:
            lowering.lower()
        except _MoreSlots as more:
            self._refuse_more_slots(more)
            return  # the lowering works in that many slots
        except _Designed:
            return
        raise NotApplicable(f"{self.input_layout} input: the input feeds no linear map first")

    def _refuse_more_slots(self, more: _MoreSlots) -> None:
        """The input layout needs ``more.slots``: refuse it where ``--slots`` or the largest
        ciphertext does not hold that many (one line naming the layer)."""
        if self.slots is None and more.slots <= MAX_SLOTS:
            return
        limit = (
            f"--slots gives {self.slots}" if self.slots else f"the largest ciphertext {MAX_SLOTS}"
        )
        raise NotApplicable(
            f"{self.input_layout} input: layer '{more.origin}' needs {more.slots} slots "
            f"({more.terms} terms x {more.outputs} outputs), {limit}"
        ) from None

    def _lowering(
        self, graph: Graph, slots: int, progress: ProgressFn = no_progress
    ) -> SlotLowering:
        lowering = SlotLowering(
            graph,
            slots,
            self.negligible,
            self.block_local,
            self.input_layout,
            self.output_layouts,
            self.fold_short_maps,
            self.stencil_sums,
            self.readout,
        )
        lowering.progress, lowering.stage = progress, f"compile: {self.name}"
        return lowering


@dataclass(frozen=True)
class CheckInputLayout:
    """Refuse, before the costly passes, an input layout that ``lowering`` would refuse.

    A candidate layout that cannot apply (``im2col`` needing more slots than any ring has, a
    ``replicated`` input whose copies overlap) was found only once ``lower-to-slots`` reached
    the first map, after ``check-ranges`` had bounded the whole graph: minutes on a ResNet-20
    for each candidate ``--input-layout auto`` tries. This walks to the first map only.

    Preserves: the graph (it changes nothing). Raises ``NotApplicable`` as the lowering would.
    """

    lowering: LowerToSlots
    name: ClassVar[str] = "check-input-layout"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        require_polynomial(graph)
        self.lowering.check_input_layout(graph)
        return False


class _MoreSlots(Exception):
    """The input layout needs ``slots`` slots (``terms`` per output of layer ``origin``, for
    ``outputs`` outputs): lower again with that many."""

    def __init__(self, slots: int, origin: str, terms: int, outputs: int) -> None:
        super().__init__(slots)
        self.slots, self.origin, self.terms, self.outputs = slots, origin, terms, outputs


class _Designed(Exception):
    """The input's layout is designed (``check_input_layout`` needs no more of the walk)."""


class SlotLowering(ChainLowering):
    """The shared walk (``chain_lowering``) with one ``matvec`` per materialized chain (the
    pruner's ``diagonal_blocks`` replays it to read which weights feed which diagonal)."""

    dialect = "slot"

    def __init__(
        self,
        graph: Graph,
        slots: int,
        negligible: float,
        block_local: bool = False,
        input_layout: str = "direct",
        output_layouts: str = "auto",
        fold_short_maps: bool = True,
        stencil_sums: str = "auto",
        readout: str = "matrix",
    ) -> None:
        super().__init__(graph)
        self.readout = readout
        if stencil_sums not in STENCIL_SUMS:
            raise LayoutError(f"stencil sums {stencil_sums!r}: not one of {STENCIL_SUMS}")
        self.stencil_sums = stencil_sums
        self.slots = slots
        self.negligible = negligible
        self.block_local = block_local
        self.input_layout = input_layout
        self.input_fixed = input_layout == "direct"  # the input's layout can change no more
        self.designed = False
        self.stop_when_designed = False  # check_input_layout: the design is all it asks
        # tensors only linear maps read (maybe through polynomials): their layout is free
        if output_layouts not in OUTPUT_LAYOUTS:
            raise LayoutError(f"output layouts {output_layouts!r}: not one of {OUTPUT_LAYOUTS}")
        self.output_layouts, self.fold = output_layouts, fold_short_maps
        self.anchor = output_layouts == "anchored"  # pruned dense layers' neurons on their inputs
        free = output_layouts != "contiguous"
        self.free_layout = _read_by_maps_only(graph) if free else set()

    def cipher_type(self, shape: tuple[int, ...], level: int) -> CipherType:
        return CipherType(self.slots, level, 1, Layout(shape, self.slots))

    def elementwise_type(self, shape: tuple[int, ...], level: int, like: Value) -> CipherType:
        layout = type_as(like.type, CipherType).layout
        if layout is not None and layout.kind == "strided":  # slot for slot: the same slots
            return CipherType(
                self.slots, level, 1, Layout(shape, self.slots, "strided", layout.source)
            )
        return self.cipher_type(shape, level)

    def output_layout(
        self,
        rows: np.ndarray,
        read: np.ndarray,
        shape: tuple[int, ...],
        tensor: Value | None,
        cols: np.ndarray | None = None,
        source: Layout | None = None,
        period: int = 0,
    ) -> tuple[Layout, np.ndarray]:
        """The layout of a map's output and the slot of each output element. Under a copies
        readout a filter reading one channel (``cols``: source elements, laid out as
        ``source``) goes on that channel's grid where free (``one_channel_starts``); a map
        reading a ``period``-periodic source may put its outputs in lanes."""
        if tensor is not None and id(tensor) in self.free_layout:
            prefer = "strided" if self.output_layouts == "strided" else "cost"
            starts = None
            if self.readout == "copies" and cols is not None and source is not None:
                starts = one_channel_starts(rows, cols, read, shape, source)
            return choose_output_layout(
                rows, read, shape, self.slots, prefer, self.fold, self.anchor, starts, period
            )
        return Layout(shape, self.slots), np.arange(int(np.prod(shape)))

    def materialize_pending(
        self, p: PendingMap, shape: tuple[int, ...], tensor: Value | None = None
    ) -> Value:
        """Emit ``p`` as a ``matvec`` holding a tensor of ``shape`` (nothing if identity)."""
        from_input = any(p.src is v for v in self.out.inputs)
        if self.readout == "copies" and any(tensor is v for v in self.src_graph.outputs):
            return self.emit_readout(p, shape)
        # a strided tensor read by something other than a map gets its contiguous copy
        free = tensor is not None and id(tensor) in self.free_layout
        if p.is_identity and (free or layout_of(p.src.type).kind != "strided"):
            self.input_fixed |= from_input  # read as it is: its layout stays
            return p.src
        p = self.stencil_first(p, shape, tensor)
        S = self.slots
        A = p.A.tocoo()
        keep = np.abs(A.data) >= self.negligible
        A = sp.coo_matrix((A.data[keep], (A.row[keep], A.col[keep])), shape=A.shape)
        if from_input and not self.input_fixed and self.input_layout == "multiplexed":
            # the output where a direct input (rows padded) would put it, then one input
            # copy per block
            at, _ = padded_rows(layout_of(p.src.type).shape)
            layout, rows_slot = self.output_layout(A.row, at[A.col], shape, tensor)
            if layout.kind != "strided":
                raise NotApplicable("multiplexed input: the first map's output is not strided")
            in_layout, c = multiplexed_input(
                rows_slot[A.row], A.col, layout_of(p.src.type).shape, S
            )
            xt = type_as(p.src.type, CipherType)
            p.src.type = CipherType(S, xt.level, xt.scale_deg, in_layout)
            self.input_fixed = self.designed = True
        elif from_input and not self.input_fixed:  # the first map reading the input picks it
            c = self._design_input(p.src, A, shape, p.origin)
            layout, rows_slot = Layout(shape, S), np.arange(A.shape[0])  # designed for these
        else:
            source = layout_of(p.src.type)
            c = source.slot_of_element()[A.col]
            if np.any(c < 0) and from_input and self.designed:  # e.g. Split: two maps read it
                raise NotApplicable(f"{p.origin}: the layout the first reader chose lacks elements")
            if np.any(c < 0):
                raise LayoutError(f"{p.origin}: reads an input element its layout does not hold")
            period = layout_period(source)
            layout, rows_slot = self.output_layout(A.row, c, shape, tensor, A.col, source, period)
            if period:  # every element in each lane: read the copy at offset 0 .. period-1
                c = periodic_reads(rows_slot[A.row], c, period)
        if self.designed and self.stop_when_designed:
            raise _Designed
        r = rows_slot[A.row]
        # Within one S-slot vector, shifts c - r and c - r - S are the same rotation; across
        # blocks they are not, so block-local programs keep them apart.
        k = c - r if self.block_local else (c - r) % S
        offsets, which = np.unique(k, return_inverse=True)
        diags = np.zeros((len(offsets), S))
        diags[which, r] = A.data
        bias = np.zeros(S)
        bias[rows_slot] = np.where(np.abs(p.b) >= self.negligible, p.b, 0.0)
        x = p.src
        t = CipherType(S, type_as(x.type, CipherType).level + 1, 1, layout)
        y = self._emit(
            "matvec",
            [x],
            t,
            p.origin,
            attrs={"offsets": tuple(int(o) for o in offsets)},
            consts={"diags": diags, "bias": bias},
        )
        if free and self.fold and not self.block_local and self.readout == "matrix":
            make_periodic(y)
        return y

    def emit_readout(self, p: PendingMap, shape: tuple[int, ...]) -> Value:
        """The output layer as a ``readout`` op: output ``b`` is the dot product of row ``b``
        of ``p`` with its source, computed in copy ``b`` (``expand-copies``)."""
        if p.is_identity or any(p.src is v for v in self.out.inputs):
            raise NotApplicable("copies readout: the model does not end with a linear layer")
        S, n = self.slots, int(np.prod(shape))
        copies = copies_for(n)
        A = p.A.tocoo()
        keep = np.abs(A.data) >= self.negligible
        slot = layout_of(p.src.type).slot_of_element()[A.col[keep]]
        if np.any(slot < 0):
            raise LayoutError(f"{p.origin}: reads an input element its layout does not hold")
        weights = np.zeros((n, S))
        np.add.at(weights, (A.row[keep], slot), A.data[keep])
        anchor, rounds = readout_plan(np.flatnonzero(np.any(weights != 0, axis=0)), S)
        source = np.full(copies * S, -1, dtype=np.int64)
        source[np.arange(n) * S + anchor] = np.arange(n)
        layout = Layout(shape, copies * S, "strided", tuple(source.tolist()))
        t = CipherType(copies * S, type_as(p.src.type, CipherType).level + 1, 1, layout)
        bias = np.where(np.abs(p.b) >= self.negligible, p.b, 0.0)
        return self._emit(
            "readout",
            [p.src],
            t,
            p.origin,
            attrs={"copies": copies, "anchor": anchor, "rounds": rounds},
            consts={"weights": weights, "bias": bias},
        )

    def stencil_first(
        self, p: PendingMap, shape: tuple[int, ...], tensor: Value | None
    ) -> PendingMap:
        """Emit the leading stencil of ``p`` (an average pool) by rotate-and-add where
        ``stencil_sums`` says so (``auto``: where that is cheaper than fusing it into the
        map after it); returns the rest of the chain, read from that result. A chain read
        from the graph input is left whole (the input layout is designed for it)."""
        layout = layout_of(p.src.type)
        if self.stencil_sums == "never" or self.block_local:
            return p
        if any(p.src is v for v in self.out.inputs):
            return p
        if layout.kind not in ("contiguous", "strided"):
            return p
        slot_of = layout.slot_of_element()
        st = find_stencil(p, slot_of, self.slots, self.negligible)
        if st is None:
            return p
        head = (st.scale * sp.identity(st.size, format="csr"), st.bias)
        rest = PendingMap(
            p.src, st.size, (head, *p.factors[st.factors :]), ("", *p.origins[st.factors :])
        )
        if self.stencil_sums == "auto":
            fused = self._map_cost(p.A, slot_of, shape, tensor)
            split = self._map_cost(rest.A, st.anchors, shape, tensor)
            if split + stencil_rotations(st.taps) >= fused:
                return p
        return PendingMap(self.emit_stencil(p.src, st), rest.size, rest.factors, rest.origins)

    def emit_stencil(self, x: Value, st: Stencil) -> Value:
        """``Σ_t rot(x, t)``, in the rounds of ``sum_rounds``: a strided value (anchors), its
        elements grouped by ``x``'s channels (a pool keeps them)."""
        S = self.slots
        source = np.full(S, -1, dtype=np.int64)
        source[st.anchors] = np.arange(st.size)
        shape: tuple[int, ...] = (st.size,)
        held = layout_of(x.type).shape
        channels = held[0] if len(held) > 1 else 1
        if channels > 1 and st.size % channels == 0:
            shape = (channels, st.size // channels)
        level = type_as(x.type, CipherType).level
        t = CipherType(S, level, 1, Layout(shape, S, "strided", tuple(source.tolist())))
        y = x
        for shifts in sum_rounds(st.taps):
            rotated = [self._emit("rotate", [y], t, st.origin, {"k": int(d)}) for d in shifts]
            for r in rotated:
                y = self._emit("add", [y, r], t, st.origin)
        return y

    def _map_cost(
        self, A: sp.spmatrix, slot_of: np.ndarray, shape: tuple[int, ...], tensor: Value | None
    ) -> float:
        """``map_cost`` of ``A`` read at ``slot_of``, its output where ``output_layout`` puts it."""
        A = A.tocoo()
        keep = np.abs(A.data) >= self.negligible
        rows, read = A.row[keep], slot_of[A.col[keep]]
        if rows.size == 0:
            return 0.0
        _, rows_slot = self.output_layout(rows, read, shape, tensor)
        extent = int(rows_slot.max()) + 1
        return map_cost((read - rows_slot[rows]) % self.slots, self.slots, extent, self.fold)

    def _design_input(
        self, x: Value, A: sp.coo_matrix, shape: tuple[int, ...], origin: str
    ) -> np.ndarray:
        """Give the input ``x`` the layout ``input_layout`` designed for map ``A`` (of layer
        ``origin``); the slots the non-zeros of ``A`` read."""
        if self.input_layout == "im2col":
            need = im2col_slots(A.row, A.col, A.shape[0])
            if need > self.slots:
                terms = int(np.bincount(A.row).max()) if A.nnz else 1
                raise _MoreSlots(need, origin, terms, A.shape[0])
        layout, read = design_input_layout(
            self.input_layout, A.row, A.col, layout_of(x.type).shape, shape, self.slots
        )
        xt = type_as(x.type, CipherType)
        x.type = CipherType(self.slots, xt.level, xt.scale_deg, layout)
        self.input_fixed = self.designed = True
        return read


def _read_by_maps_only(graph: Graph) -> set[int]:
    """Ids of the tensors whose every reader is a linear op, or a polynomial whose result is
    itself read by linear ops only: such a tensor may sit in any layout (maps read it through
    its layout, and polynomials act slot by slot). Graph outputs are not among them."""
    free: set[int] = set()
    outputs = {id(v) for v in graph.outputs}
    for op in reversed(graph.ops):  # readers come after: decided before their inputs
        for v in op.results:
            if id(v) in outputs or not v.uses:
                continue
            if all(
                u.kind in LINEAR_KINDS or (u.kind == "poly" and id(u.result) in free)
                for u in v.uses
            ):
                free.add(id(v))
    return free
