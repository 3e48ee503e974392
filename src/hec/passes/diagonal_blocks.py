"""Which weights feed which generalized diagonal: the blocks of slot-packing pruning.

Slot packing evaluates each fused chain of linear ops as ``y = Σ_k d_k ⊙ rot(x, k)`` over
the diagonals ``k`` of its slot matrix ``M`` (``lower-to-slots``). A diagonal costs a plaintext
multiply and a plaintext whatever the number of non-zeros on it, and it disappears only when
*every* weight that puts an entry on it is zero. So the blocks of pruning are read off the
map the lowering really builds, not derived by hand:

1. run the lowering's own walk (``chain_lowering``) and record each map it would emit, with
   its factors ``M = L · A_layer · R`` and the slot of every row and column;
2. tag the layer's weights (``w_i = i + 1``) and rebuild ``A_layer`` by probing the op
   (``affine_map``): each entry names the one weight it comes from (checked: conv and matmul
   entries are single weights);
3. an entry ``(j, k)`` of ``A_layer`` reaches ``M`` at rows ``L[:, j]`` × columns ``R[k, :]``;
   its diagonal is ``(slot(col) - slot(row)) mod slots``.

For a dense layer with contiguous layouts a diagonal is one weight per output row (a wrapped
diagonal of the weight matrix), and each weight is on one diagonal. For LeNet-5's fused
pool1+conv2 map each conv2 weight lands on 220 diagonals (the pool's 4 taps times the
``46y + x`` offsets of a 28-wide input read by a 10-wide output) when that map's output is
contiguous, so no small set of weights clears a diagonal; with the output on its input's grid
(``output_layouts``, what the blocks are read with by default) it lands on its 4 pool-tap
diagonals. The incidence, not a formula, says what pruning can save.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from hec.ir import PRUNABLE_KINDS, CipherType, Graph, Layout, Op, Value, affine_map
from hec.ir.types import layout_of, type_as
from hec.passes.chain_lowering import PendingMap
from hec.passes.input_layouts import NotApplicable, design_input_layout
from hec.passes.lower_to_slots import SlotLowering, min_slots
from hec.passes.stencil_sums import Stencil, stencil_rotations

__all__ = ["SlotMap", "LayerDiagonals", "slot_diagonals", "tagged_matrix"]


@dataclass
class SlotMap:
    """One fused linear map of the slot program: its origin and its diagonals' offsets."""

    origin: str
    offsets: np.ndarray  # sorted offsets of its diagonals
    slots: int
    prunable: bool  # whether its diagonals come from conv/matmul weights alone
    outputs: int = 0  # slots its result's layout spans (rows the scheduler must compute)
    sum_rotations: int = 0  # a folded map's block sum (rotations besides its offsets')
    stencil: int = 0  # a stencil sum's rotations (no diagonals; ``stencil_sums``)


@dataclass
class LayerDiagonals:
    """The incidence of one prunable layer's weights with its map's diagonals.

    ``pairs_weight[p]`` (flat index into the op's weight) puts non-zeros on diagonal
    ``pairs_diag[p]`` (an index into ``SlotMap.offsets`` of map ``map_index``).
    """

    op: Op
    map_index: int
    pairs_weight: np.ndarray
    pairs_diag: np.ndarray
    notes: list[str] = field(default_factory=list)


