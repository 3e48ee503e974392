"""choose-kernels: decide how each ``matvec`` is evaluated and record it on the op.

The kernel of a linear map is a decision, made once, here, and read by every later pass and by
the reports: ``kernel="bsgs"`` (baby-step/giant-step with ``baby_step`` n1, the offsets in their
``signed`` representation or not) or ``kernel="folded"`` (a short map evaluated as merged
diagonals and a block sum of ``block`` slots, ``FoldPlan``; with ``lane``, in lanes of that
many slots) or ``kernel="paired"`` (two copies ``shift`` slots apart). A map the lowering made
periodic (attribute ``period``) keeps its fold in halves. ``schedule-rotations`` then expands
each map as its attributes say, and ``print(graph)`` between the two shows every decision.
The other kernels are visible in the IR already: a stencil sum is its rotate/add ops, the copies
readout its ``readout`` op, anchored and strided outputs the layouts of the values.

Preserves: the program (attributes only). Requires: a slot graph with ``matvec`` ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hec.ir import Graph
from hec.passes.schedule_rotations import choose_kernel

__all__ = ["ChooseKernels"]


@dataclass(frozen=True)
class ChooseKernels:
    """Record each ``matvec``'s kernel (``schedule_rotations.choose_kernel``).

    Args:
        baby_step: force ``n1`` for every map (and no folding); ``None`` searches it per map.
        block_local: the offsets are exact shifts of a sample-block program (one way to write
            them, no folding).
        fold: maps with few output rows may be folded where that needs fewer rotations.
    """

    baby_step: int | None = None
    block_local: bool = False
    fold: bool = True
    name: ClassVar[str] = "choose-kernels"
    dialect: ClassVar[str] = "slot"

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in graph.ops:
            if op.kind == "matvec":
                op.attrs.update(choose_kernel(op, self.baby_step, self.block_local, self.fold))
                changed = True
        return changed
