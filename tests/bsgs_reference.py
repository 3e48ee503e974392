"""Test helpers for rotation scheduling: a one-``matvec`` slot graph, and the baby-step/giant-step
optimum of a diagonal set by brute force, independent of the scheduler: for every ``n1`` in
``1 .. slots`` and both ways of writing an offset (``[0, slots)`` and ``(-slots/2, slots/2]``),
the rotations are the distinct non-zero baby steps ``k mod n1`` plus the distinct giant steps
``⌊k/n1⌋·n1`` that move something (non-zero modulo ``slots``)."""

from __future__ import annotations

import numpy as np

from hec.ir import CipherType, Graph, Layout


def matvec_graph(slots: int, offsets, seed: int = 0) -> Graph:
    """A slot graph of one ``matvec`` with random diagonals at ``offsets`` and a random bias."""
    rng = np.random.default_rng(seed)
    g = Graph("m", "slot")
    x = g.add_input("x", CipherType(slots, 0, 1, Layout((slots,), slots)))
    y = g.add(
        "matvec",
        [x],
        CipherType(slots, 1, 1, Layout((slots,), slots)),
        {"offsets": tuple(int(k) for k in offsets)},
        {"diags": rng.normal(size=(len(offsets), slots)), "bias": rng.normal(size=slots)},
    )
    g.outputs = [y]
    return g


def bsgs_optimum(offsets: np.ndarray, slots: int) -> int:
    """The fewest rotations any split ``k = g·n1 + b`` needs for this diagonal set."""
    ks = np.asarray(offsets, dtype=np.int64) % slots
    best = None
    for rep in (ks, np.where(ks > slots // 2, ks - slots, ks)):
        for n1 in range(1, slots + 1):
            babies = np.count_nonzero(np.unique(rep % n1))
            giants = np.count_nonzero(np.unique(rep // n1) * n1 % slots)
            best = babies + giants if best is None else min(best, babies + giants)
    return int(best)
