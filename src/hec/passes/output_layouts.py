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
its input only through its layout. The choice is made per map, by the count of diagonals.

Preserves: the map exactly (``A`` is unchanged; only where its outputs sit).
"""

from __future__ import annotations

import numpy as np

from hec.ir import Layout

__all__ = ["strided_output_slots", "choose_output_layout", "count_offsets"]


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
    rows: np.ndarray, read: np.ndarray, shape: tuple[int, ...], slots: int
) -> tuple[Layout, np.ndarray]:
    """The output layout with the fewer diagonals: contiguous or strided (ties: contiguous).

    Returns ``(layout, rows_slot)`` with ``rows_slot[e]`` the slot of output element ``e``.
    """
    n = int(np.prod(shape))
    contiguous = np.arange(n)
    strided = strided_output_slots(rows, read, shape, slots)
    if strided is None or count_offsets(strided[rows], read, slots) >= count_offsets(
        contiguous[rows], read, slots
    ):
        return Layout(shape, slots), contiguous
    source = np.full(slots, -1, dtype=np.int64)
    source[strided] = np.arange(n)
    return Layout(shape, slots, "strided", tuple(int(s) for s in source)), strided
