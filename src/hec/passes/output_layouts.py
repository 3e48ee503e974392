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
so it does not depend on which weights are zero. A **tiled** strided layout puts the channel
blocks a power of two apart, each channel on a sub-position of the grid's cell, so that the
next map's offsets wrap around the blocks (kept where it costs this map no more).

A map folded in halves leaves its output in both halves (``make_periodic``); a map reading
such a **periodic** input reads either copy, and a dense one puts its outputs in **lanes**
(``lanes_output_slots``) that fold at half the plaintexts.

An output without spatial axes (a fully connected layer's neurons) has no grid. When every
neuron reads few slots (at most ``ANCHOR_READS``: a pruned layer), an **anchored** layout puts
neuron ``r`` on one of the slots it reads (its anchor), the anchors chosen so that ``read slot -
anchor`` takes as few values as possible: a layer left with one input per neuron (``x_r ↦
w_r·x_σ(r) + b_r``) then has the single diagonal 0 and needs no rotation, where contiguous
outputs put each neuron on its own offset (LeNet-5's fc1 and fc2 pruned to one input a neuron:
24 and 21 rotations contiguous, 0 anchored). Unused slots hold zeros (no row of the matrix
writes them) or, after an element-wise polynomial, garbage that no later map reads: a map reads
its input only through its layout. The choice is made per map, by the cost of the schedule
``schedule-rotations`` will give it (rotations, plaintext multiplies): fewer diagonals are not
always cheaper, since a contiguous output of few rows folds (one plaintext per offset residue
``k mod B``) where a strided one, spread over more slots, may not.

Preserves: the map exactly (``A`` is unchanged; only where its outputs sit).
"""

from __future__ import annotations

import numpy as np

from hec.ir import CipherType, Layout, Value
from hec.ir.types import type_as
from hec.passes.schedule_rotations import (
    KERNEL,
    PT_MUL_PER_ROTATION,
    best_pair_shift,
    choose_kernel,
    choose_split,
    fold_probe,
    fold_shapes,
    split_cost,
)

OUTPUT_LAYOUTS = ("auto", "anchored", "strided", "contiguous")

# an anchored layout is tried where no neuron reads more slots than this (its anchor search is
# quadratic in them, and a denser layer gains nothing: its offsets are all the differences)
ANCHOR_READS = 16

__all__ = [
    "OUTPUT_LAYOUTS",
    "strided_output_slots",
    "anchored_output_slots",
    "may_anchor",
    "choose_output_layout",
    "count_offsets",
    "map_cost",
    "lanes_output_slots",
    "layout_period",
    "make_periodic",
    "periodic_reads",
]


def map_cost(offsets: np.ndarray, slots: int, extent: int | np.ndarray, fold: bool = True) -> float:
    """Rotations + plaintext multiplies / 30 of a map with these diagonal ``offsets`` whose
    output uses slots ``0 .. extent-1`` (or the slots ``extent`` lists): plain
    baby-step/giant-step, folded (in lanes where the output sits in them) when the scheduler
    folds it, or paired (the estimates ``choose-kernels`` decides by)."""
    ks = np.unique(np.asarray(offsets, dtype=np.int64) % slots)
    n1, rep = choose_split(ks, slots)
    plain = sum(split_cost(rep, n1, slots))
    best = plain + PT_MUL_PER_ROTATION * ks.size
    rows = np.arange(extent) if isinstance(extent, int) else np.asarray(extent, dtype=np.int64)
    if fold:
        for period, block in fold_shapes(ks, rows, slots):
            probe = fold_probe(ks, slots, block, period)
            inner = sum(split_cost(probe.ks, probe.n1, slots)) + probe.rotations()
            if inner < plain:
                best = min(best, inner + PT_MUL_PER_ROTATION * probe.offsets.size)
        paired = best_pair_shift(ks, slots, int(rows.max()) + 1 if rows.size else 0)
        if paired is not None:
            best = min(best, paired[3])
    return best


def count_offsets(rows_slot: np.ndarray, read: np.ndarray, slots: int) -> int:
    """Distinct diagonal offsets ``(read - row) mod slots`` of a map's non-zeros."""
    return int(np.unique((read - rows_slot) % slots).size)


def strided_output_slots(
    rows: np.ndarray,
    read: np.ndarray,
    shape: tuple[int, ...],
    slots: int,
    prefer: np.ndarray | None = None,
    tiled: bool = False,
) -> np.ndarray | None:
    """Slots for the elements of an output of ``shape`` (channel first) on its input's grid.

    ``rows[i]`` is the output element of non-zero ``i`` and ``read[i]`` the input slot it
    reads. Channels go into the first gap of the grid, or at ``prefer[o]`` (a start slot, -1:
    none) where that is free; ``tiled``: within power-of-two tiles (a block of channels that
    fills a tile's gaps, then the next tile), so that the blocks sit a power of two apart
    and a rotation by whole tiles turns them around cyclically. Returns one slot per output
    element, or ``None`` when the output has no spatial axes, no regular grid, or does not
    fit ``slots``.
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
    tile = 1 << (span - 1).bit_length()
    if tiled and tile >= slots:
        return None
    cells = _cell_starts(steps, spatial, tile, slots) if tiled else None
    starts = _first_fit(grid, span, channels, slots, prefer, tile if tiled else None, cells)
    if starts is None:
        return None
    return (starts[:, None] + grid[None, :]).ravel()


def _first_fit(
    grid: np.ndarray,
    span: int,
    channels: int,
    slots: int,
    prefer: np.ndarray | None,
    tile: int | None,
    cells: np.ndarray | None = None,
) -> np.ndarray | None:
    """Start slots of ``channels`` copies of ``grid``, each the lowest that hits no slot an
    earlier one took (or ``prefer[o]`` where free); with ``tile``, a copy lies within one
    ``tile``-slot block (``[t·tile, (t+1)·tile)``), and the ``cells`` starts are tried first,
    in their order. ``None``: they do not fit.

    Copies at ``s`` and ``s'`` share a slot exactly when ``s - s'`` is a difference of two grid
    offsets, so each placed copy rules out ``s + D`` (``D``: those differences) at once."""
    size = slots - span + 1
    bad = np.zeros(size, dtype=bool) if tile is None else np.arange(size) % tile + span > tile
    diffs = _differences(grid, span)
    rank = None
    if cells is not None:  # the cell's sub-positions first, tile by tile
        rank = np.full(size, cells.size, dtype=np.int64)
        inside = cells < size
        rank[cells[inside]] = np.flatnonzero(inside)
    starts = np.empty(channels, dtype=np.int64)
    for o in range(channels):
        want = -1 if prefer is None else int(prefer[o])
        if not (0 <= want < size and not bad[want]):
            free = np.flatnonzero(~bad)
            if free.size == 0:
                return None
            want = int(free[0] if rank is None else free[np.argmin(rank[free])])
        starts[o] = want
        hit = want + diffs
        bad[hit[(hit >= 0) & (hit < size)]] = True
    return starts


def _differences(grid: np.ndarray, span: int) -> np.ndarray:
    """Every ``g - g'`` of two offsets of ``grid`` (within ``[0, span)``): an
    autocorrelation, so a large grid costs a transform, not its square."""
    present = np.zeros(2 * span)
    present[grid] = 1.0
    spectrum = np.fft.rfft(present)
    counts = np.fft.irfft(spectrum * spectrum.conj(), 2 * span)
    lags = np.flatnonzero(np.rint(counts) > 0)  # lag l: some g - g' = l (mod 2·span)
    return np.where(lags >= span, lags - 2 * span, lags)


def anchored_output_slots(
    rows: np.ndarray, read: np.ndarray, size: int, slots: int
) -> np.ndarray | None:
    """One slot per output element, each neuron on a slot it reads (its anchor).

    ``rows[i]`` is the output element of non-zero ``i`` and ``read[i]`` the input slot it reads.
    Anchors start at each neuron's lowest read slot; then, twice, each neuron moves to the read
    slot under which its offsets ``read - anchor`` are the most common ones of the others (a
    vote), and anchors stay distinct (a neuron whose slots are all taken keeps none and the
    layout does not apply). Neurons that read nothing take the lowest free slots. Returns
    ``None`` when a neuron reads more than ``ANCHOR_READS`` slots or the anchors collide.
    """
    if rows.size == 0:
        return None
    order = np.lexsort((read, rows))
    rows, read = rows[order], read[order].astype(np.int64)
    pairs = np.unique(np.stack([rows, read]), axis=1)  # one entry per (row, slot)
    rows, read = pairs[0], pairs[1]
    counts = np.bincount(rows, minlength=size)
    if counts.max() > ANCHOR_READS:
        return None
    starts = np.concatenate([[0], np.cumsum(counts)])
    reading = np.flatnonzero(counts)
    anchor = np.full(size, -1, dtype=np.int64)
    anchor[reading] = read[starts[reading]]
    for _ in range(2):
        values, tally = np.unique((read - anchor[rows]) % slots, return_counts=True)
        votes = dict(zip(values.tolist(), tally.tolist(), strict=True))
        taken: set[int] = set()
        for r in sorted(reading, key=lambda r: (counts[r], r)):  # fewest choices first
            mine = read[starts[r] : starts[r + 1]]
            own = set(((mine - anchor[r]) % slots).tolist())  # this neuron's own votes
            best, best_score = -1, -1
            for a in mine.tolist():
                k = ((mine - a) % slots).tolist()
                score = sum(votes.get(v, 0) - (v in own) for v in k)
                if a not in taken and score > best_score:
                    best, best_score = a, score
            if best < 0:
                return None
            anchor[r] = best
            taken.add(best)
    free = np.setdiff1d(np.arange(slots), anchor[reading], assume_unique=False)
    idle = np.flatnonzero(counts == 0)
    if free.size < idle.size:
        return None
    anchor[idle] = free[: idle.size]
    return anchor


def may_anchor(graph) -> bool:
    """Whether an anchored layout may apply: some dense layer (``matmul``) has no neuron
    reading more than ``ANCHOR_READS`` inputs (a pruned one; an unpruned layer never does)."""
    for op in graph.ops:
        if op.kind == "matmul" and "weight" in op.consts:
            reads = np.count_nonzero(op.consts["weight"], axis=0)
            if reads.size and int(reads.max()) <= ANCHOR_READS:
                return True
    return False


def one_channel_starts(
    rows: np.ndarray,
    cols: np.ndarray,
    read: np.ndarray,
    shape: tuple[int, ...],
    source: Layout,
) -> np.ndarray | None:
    """Per output channel of a map (non-zeros ``rows``, ``cols`` over its source tensor laid
    out as ``source``, read at slots ``read``): where a channel reading one source channel
    only starts on that channel's grid, else -1. Placed there, depthwise filters' outputs
    share their inputs' grids, so each weight's offset is its tap alone, the same for every
    such filter; all are shifted by the smallest kept tap, whose offset is then 0 (no
    rotation)."""
    if len(shape) < 2 or len(source.shape) < 2 or rows.size == 0:
        return None
    per_out, per_in = int(np.prod(shape[1:])), int(np.prod(source.shape[1:]))
    out_ch, in_ch = rows // per_out, cols // per_in
    first = source.slot_of_element()
    starts = np.full(shape[0], -1, dtype=np.int64)
    shift = None
    for o in np.unique(out_ch):
        mine = out_ch == o
        channel = np.unique(in_ch[mine])
        if channel.size == 1:
            starts[o] = first[channel[0] * per_in]
            tap = int(read[mine].min()) - int(starts[o])
            shift = tap if shift is None else min(shift, tap)
    if shift is None:
        return None
    return np.where(starts >= 0, starts + shift, -1)


def choose_output_layout(
    rows: np.ndarray,
    read: np.ndarray,
    shape: tuple[int, ...],
    slots: int,
    prefer: str = "cost",
    fold: bool = True,
    anchor: bool = False,
    starts: np.ndarray | None = None,
    period: int = 0,
) -> tuple[Layout, np.ndarray]:
    """The output layout of a map: contiguous or strided.

    ``prefer``: ``"cost"`` keeps the cheaper by ``map_cost`` (ties: contiguous);
    ``"strided"`` takes the strided one wherever the map has one. ``anchor``: an output
    without spatial axes may take an anchored layout (its anchors depend on which weights are
    zero, so the compiler tries it as a whole-program alternative, and pruning only where it
    has made the layers sparse itself). ``starts``: preferred start slots of a strided
    layout's channels (``strided_output_slots``'s ``prefer``). ``period``: the map reads a
    ``period``-periodic input (``layout_period``), so an output without a grid may sit in
    lanes (``lanes_output_slots``).
    Returns ``(layout, rows_slot)`` with ``rows_slot[e]`` the slot of output element ``e``.
    """
    n = int(np.prod(shape))
    contiguous = np.arange(n)
    strided = strided_output_slots(rows, read, shape, slots, starts)
    tiled = (
        None if strided is None else strided_output_slots(rows, read, shape, slots, starts, True)
    )
    if strided is None and len(shape) == 1 and anchor:
        strided = anchored_output_slots(rows, read, n, slots)
    lanes = strided is None and period > 0
    if lanes:
        strided = lanes_output_slots(n, slots, period)
    if strided is None:
        return Layout(shape, slots), contiguous

    def cost(at: np.ndarray, extent: int | np.ndarray) -> float:
        r = at[rows]
        k = ((periodic_reads(r, read, period) if period else read) - r) % slots
        return map_cost(k, slots, extent, fold)

    cost_s = cost(strided, strided if lanes else int(strided.max()) + 1)
    if tiled is not None and not np.array_equal(tiled, strided):
        # tiles that fill the ciphertext help the next map (its offsets wrap around the
        # blocks); otherwise they only spread the output: taken where this map costs less
        cost_t = cost(tiled, int(tiled.max()) + 1)
        if cost_t < cost_s or (cost_t == cost_s and _fills_tiles(tiled, shape[0], slots)):
            strided, cost_s = tiled, cost_t
    if prefer == "cost" and cost_s >= cost(contiguous, n):
        return Layout(shape, slots), contiguous
    source = np.full(slots, -1, dtype=np.int64)
    source[strided] = np.arange(n)
    return Layout(shape, slots, "strided", tuple(int(s) for s in source)), strided


def _cell_starts(
    steps: list[int], spatial: tuple[int, ...], tile: int, slots: int
) -> np.ndarray | None:
    """The gap positions of a grid's cell, tile by tile: along each axis (outermost first)
    multiples of ``u``, the inner axes' extent rounded up to a power of two where that
    divides the step (else the extent itself), ``step / u`` of them. A conv on rows padded
    to 32 slots (steps 64 and 2) gets ``{0, 1, 32, 33}`` + ``1024·t``, where the lowest free
    start would take 28 (a row's free end) and mix rows. ``None``: no such lattice."""
    axes = [(g, n) for g, n in zip(steps, spatial, strict=True) if g > 0]
    if not axes:
        return None
    axes.sort(reverse=True)  # outermost (largest step) first
    offsets = np.zeros(1, dtype=np.int64)
    for i, (g, _) in enumerate(axes):
        inner = max((h * m for h, m in axes[i + 1 :]), default=1)
        unit = 1 << (inner - 1).bit_length()
        if g % unit:
            unit = inner
        if g % unit:
            return None
        offsets = (offsets[:, None] + unit * np.arange(g // unit)[None, :]).ravel()
    starts = (np.arange(0, slots, tile)[:, None] + np.sort(offsets)[None, :]).ravel()
    return starts[starts < slots]


def _fills_tiles(slot_of: np.ndarray, channels: int, slots: int) -> bool:
    """Whether a tiled strided layout (``strided_output_slots``) reaches the last tile."""
    first = slot_of.reshape(channels, -1)[0]
    tile = 1 << int(first.max() - first.min()).bit_length()
    return (int(slot_of.max()) // tile + 1) * tile == slots


def lanes_output_slots(n: int, slots: int, period: int) -> np.ndarray | None:
    """Slots for ``n`` outputs of a map reading a ``period``-periodic input: ``B`` (a power
    of two) at the start of each of the ``slots/period`` lanes, so that the map folds in
    lanes (``FoldPlan``) with ``B`` plaintexts instead of ``n``. ``None``: a lane would need
    more than half its slots."""
    lanes = slots // period
    block = 1 << (-(-n // lanes) - 1).bit_length()
    if block > period // 2:
        return None
    e = np.arange(n)
    return e % block + period * (e // block)


def layout_period(layout: Layout) -> int:
    """``slots/2`` when a map's output holds every element in both halves (``make_periodic``),
    else 0: a map reading it may then read either copy."""
    if layout.kind != "strided" or layout.source is None:
        return 0
    src = np.asarray(layout.source)
    half = layout.slots // 2
    return half if np.array_equal(src[:half], src[half:]) and src.max() >= 0 else 0


def periodic_reads(rows_slot: np.ndarray, read: np.ndarray, period: int) -> np.ndarray:
    """The copy of each read slot at offset ``0 .. period-1`` from its row's slot (a
    ``period``-periodic input holds the same element there)."""
    return rows_slot + (read - rows_slot) % period


def make_periodic(y: Value) -> bool:
    """Make the output of map ``y`` hold every element in both halves, where that is free.

    A map whose output sits in the first half and whose kernel folds it in halves (``folded``
    with block ``H = slots/2``, or ``paired`` with shift ``H``: the same merges) computes
    ``P + rot(P, H)`` when its offsets reach both halves, which is ``H``-periodic: the second
    half holds the first half's values. With its bias repeated too the output is a copy in
    each half (attribute ``period``; ``choose-kernels`` then keeps that fold), so the next map
    may read either copy: a dense layer after it folds in two lanes at half the plaintexts.
    Returns whether it did."""
    op = y.producer
    t = type_as(y.type, CipherType)
    layout, half = t.layout, t.slots // 2
    if op is None or layout is None:
        return False
    slot_of = layout.slot_of_element()
    if slot_of.size == 0 or int(slot_of.max()) >= half:
        return False
    kernel = choose_kernel(op, None, False)
    size = kernel.get("block", kernel.get("shift", 0))
    if kernel[KERNEL] not in ("folded", "paired") or size != half:
        return False
    ks = np.asarray(op.attrs["offsets"], dtype=np.int64) % t.slots
    if not (ks < half).any() or not (ks >= half).any():  # one half: P alone, not periodic
        return False
    source = np.full(t.slots, -1, dtype=np.int64)
    source[slot_of] = np.arange(slot_of.size)
    source[half:] = source[:half]
    bias = op.consts["bias"]
    bias[half:] = bias[:half]
    op.attrs["period"] = half
    periodic = Layout(layout.shape, t.slots, "strided", tuple(int(v) for v in source))
    y.type = CipherType(t.slots, t.level, t.scale_deg, periodic)
    return True
