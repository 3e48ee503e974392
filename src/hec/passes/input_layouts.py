"""Input layouts the client encodes: which slot of the input ciphertext holds which element.

The client packs the input before encrypting it, so the compiler may choose that packing to suit
the first linear map ``y = A x`` (rows: output elements in contiguous slots ``0 .. m-1``). A
layout here is designed together with the slot each non-zero ``A[r, c]`` reads (its *read
slot* ``s``); the map's diagonal offsets are then ``s - r``, so the design decides how many
diagonals, and thus rotations, the first layer costs:

- ``direct`` (contiguous): ``s = c``. A convolution with ``C`` output channels has one offset
  per (channel, kernel tap): channel ``o`` of the output sits ``o·HW`` slots further than the
  input it reads.
- ``replicated``: the input is copied once per output channel, copy ``o`` starting at slot
  ``o·HW`` (needs ``input size <= HW``, e.g. one input channel and 'same' padding); output
  channel ``o`` reads copy ``o``, so ``s - r`` no longer depends on ``o``: one offset per
  kernel tap (CryptoNets' convolution: 72 diagonals become 9).
- ``multiplexed``: the map's output keeps the multiplexed (strided) layout it would have read
  from a ``direct`` input (``output_layouts``: a strided convolution's channels interleaved in
  the gaps of its input's grid, in blocks of the input's size ``n``), and the input is copied
  once per such block, copy ``k`` at slots ``k·n ..``. Output slot ``t`` reads copy ``t // n``,
  so ``s - t = c - (t mod n)``: the offsets no longer depend on the block, only on the kernel
  tap and the channel's place in the gaps (Orion's LeNet-5 conv1, 1→32 channels 5×5 stride 2:
  288 diagonals and 52 rotations direct, 36 and 11 multiplexed). Needs the copies to fit.
  A copy's rows are padded to a power of two (``padded_rows``) and ``n`` is the padded size,
  or the next power of two where the output's blocks are tiled (``output_layouts``).
- ``im2col``: one slot per non-zero: the ``j``-th term of row ``r`` is read from slot
  ``j·m + r``, so every offset is a multiple of ``m`` (``K`` diagonals ``0, m, .., (K-1)·m``
  for ``K`` terms a row) and the split ``k = g·n1 + b`` is as regular as it gets; it needs
  ``K·m`` slots, which every later layer then works in.

No single ciphertext makes a convolution rotation-free: a slot of ``x ⊙ p`` depends on one
slot of ``x``, and each output needs ``K`` inputs, so ``K`` terms must meet in one slot.

Preserves: the map exactly (``A`` is unchanged; only where its inputs sit).
"""

from __future__ import annotations

import numpy as np

from hec.errors import LayoutError
from hec.ir import Layout

__all__ = [
    "INPUT_LAYOUTS",
    "design_input_layout",
    "multiplexed_input",
    "padded_rows",
    "NotApplicable",
]

INPUT_LAYOUTS = ("direct", "replicated", "multiplexed", "im2col")


class NotApplicable(LayoutError):
    """This input layout does not suit the model's first linear map (``auto`` skips it)."""


def design_input_layout(
    kind: str,
    rows: np.ndarray,
    cols: np.ndarray,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    slots: int,
) -> tuple[Layout, np.ndarray]:
    """The input layout ``kind`` for the first map's non-zeros ``(rows, cols)``.

    Returns ``(layout, read)`` with ``read[i]`` the slot non-zero ``i`` reads. ``slots`` is
    the slot count the layout must fit (``im2col`` may need more: see ``im2col_slots``).

    Raises:
        NotApplicable: the layout does not suit this map or does not fit ``slots``.
    """
    n = int(np.prod(in_shape))
    m = int(np.prod(out_shape))
    if kind == "replicated":
        if len(out_shape) < 2 or out_shape[0] < 2:
            raise NotApplicable("replicated input: the first layer has one output channel")
        block = m // out_shape[0]
        if n > block:
            raise NotApplicable(
                f"replicated input: {n} input elements do not fit the {block} slots of one "
                f"output channel (the copies would overlap)"
            )
        read = cols + (rows // block) * block
        source = np.full(slots, -1, dtype=np.int64)
        for o in range(out_shape[0]):  # full copies: every element of every copy is there
            source[o * block : o * block + n] = np.arange(n)
        return Layout(in_shape, slots, "replicated", tuple(source.tolist())), read
    if kind == "im2col":
        rank = _rank_in_row(rows, cols)
        need = im2col_slots(rows, cols, m)
        if need > slots:
            raise NotApplicable(f"im2col input: needs {need} slots, the program has {slots}")
        read = rank * m + rows
        source = np.full(slots, -1, dtype=np.int64)
        source[read] = cols
        return Layout(in_shape, slots, "im2col", tuple(source.tolist())), read
    raise ValueError(f"input layout {kind!r} is designed by the lowering itself")


def padded_rows(in_shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Where each element of an input of ``in_shape`` sits in one ``multiplexed`` copy: rows
    (the last axis) padded to a power of two, so that a map's row offsets are the bits of a
    slot offset (its baby-step/giant-step split then has a clean product of row and column
    steps), and the slots a copy takes."""
    n = int(np.prod(in_shape))
    width = int(in_shape[-1]) if in_shape else 1
    wide = 1 << (width - 1).bit_length()
    e = np.arange(n)
    return (e // width) * wide + e % width, n // width * wide


def multiplexed_input(
    out_slot: np.ndarray, cols: np.ndarray, in_shape: tuple[int, ...], slots: int
) -> tuple[Layout, np.ndarray]:
    """The ``multiplexed`` input layout for a first map whose non-zero ``i`` writes output
    slot ``out_slot[i]`` and reads input element ``cols[i]`` at ``padded_rows`` within a copy:
    one full copy of the input per block of the output. Returns ``(layout, read)`` as
    ``design_input_layout``.

    Raises:
        NotApplicable: the copies do not fit ``slots``.
    """
    at, n = padded_rows(in_shape)  # where each element sits in a copy, a copy's slots
    best = None
    for stride in sorted({n, 1 << (n - 1).bit_length()}):
        copies = int(out_slot.max()) // stride + 1 if out_slot.size else 1
        if copies < 2:
            raise NotApplicable("multiplexed input: the first map's output fits one input's slots")
        if copies * stride > slots:
            continue
        read = (out_slot // stride) * stride + at[cols]
        offsets = np.unique((read - out_slot) % slots).size
        if best is None or offsets < best[0]:
            best = (offsets, stride, copies, read)
    if best is None:
        raise NotApplicable(f"multiplexed input: the copies of {n} slots exceed the {slots} slots")
    _, stride, copies, read = best
    source = np.full(slots, -1, dtype=np.int64)
    for k in range(copies):  # full copies: every element of every copy is there
        source[k * stride + at] = np.arange(at.size)
    return Layout(in_shape, slots, "replicated", tuple(source.tolist())), read


def im2col_slots(rows: np.ndarray, cols: np.ndarray, m: int) -> int:
    """Slots an ``im2col`` input needs: a power of two holding ``K·m`` (``K`` terms a row)."""
    terms = int(np.bincount(rows).max()) if rows.size else 1
    return 1 << (terms * m - 1).bit_length()


def _rank_in_row(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rank[i]``: how many non-zeros of row ``rows[i]`` come before ``i`` (by column)."""
    order = np.lexsort((cols, rows))
    sorted_rows = rows[order]
    starts = np.searchsorted(sorted_rows, sorted_rows, side="left")
    rank = np.empty_like(rows)
    rank[order] = np.arange(rows.size) - starts
    return rank
