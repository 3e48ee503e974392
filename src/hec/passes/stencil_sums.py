"""Stencil sums: an average pool evaluated by rotate-and-add, on its input's grid.

A pool fused into the map after it multiplies that map's diagonals by its taps: after LeNet-5's
2x2 pools every conv2 and fc1 weight sits on 4 diagonals (4 rotations and 4 plaintext
multiplies once the map is pruned thin). But a pool's matrix, read in slots, is a *stencil*:
every output ``r`` reads the slots ``anchor(r) + t`` for one set of taps ``T`` with one
coefficient ``c``. So

    y = Σ_{t ∈ T} rot(x, t)

holds ``pool(x) / c`` at slot ``anchor(r)`` for every ``r``: no plaintext multiply, no level,
and ``T = {0, 1} ⊕ {0, w}`` (a 2x2 window, rows ``w`` slots apart) costs 2 rotations as
``y₁ = x + rot(x, 1)``, ``y = y₁ + rot(y₁, w)``. The coefficient moves into the next map,
which reads ``y`` through a strided layout (anchors only), so whatever the other slots hold
never reaches it. Each weight after the pool then sits on one diagonal.

``find_stencil`` looks for the longest prefix of a pending chain (``chain_lowering``) whose
product is such a stencil; ``sum_rounds`` splits ``T`` into rounds of rotations;
``lower-to-slots`` emits it where its option ``stencil_sums`` says (``auto``: by the
estimated cost of both forms, ``output_layouts.map_cost``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hec.passes.chain_lowering import PendingMap

__all__ = [
    "STENCIL_SUMS",
    "Stencil",
    "find_stencil",
    "sum_rounds",
    "stencil_rotations",
    "tree_rounds",
]

STENCIL_SUMS = ("auto", "always", "never")


@dataclass(frozen=True)
class Stencil:
    """The first ``factors`` factors of a chain: ``y = scale · Σ_t x[anchor + t] + bias``."""

    factors: int
    taps: tuple[int, ...]  # slot shifts, sorted, the first 0
    anchors: np.ndarray  # slot of each output element (its lowest read slot)
    scale: float
    bias: np.ndarray
    origin: str

    @property
    def size(self) -> int:
        return int(self.anchors.size)


def find_stencil(
    p: PendingMap, slot_of: np.ndarray, slots: int, negligible: float = 0.0
) -> Stencil | None:
    """The longest prefix of ``p``'s factors (not all of them) that is a stencil with two
    taps or more over the source's slots ``slot_of`` (``slot_of[e]``: the slot of source
    element ``e``); ``None`` if there is none."""
    found = None
    A: sp.csr_matrix = sp.identity(p.size, format="csr")
    b = np.zeros(p.size)
    for k, (Ak, bk) in enumerate(p.factors[:-1], start=1):
        A, b = (Ak @ A).tocsr(), Ak @ b + bk
        st = _stencil_of(A.tocoo(), slot_of, slots, negligible)
        if st is None:
            break
        taps, anchors, scale = st
        if len(taps) > 1:
            origin = "+".join(dict.fromkeys(o for o in p.origins[:k] if o))
            found = Stencil(k, taps, anchors, scale, b.copy(), origin)
    return found


def _stencil_of(
    A: sp.coo_matrix, slot_of: np.ndarray, slots: int, negligible: float
) -> tuple[tuple[int, ...], np.ndarray, float] | None:
    keep = np.abs(A.data) >= max(negligible, 1e-300)
    rows, data, read = A.row[keep], A.data[keep], slot_of[A.col[keep]]
    n = A.shape[0]
    if data.size == 0 or np.any(read < 0) or np.unique(rows).size != n:
        return None
    if not np.allclose(data, data[0], rtol=1e-12, atol=0.0):
        return None
    order = np.lexsort((read, rows))
    rows, read = rows[order], read[order]
    counts = np.bincount(rows, minlength=n)
    if np.any(counts != counts[0]):
        return None
    grid = read.reshape(n, counts[0])
    taps = grid - grid[:, :1]
    if np.any(taps != taps[0]):
        return None
    anchors = grid[:, 0].astype(np.int64)
    if np.unique(anchors).size != n or anchors.max() + taps[0, -1] >= slots:
        return None
    return tuple(int(t) for t in taps[0]), anchors, float(data[0])


def sum_rounds(taps: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Rounds ``y ← y + Σ_{d ∈ round} rot(y, d)`` whose composition sums ``taps``.

    A set that splits as ``U ⊕ {0, d, .., (m-1)·d}`` costs ``m - 1`` rotations for that
    progression and then ``U``'s rounds (a 2x2 window: 2 rotations for 4 taps; 3x3: 4 for 9);
    what does not split is summed in one round of its non-zero taps (rotations of one
    ciphertext, hoisted)."""
    rest, rounds = sorted(set(taps)), []
    while len(rest) > 1:
        for d in rest[1:]:
            split = _split(rest, d)
            if split is not None:
                rest, m = split
                rounds.append(tuple(j * d for j in range(1, m)))
                break
        else:
            rounds.append(tuple(t - rest[0] for t in rest[1:]))
            rest = [rest[0]]
    return rounds