class _Recorder(SlotLowering):
    """The slot lowering's walk, recording each map instead of building its diagonals."""

    def __init__(
        self,
        graph: Graph,
        slots: int,
        output_layouts: str = "strided",
        input_layout: str = "direct",
        stencils: bool = False,
        anchor: bool = False,
        readout: str = "matrix",
    ) -> None:
        sums = "always" if stencils else "never"
        super().__init__(
            graph, slots, 0.0, output_layouts=output_layouts, stencil_sums=sums, readout=readout
        )
        self.anchor = anchor
        self.replicated = input_layout == "replicated"
        self.maps: list[tuple[PendingMap, np.ndarray, np.ndarray, int] | SlotMap] = []

    def materialize_pending(
        self, p: PendingMap, shape: tuple[int, ...], tensor: Value | None = None
    ) -> Value:
        free = tensor is not None and id(tensor) in self.free_layout
        if p.is_identity and (free or layout_of(p.src.type).kind != "strided"):
            return p.src  # as the lowering does
        if self.readout == "copies" and any(tensor is v for v in self.src_graph.outputs):
            return self._record_readout(p, shape)
        p = self.stencil_first(p, shape, tensor)
        cols = layout_of(p.src.type).slot_of_element()
        A = p.A.tocoo()
        level = type_as(p.src.type, CipherType).level + 1
        t = CipherType(self.slots, level, 1, Layout(shape, self.slots))
        if self.replicated and any(p.src is v for v in self.out.inputs):
            rows = self._replicated_rows(p, A, shape)
            if rows is not None:  # the output is contiguous, as the lowering makes it
                self.maps.append((p, rows, cols, int(np.prod(shape))))
                return self._emit("matvec", [p.src], t, p.origin)
        # the output layout the lowering would pick (the same choice, from the same map)
        layout, rows = self.output_layout(
            A.row, cols[A.col], shape, tensor, A.col, layout_of(p.src.type)
        )
        t = CipherType(self.slots, type_as(p.src.type, CipherType).level + 1, 1, layout)
        self.maps.append((p, rows, cols, int(rows.max()) + 1))
        return self._emit("matvec", [p.src], t, p.origin)

    def _record_readout(self, p: PendingMap, shape: tuple[int, ...]) -> Value:
        """The output layer on copies (``expand_copies``): its weights are no blocks (every
        weight is free), its rounds a fixed cost, counted as ``log2`` of the slots it reads
        (what a sum of that many needs at least): pruning the layers before it removes
        features, so what it will read is not known yet, and the compiled count corrects
        the estimate (``hec.prune`` prunes again under a budget moved by the difference)."""
        A = p.A.tocoo()
        used = np.unique(layout_of(p.src.type).slot_of_element()[A.col[A.data != 0]])
        empty = np.empty(0, dtype=np.int64)
        rotations = max(int(used.size) - 1, 0).bit_length()
        self.maps.append(SlotMap(p.origin, empty, self.slots, False, stencil=rotations))
        level = type_as(p.src.type, CipherType).level + 1
        t = CipherType(self.slots, level, 1, Layout(shape, self.slots))
        return self._emit("matvec", [p.src], t, p.origin)

    def emit_stencil(self, x: Value, st: Stencil) -> Value:
        empty = np.empty(0, dtype=np.int64)
        self.maps.append(
            SlotMap(st.origin, empty, self.slots, False, stencil=stencil_rotations(st.taps))
        )
        return super().emit_stencil(x, st)

    def _replicated_rows(
        self, p: PendingMap, A: sp.coo_matrix, shape: tuple[int, ...]
    ) -> np.ndarray | None:
        """The first map under the ``replicated`` input layout: row ``r`` of output channel
        ``o`` reads copy ``o`` of the input, at slot ``c + o·HW``, so its diagonal is
        ``c - (r mod HW)``: recorded as rows ``r mod HW`` over the plain input slots ``c``.
        ``None`` where that layout does not apply (the lowering then reads it directly)."""
        try:
            design_input_layout(
                "replicated", A.row, A.col, layout_of(p.src.type).shape, shape, self.slots
            )
        except NotApplicable:
            return None
        m = int(np.prod(shape))
        return np.arange(m) % (m // shape[0])


def slot_diagonals(
    graph: Graph,
    slots: int | None = None,
    output_layouts: str = "strided",
    input_layout: str = "direct",
    stencils: bool = False,
    anchor: bool = False,
    readout: str = "matrix",
) -> tuple[list[SlotMap], list[LayerDiagonals]]:
    """The maps of ``graph``'s slot lowering and, per conv/matmul op, its weight-diagonal
    incidence. ``graph`` must be HE-friendly (polynomial activations only).
    ``output_layouts``: as ``lower-to-slots``'s option (``strided``: wherever a map can).
    ``input_layout``: ``replicated`` reads the first map as that input layout makes it (one
    diagonal per kernel tap, not per channel and tap) where it applies; else ``direct``.
    ``stencils``: pools become stencil sums (``stencil_sums``, as ``always`` compiles them)
    whose maps hold their rotations; else they stay fused into the map after them.
    ``anchor``: a sparse dense layer's neurons sit on slots they read (``anchored`` outputs,
    what ``hec.api`` compiles where cheaper), so one input a neuron is one diagonal.
    ``readout``: ``copies``: the output layer is a fixed number of rotations (the rounds of
    ``expand_copies``), with no blocks to prune."""
    S = slots or min_slots(graph)
    rec = _Recorder(graph, S, output_layouts, input_layout, stencils, anchor, readout)
    rec.lower()
    by_origin = {op.origin: op for op in graph.ops if op.kind in PRUNABLE_KINDS}
    maps: list[SlotMap] = []
    layers: list[LayerDiagonals] = []
    for m, entry in enumerate(rec.maps):
        if isinstance(entry, SlotMap):  # a stencil sum: rotations, no diagonals
            maps.append(entry)
            continue
        p, rows, cols, outputs = entry
        found = [(j, o) for j, o in enumerate(p.origins) if o in by_origin]
        # a residual merges factors (no per-layer view): such a map stays as it is
        if not found or len(p.factors) != len(p.origins):
            A = p.A.tocoo()
            offsets = np.unique((cols[A.col] - rows[A.row]) % S)
            maps.append(SlotMap(p.origin, offsets, S, False, outputs))
            continue
        per_layer = []
        for j, origin in found:
            op = by_origin[origin]
            weight, diag_offset = _incidence(op, p, j, rows, cols, S)
            per_layer.append((op, weight, diag_offset))
        offsets = np.unique(np.concatenate([d for _, _, d in per_layer]))
        maps.append(SlotMap(p.origin, offsets, S, True, outputs))
        for op, weight, diag_offset in per_layer:
            layers.append(LayerDiagonals(op, m, weight, np.searchsorted(offsets, diag_offset)))
    return maps, layers


def _pattern(factors: list[tuple[sp.csr_matrix, np.ndarray]], n: int) -> sp.csr_matrix:
    """``|A_k| ··· |A_1|`` (absolute values, so no entry cancels), identity if empty."""
    out = sp.identity(n, format="csr")
    for A, _ in factors:
        out = (abs(sp.csr_matrix(A)) @ out).tocsr()
    return out


def tagged_matrix(op: Op) -> tuple[sp.coo_matrix, np.ndarray]:
    """``A_layer`` with weight ``i`` set to ``i + 1`` (no bias): entry value - 1 = weight index."""
    w = op.consts["weight"]
    tags = np.arange(1, w.size + 1, dtype=np.float64).reshape(w.shape)
    saved = op.consts
    try:
        op.consts = {"weight": tags}
        A, _ = affine_map(op)
        op.consts = {"weight": tags**2}
        A2, _ = affine_map(op)
    finally:
        op.consts = saved
    A, A2 = A.tocoo(), A2.tocsr()
    # one weight per entry iff squaring the tags squares the entries
    if not np.array_equal(np.asarray(A2[A.row, A.col]).ravel(), A.data**2):
        raise ValueError(f"{op.kind} ({op.origin}): an entry mixes several weights")
    return A, (A.data - 1).astype(np.int64)


def _incidence(
    op: Op, p: PendingMap, j: int, rows_slot: np.ndarray, cols_slot: np.ndarray, S: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``(weight index, diagonal offset)`` pairs of layer ``op`` (factor ``j`` of ``p``)."""
    A, widx = tagged_matrix(op)
    R = _pattern(list(p.factors[:j]), p.size)  # what feeds the layer, from the map's source
    L = _pattern(list(p.factors[j + 1 :]), A.shape[0]).tocsc()  # what follows it
    # expand every entry (j_e, k_e) into rows L[:, j_e] and then columns R[k_e, :]
    e1, out_rows = _expand(L.indptr, L.indices, A.row)
    e2, in_cols = _expand(R.indptr, R.indices, A.col[e1])
    w = widx[e1[e2]]
    k = (cols_slot[in_cols] - rows_slot[out_rows[e2]]) % S
    key = np.unique(w.astype(np.int64) * S + k)
    return key // S, key % S


def _expand(indptr: np.ndarray, indices: np.ndarray, which: np.ndarray):
    """For each ``which[e]``, the stored indices of row/column ``which[e]``: ``(e, index)``."""
    counts = indptr[which + 1] - indptr[which]
    e = np.repeat(np.arange(len(which)), counts)
    starts = np.repeat(indptr[which] - (np.cumsum(counts) - counts), counts)
    return e, indices[starts + np.arange(len(e))]
