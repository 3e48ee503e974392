"""expand-copies: run the program on one copy of the input per output, and read each output
from its own copy.

An output layer of ``K`` outputs over ``n`` features, as a map, puts ``K·n`` products into
``K`` slots: its diagonals cost rotations (LeNet-5's last layer after pruning: 12 of 17). When
the client packs ``C >= K`` copies of the input side by side (``C`` a power of two, each copy
in the ``S`` slots of the program), every rotation of the whole ciphertext rotates each copy
within itself: copy ``b`` at ``b·S + i`` reads ``b·S + i + k``, and where that passes the end
of the copy it reads the next copy, which holds the same numbers at ``i + k - S``, exactly
what the ``S``-slot rotation reads (the last copy wraps to the first). So the ``S``-slot
program, every constant repeated ``C`` times, computes the same thing in every copy, for the
same rotations. Only the ``readout`` op differs per copy: copy ``b`` multiplies by row ``b`` of
the output layer (one plaintext for all copies, zero off the features), and the products
within each copy are summed into slot ``b·S + anchor`` by rotate-and-add rounds
(``readout_plan``): about ``log2`` of the features' spread, whatever the number of outputs
or weights. The rounds read only the copy's own slots, so the copies never mix.

Preserves: the function (each output is the same dot product, summed in another order).
Requires: a scheduled slot graph with at most one ``readout`` op, its result the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hec.ir import CipherType, Graph, Layout, Op, Value
from hec.ir.types import type_as
from hec.passes.stencil_sums import tree_rounds

__all__ = ["ExpandCopies", "copies_for", "readout_plan"]

_REPEATED = ("p", "diags", "bias")  # per-slot constants of the body's ops


@dataclass(frozen=True)
class ExpandCopies:
    """Widen the program to ``copies`` repeats and expand its ``readout`` op."""

    name: ClassVar[str] = "expand-copies"
    dialect: ClassVar[str] = "slot"

    def run(self, graph: Graph) -> bool:
        readouts = [op for op in graph.ops if op.kind == "readout"]
        if not readouts:
            return False
        (readout,) = readouts
        copies = readout.attrs["copies"]
        for v in graph.values():
            if v is not readout.result:
                v.type = _widened(v.type, copies)
        for op in graph.ops:
            if op is not readout:
                op.consts = {
                    k: np.tile(c, copies) if k in _REPEATED else c for k, c in op.consts.items()
                }
        i = graph.ops.index(readout)
        new_ops, result = _expand(readout)
        graph.ops[i : i + 1] = new_ops
        readout.inputs[0].uses.remove(readout)
        graph.replace_all_uses_with(readout.result, result)
        graph.outputs = [result if v is readout.result else v for v in graph.outputs]
        return True


def copies_for(outputs: int) -> int:
    """Copies of the input a copies readout of ``outputs`` outputs packs: a power of two, so
    that they divide the ciphertext's slots."""
    return 1 << (outputs - 1).bit_length()


def readout_plan(used: np.ndarray, slots: int) -> tuple[int, tuple[tuple[int, ...], ...]]:
    """Where each copy's sum lands (its anchor slot) and the rotate-and-add rounds that sum
    the copy's products, which lie at the slots ``used`` (sorted) and are zero at the others.

    The rounds may read any slot of the copy, never the next one (another output's
    products): from the first product on (``tree_rounds``), or, where that is cheaper,
    ``log2`` doublings over a window of the copy that holds every product."""
    if used.size == 0:
        return 0, ()
    first = int(used[0])
    taps = tuple(int(s) - first for s in used)
    best = first, tuple(tree_rounds(taps, slots - first))
    doublings = max(taps[-1], 1).bit_length()
    start = min(first, slots - (1 << doublings))
    if doublings < sum(map(len, best[1])):
        best = start, tuple((1 << i,) for i in range(doublings))
    return best


def _widened(t, copies: int):
    if not isinstance(t, CipherType):
        return t
    layout = t.layout
    if layout is not None:
        source = (
            np.asarray(layout.source)
            if layout.source is not None
            else np.concatenate([np.arange(layout.size), np.full(t.slots - layout.size, -1)])
        )
        kind = "replicated" if layout.kind == "contiguous" else layout.kind
        layout = Layout(
            layout.shape, t.slots * copies, kind, tuple(np.tile(source, copies).tolist())
        )
    return CipherType(t.slots * copies, t.level, t.scale_deg, layout)


def _expand(op: Op) -> tuple[list[Op], Value]:
    """``z = w ⊙ x`` (row ``b`` of the weights in copy ``b``), rescaled; the rounds; bias."""
    x = op.inputs[0]
    weights, bias, anchor = op.consts["weights"], op.consts["bias"], op.attrs["anchor"]
    n, S = weights.shape
    xt = type_as(x.type, CipherType)
    N = xt.slots  # already widened
    level = xt.level
    ops: list[Op] = []

    def emit(kind, inputs, scale_deg, lvl, attrs=None, consts=None) -> Value:
        new = Op(kind, inputs, [CipherType(N, lvl, scale_deg)], attrs, consts, op.origin)
        ops.append(new)
        return new.result

    w = np.zeros(N)
    w[: n * S] = weights.ravel()
    y = emit("mul_plain", [x], 2, level, consts={"p": w})
    y = emit("rescale", [y], 1, level + 1)
    for shifts in op.attrs["rounds"]:
        rotated = [emit("rotate", [y], 1, level + 1, {"k": int(d)}) for d in shifts]
        for r in rotated:
            y = emit("add", [y, r], 1, level + 1)
    if bias.any():
        b = np.zeros(N)
        b[np.arange(n) * S + anchor] = bias
        y = emit("add_plain", [y], 1, level + 1, consts={"p": b})
    y.type = op.result.type
    return ops, y
