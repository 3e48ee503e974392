"""schedule-rotations: expand each ``matvec`` into rotations and plaintext multiplies (BSGS).

With ``k = g·n1 + b`` (``0 <= b < n1``) and ``rot(d ⊙ u, r) = rot(d, r) ⊙ rot(u, r)``::

    Σ_k d_k ⊙ rot(x, k) = Σ_g rot( Σ_b rot(d_{g·n1+b}, -g·n1) ⊙ rot(x, b), g·n1 )

so a map needs one *baby* rotation of ``x`` per distinct ``b ≠ 0`` (they share ``x`` and are
hoisted by the backend) and one *giant* rotation per distinct ``g ≠ 0`` (on partial sums), while
the diagonals are pre-rotated here, at compile time. ``n1`` is searched on the map's actual
(sparse) offset set; ``n1 = slots`` is the plain hoisted diagonal method, ``n1 = 1`` rotates
every term separately. Giant rotations act before the rescale, at scale Δ², which is allowed.

Sample blocks (``block_local``): a ciphertext may hold B vectors of ``slots`` slots side by side,
one sample each, with every plaintext tiled B times; rotations then act on all B·slots slots.
A tiled plaintext is periodic in ``slots``, so pre-rotating it is the same in both views, and
the term of diagonal ``k`` at slot ``t`` of block ``j`` reads ``x`` at ``j·slots + t + b + g·n1
= j·slots + t + k``. With exact shifts ``k = c - r`` (``lower-to-slots`` with ``block_local``),
``t + k = c`` is a slot of the same block: each block computes its own sample, whatever baby
rotations and partial sums carry across block edges. So the amounts must be ``b`` and ``g·n1``
exactly (``|g·n1|`` may reach ``slots``), not their representatives modulo ``slots``.

Preserves: the slot function, exactly (up to float rounding). Requires: slot graph.
Golden: ``tests/passes/golden/schedule_rotations.txt``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hec.ir import CipherType, Graph, Op, Value

__all__ = ["ScheduleRotations", "choose_baby_step", "signed_rotation"]


def signed_rotation(k: int, slots: int) -> int:
    """The representative of ``k mod slots`` in ``(-slots/2, slots/2]`` (readable, same key)."""
    k %= slots
    return k - slots if k > slots // 2 else k


def _candidates(ks: np.ndarray, slots: int) -> list[int]:
    """Baby-step sizes worth trying.

    With ``K`` offsets, ``K <= (#babies + 1)(#giants + 1)``, so good splits have ``n1`` near
    ``sqrt(K)``: all of ``1 .. max(64, 4·sqrt(K))`` are tried, plus the offsets themselves
    (row and channel strides of convolutions) when there are few, plus ``slots`` (all babies).
    """
    limit = min(slots, max(64, 4 * math.isqrt(ks.size) + 1))
    cands = set(range(1, limit + 1)) | {slots}
    if ks.size <= 512:
        cands |= {abs(int(k)) for k in ks if 0 < abs(k) < slots}
    return sorted(cands)


def choose_baby_step(offsets: np.ndarray, slots: int, hoisted_cost: float = 1.0) -> int:
    """The ``n1`` minimizing ``hoisted_cost·#babies + #giants`` (ties: fewer giants)."""
    ks = np.unique(np.asarray(offsets, dtype=np.int64))  # sorted, so ks // n1 is sorted too
    best, best_cost = slots, None
    for n1 in _candidates(ks, slots):
        seen = np.zeros(n1, dtype=bool)
        seen[ks % n1] = True
        babies = int(np.count_nonzero(seen[1:]))
        g = ks // n1
        distinct = int(np.count_nonzero(np.diff(g))) + 1
        giants = distinct - int(bool(np.any(g == 0)))  # distinct non-zero values
        cost = (hoisted_cost * babies + giants, giants)
        if best_cost is None or cost < best_cost:
            best, best_cost = n1, cost
    return best


@dataclass(frozen=True)
class ScheduleRotations:
    """Expand ``matvec`` ops by baby-step/giant-step.

    Args:
        baby_step: force ``n1`` for every map; ``None`` searches it per map.
        block_local: rotate by exactly ``b`` and ``g·n1`` (offsets are the exact shifts of a
            ``block_local`` lowering) instead of their representatives modulo ``slots``.
    """

    baby_step: int | None = None
    block_local: bool = False
    name: ClassVar[str] = "schedule-rotations"
    dialect: ClassVar[str] = "slot"

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in [op for op in graph.ops if op.kind == "matvec"]:
            new_ops, result = _expand(op, self.baby_step, self.block_local)
            graph.replace_op(op, new_ops, result)
            changed = True
        return changed


def _expand(op: Op, baby_step: int | None, block_local: bool) -> tuple[list[Op], Value]:
    x = op.inputs[0]
    xt: CipherType = x.type
    S, lvl = xt.slots, xt.level
    offsets = np.asarray(op.attrs["offsets"], dtype=np.int64)
    diags = op.consts["diags"]
    n1 = baby_step or choose_baby_step(offsets, S)
    ops: list[Op] = []

    def amount(k: int) -> int:
        return k if block_local else signed_rotation(k, S)

    def emit(kind, inputs, scale_deg, level=lvl, attrs=None, consts=None) -> Value:
        new = Op(kind, inputs, [CipherType(S, level, scale_deg)], attrs, consts, op.origin)
        ops.append(new)
        return new.result

    babies = {0: x}
    for b in sorted({int(b) for b in offsets % n1} - {0}):
        babies[b] = emit("rotate", [x], 1, attrs={"k": amount(b)})
    acc = None
    for g in sorted({int(g) for g in offsets // n1}):
        partial = None
        for i in np.flatnonzero(offsets // n1 == g):
            pre_rotated = np.roll(diags[i], g * n1)  # rot(d, -g·n1)
            term = emit("mul_plain", [babies[int(offsets[i] % n1)]], 2, consts={"p": pre_rotated})
            partial = term if partial is None else emit("add", [partial, term], 2)
        if g % S:
            partial = emit("rotate", [partial], 2, attrs={"k": amount(g * n1)})
        acc = partial if acc is None else emit("add", [acc, partial], 2)
    result = emit("rescale", [acc], 1, level=lvl + 1)
    if op.consts["bias"].any():
        result = emit("add_plain", [result], 1, level=lvl + 1, consts={"p": op.consts["bias"]})
    result.type = op.result.type  # the last op holds the map's output tensor and layout
    return ops, result
