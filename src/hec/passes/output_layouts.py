"""Output layouts of linear maps: keep a map's output on the grid its input is read at.

A fused map ``y = A x`` costs one plaintext multiply per distinct offset ``read slot - output
slot`` (``lower-to-slots``). With the output laid out contiguously, a map whose input rows are
wider than its output rows (a strided convolution, a pooling followed by a convolution) shifts
every output row by a different amount: LeNet-5's pool1+conv2 reads 28-wide rows at stride 2 and
writes 10-wide rows, so each conv2 weight lands on ~220 diagonals (``46y + x`` for its 100
output positions times the 4 pool taps).

A **strided** output layout (multiplexed packing) instead places output element
``(o, i_1, .., i_d)`` at slot ``t_o + Σ g_j·i_j``: the grid ``g`` is the step the map's input
reads advance by per output position, so ``read slot - output slot`` no longer depends on the
position and a weight sits on as many diagonals as it has terms per output (the pool taps).
Each channel ``o`` gets the lowest start ``t_o`` whose grid hits no slot an earlier channel
took (first fit: channels interleave in the gaps of the grid, then stack).

The grid is read off the map (the most common step of the lowest slot each output row reads),
so it does not depend on which weights are zero. Unused slots hold zeros (no row of the matrix
writes them) or, after an element-wise polynomial, garbage that no later map reads: a map reads
its input only through its layout. The choice is made per map, by the cost of the schedule
``schedule-rotations`` will give it (rotations, plaintext multiplies): fewer diagonals are not
always cheaper, since a contiguous output of few rows folds (one plaintext per offset residue
``k mod B``) where a strided one, spread over more slots, may not.

Preserves: the map exactly (``A`` is unchanged; only where its outputs sit).
"""

from __future__ import annotations

import numpy as np

from hec.ir import Layout
from hec.passes.schedule_rotations import FoldPlan, choose_split, split_cost

OUTPUT_LAYOUTS = ("auto", "strided", "contiguous")

__all__ = [
    "OUTPUT_LAYOUTS",
    "strided_output_slots",
    "choose_output_layout",
    "count_offsets",
    "map_cost",
]

# one plaintext multiply costs about 1/30 of a rotation (ENVIRONMENT.md: 0.6 vs 21 ms at ring
# 2^14, 4.4 vs 132 ms at 2^15)
_PT_MUL_PER_ROTATION = 1 / 30


def map_cost(offsets: np.ndarray, slots: int, extent: int, fold: bool = True) -> float:
    """Rotations + plaintext multiplies / 30 of a map with these diagonal ``offsets`` whose
    output uses slots ``0 .. extent-1``: plain baby-step/giant-step, or folded per residue
    ``k mod B`` when the scheduler folds it (the estimate ``schedule-rotations`` decides by)."""
    ks = np.unique(np.asarray(offsets, dtype=np.int64) % slots)
    n1, rep = choose_split(ks, slots)
    plain = sum(split_cost(rep, n1, slots))
    best = plain + _PT_MUL_PER_ROTATION * ks.size
    block = 1 << max(extent - 1, 0).bit_length()
    if fold and block <= slots // 2:
        merged = np.unique(ks % block)
        n1, rep = choose_split(merged, slots)
        blocks = tuple(sorted({int(v) for v in ks // block}))
        probe = FoldPlan(block, merged, np.empty((0, slots)), np.empty(0), blocks, slots, n1, rep)
        inner = sum(split_cost(rep, n1, slots)) + probe.rotations()
        if inner < plain:
            best = inner + _PT_MUL_PER_ROTATION * merged.size
    return best


def count_offsets(rows_slot: np.ndarray, read: np.ndarray, slots: int) -> int:
    """Distinct diagonal offsets ``(read - row) mod slots`` of a map's non-zeros."""
    return int(np.unique((read - rows_slot) % slots).size)


def strided_output_slots(
    rows: np.ndarray, read: np.ndarray, shape: tuple[int, ...], slots: int
) -> np.ndarray | None:
    """Slots for the elements of an output of ``shape`` (channel first) on its input's grid.

    ``rows[i]`` is the output element of non-zero ``i`` and ``read[i]`` the input slot it
    reads. Returns one slot per output element, or ``None`` when the output has no spatial
    axes, no regular grid, or does not fit ``slots``.
    """
    if len(shape) < 2 or rows.size == 0:
        return None
    channels, spatial = shape[0], shape[1:]
    n = int(np.prod(shape))
    anchor = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(anchor, rows, read.astype(np.int64))
    has = anchor != np.iinfo(np.int64).max
    grid_of = anchor.reshape(shape)
    alive = has.reshape(shape)
    steps = []
    for axis in range(1, len(shape)):
        if shape[axis] == 1:
            steps.append(0)
            continue
        lo = [slice(None)] * len(shape)
        hi = [slice(None)] * len(shape)
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        both = alive[tuple(lo)] & alive[tuple(hi)]
        diffs = (grid_of[tuple(hi)] - grid_of[tuple(lo)])[both]
        diffs = diffs[diffs > 0]
        if diffs.size == 0:
            return None
        values, counts = np.unique(diffs, return_counts=True)
        steps.append(int(values[np.argmax(counts)]))
    index = np.indices(spatial).reshape(len(spatial), -1)
    grid = np.asarray(steps, dtype=np.int64) @ index  # slot offset of each position
    if np.unique(grid).size != grid.size:  # positions would share a slot
        return None
    span = int(grid.max()) + 1
    if span > slots:
        return None
    taken = np.zeros(slots, dtype=bool)
    starts = np.empty(channels, dtype=np.int64)
    for o in range(channels):
        used = np.flatnonzero(taken)
        bad = np.zeros(slots - span + 1, dtype=bool)
        hits = np.subtract.outer(used, grid).ravel()
        bad[hits[(hits >= 0) & (hits < bad.size)]] = True
        free = np.flatnonzero(~bad)
        if free.size == 0:
            return None
        starts[o] = free[0]
        taken[starts[o] + grid] = True
    return (starts[:, None] + grid[None, :]).ravel()


def choose_output_layout(
    rows: np.ndarray,
    read: np.ndarray,
    shape: tuple[int, ...],
    slots: int,
    prefer: str = "cost",
    fold: bool = True,
) -> tuple[Layout, np.ndarray]:
    """The output layout of a map: contiguous or strided.

    ``prefer``: ``"cost"`` keeps the cheaper by ``map_cost`` (ties: contiguous);
    ``"strided"`` takes the strided one wherever the map has one.
    Returns ``(layout, rows_slot)`` with ``rows_slot[e]`` the slot of output element ``e``.
    """
    n = int(np.prod(shape))
    contiguous = np.arange(n)
    strided = strided_output_slots(rows, read, shape, slots)
    if strided is None:
        return Layout(shape, slots), contiguous
    if prefer == "cost":
        cost_c = map_cost((read - rows) % slots, slots, n, fold)
        k_s = (read - strided[rows]) % slots
        cost_s = map_cost(k_s, slots, int(strided.max()) + 1, fold)
        if cost_s >= cost_c:
            return Layout(shape, slots), contiguous
    source = np.full(slots, -1, dtype=np.int64)
    source[strided] = np.arange(n)
    return Layout(shape, slots, "strided", tuple(int(s) for s in source)), strided