def _split(taps: list[int], d: int) -> tuple[list[int], int] | None:
    """``(U, m)`` with ``taps = U ⊕ {0, d, .., (m-1)·d}`` (disjoint), the longest such
    progression; ``None`` if none."""
    have = set(taps)
    longest = 1
    while longest * d + taps[0] in have:
        longest += 1
    for m in range(longest, 1, -1):
        left, base = set(taps), []
        for t in taps:
            if t not in left:
                continue
            run = {t + j * d for j in range(m)}
            if not run <= left:
                break
            left -= run
            base.append(t)
        else:
            return base, m
    return None


def stencil_rotations(taps: tuple[int, ...]) -> int:
    """Rotations the rounds of ``taps`` cost."""
    return sum(len(r) for r in sum_rounds(taps))


def tree_rounds(taps: tuple[int, ...], room: int, widest: int = 8) -> list[tuple[int, ...]]:
    """Rounds ``y ← y + Σ_{d ∈ round} rot(y, d)`` after which ``y[a]`` is ``Σ_{t ∈ taps}
    z[a + t]``, for a vector ``z`` that is zero at every other slot ``a + u``, ``0 <= u <
    room`` (``taps`` sorted, the first 0, all below ``room``).

    Unlike ``sum_rounds`` the rounds may also sum such zero slots, so a run of 5 taps costs 3
    doublings (``{0, d} ⊕ {0, 2d} ⊕ {0, 4d}`` covers 8, the last 3 zero) instead of 4
    rotations. Greedy: each round is the progression ``{0, d, .., (m-1)·d}`` (``m <=
    widest``) that divides the taps still to sum the most per rotation, where the taps it
    pairs with zero slots are zero in every partial sum, and no sum reads past ``room``.
    (``expand_copies.readout_plan`` compares it with plain doublings over a window.)"""
    target = set(taps)
    need, covered = sorted(target), [0]  # y[a + u] = Σ_{c ∈ covered} z[a + u + c]
    rounds: list[tuple[int, ...]] = []
    while len(need) > 1:
        best, best_score = None, 0.0
        steps = {t - need[0] for t in need[1:]} | set(np.diff(need).tolist())
        for d in sorted(steps):
            for m in range(2, widest + 1):
                kept = _fold(need, d, m, target, covered, room)
                if kept is None:
                    continue
                score = np.log(len(need) / len(kept)) / (m - 1)
                if score > best_score + 1e-12:
                    best, best_score = (d, m, kept), score
        if best is None:  # no progression divides them: one round of every tap left
            rounds.append(tuple(t - need[0] for t in need[1:]))
            break
        d, m, need = best
        rounds.append(tuple(j * d for j in range(1, m)))
        covered = sorted({c + j * d for c in covered for j in range(m)})
    return rounds


def _fold(
    need: list[int], d: int, m: int, target: set[int], covered: list[int], room: int
) -> list[int] | None:
    """The taps left after the round ``{0, d, .., (m-1)·d}``, or ``None`` if it would sum a
    slot that is neither a tap still needed nor zero, or read past ``room``."""
    have, claimed, kept = set(need), set(), []
    reach = covered[-1]
    for u in need:
        if u in claimed:
            continue
        for j in range(m):
            w = u + j * d
            if w in claimed:
                return None
            if w not in have and (w + reach >= room or any(w + c in target for c in covered)):
                return None
            claimed.add(w)
        kept.append(u)
    return kept if len(kept) < len(need) else None
