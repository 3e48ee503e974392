"""schedule-rotations: expand each ``matvec`` into rotations and plaintext multiplies (BSGS).

With ``k = g·n1 + b`` (``0 <= b < n1``) and ``rot(d ⊙ u, r) = rot(d, r) ⊙ rot(u, r)``::

    Σ_k d_k ⊙ rot(x, k) = Σ_g rot( Σ_b rot(d_{g·n1+b}, -g·n1) ⊙ rot(x, b), g·n1 )

so a map needs one *baby* rotation of ``x`` per distinct ``b ≠ 0`` (they share ``x`` and are
hoisted by the backend) and one *giant* rotation per distinct ``g ≠ 0`` (on partial sums), while
the diagonals are pre-rotated here, at compile time. ``n1`` is searched on the map's actual
(sparse) offset set, over every ``n1`` in ``1 .. slots`` when that is cheap, with the offsets
taken in ``[0, slots)`` or in ``(-slots/2, slots/2]`` (``k`` and ``k - slots`` are the same
rotation; a set clustered around 0 splits better signed); ``n1 = slots`` is the plain hoisted
diagonal method, ``n1 = 1`` rotates every term separately (the plain, unhoisted one). Giant
rotations act before the rescale, at scale Δ², which is allowed; up to ``SUM_CHUNK`` of them
form one ``rotate_sum``, whose key switches share one ModDown (the backend adds them in the
extended basis P·Q and divides by P once).

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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hec.ir import CipherType, Graph, Op, Value
from hec.ir.types import type_as

__all__ = [
    "FoldPlan",
    "KERNEL",
    "PT_MUL_PER_ROTATION",
    "SUM_CHUNK",
    "ScheduleRotations",
    "build_fold",
    "best_pair_shift",
    "build_pair_fold",
    "choose_kernel",
    "choose_baby_step",
    "fold_plan",
    "fold_probe",
    "fold_shapes",
    "choose_split",
    "representations",
    "signed_rotation",
    "split_cost",
]


def signed_rotation(k: int, slots: int) -> int:
    """The representative of ``k mod slots`` in ``(-slots/2, slots/2]`` (readable, same key)."""
    k %= slots
    return k - slots if k > slots // 2 else k


# Giant steps whose rotations share one ModDown (``rotate_sum``): the partial sums of a group
# are all held at once, so groups are bounded (8 save 7 ModDowns of 8; 5.0 of the 11.6 ms a
# rotation costs at ring 2^14).
SUM_CHUNK = 8

# one plaintext multiply costs about 1/30 of a rotation (ENVIRONMENT.md: 0.6 vs 21 ms at ring
# 2^14, 4.4 vs 132 ms at 2^15): the weight of plaintexts in a kernel's cost
PT_MUL_PER_ROTATION = 1 / 30

# Above this many (n1, offset) pairs the search tries a shortlist of n1 instead of all of them.
_FULL_SEARCH_LIMIT = 60_000_000


def _candidates(ks: np.ndarray, slots: int) -> list[int]:
    """Baby-step sizes worth trying: all of ``1 .. slots`` when that is cheap, else a shortlist.

    With ``K`` offsets, ``K <= (#babies + 1)(#giants + 1)``, so good splits have ``n1`` near
    ``sqrt(K)``: the shortlist is ``1 .. max(64, 4·sqrt(K))``, the offsets themselves (row and
    channel strides of convolutions) when there are few, and ``slots`` (all babies).
    """
    if ks.size * slots <= _FULL_SEARCH_LIMIT:
        # Past n1 = M (the largest |offset| or the offsets' span), every offset is its own baby
        # step (a negative one n1 + k, which no other offset equals) and the giant steps are
        # 0 and -1: the cost of n1 = M + 1, which wins the tie, up to n1 = slots, where -1 turns
        # a whole vector and is no rotation.
        m = max(int(np.abs(ks).max()), int(ks.max() - ks.min()))
        return [*range(1, min(slots, m + 1) + 1), *([slots] if m + 1 < slots else [])]
    limit = min(slots, max(64, 4 * math.isqrt(ks.size) + 1))
    cands = set(range(1, limit + 1)) | {slots}
    if ks.size <= 512:
        cands |= {abs(int(k)) for k in ks if 0 < abs(k) < slots}
    return sorted(cands)


def representations(offsets: np.ndarray, slots: int, block_local: bool) -> list[np.ndarray]:
    """The ways to write each offset as an integer before splitting it as ``g·n1 + b``.

    Within one ``slots``-slot vector ``k`` and ``k - slots`` are the same rotation, so offsets
    may be taken in ``[0, slots)`` or in ``(-slots/2, slots/2]``; the second keeps a set
    clustered around 0 (a convolution's ``±row ± 1``) in one short run, which needs fewer
    steps. Block-local offsets are exact shifts and have one way only.
    """
    ks = np.asarray(offsets, dtype=np.int64)
    if block_local:
        return [ks]
    unsigned = ks % slots
    return [unsigned, np.where(unsigned > slots // 2, unsigned - slots, unsigned)]


def split_cost(ks: np.ndarray, n1: int, slots: int, block_local: bool = False) -> tuple[int, int]:
    """``(#babies, #giants)``: distinct non-zero ``b`` and giant amounts ``g·n1 ≠ 0``."""
    ks = np.asarray(ks, dtype=np.int64)
    babies = np.count_nonzero(np.unique(ks % n1))
    giant = np.unique(ks // n1) * n1
    return int(babies), int(np.count_nonzero(giant if block_local else giant % slots))


def choose_split(
    offsets: np.ndarray, slots: int, block_local: bool = False, hoisted_cost: float = 1.0
) -> tuple[int, np.ndarray]:
    """The ``n1`` and offset representation minimizing ``hoisted_cost·#babies + #giants``.

    Returns ``(n1, ks)`` with ``ks[i]`` the representative of ``offsets[i]`` to split (ties:
    fewer giants, then the first representation, then the smaller ``n1``).
    """
    n1, ks, _ = _search(offsets, slots, block_local, hoisted_cost)
    return n1, ks


# Splits searched last, by what defines them: one map's offsets are searched by the output
# layout's cost, by choose-kernels and again by each lowering a compile runs (a ResNet-20:
# 0.7 s a search, over a minute in all, most of it for offsets seen before).
_SPLITS: OrderedDict[tuple, tuple[int, np.ndarray, int]] = OrderedDict()
_SPLITS_SIZE = 256
_PAIRS: OrderedDict[tuple, tuple[int, int, bool, float] | None] = OrderedDict()


def _search(
    offsets: np.ndarray, slots: int, block_local: bool, hoisted_cost: float = 1.0
) -> tuple[int, np.ndarray, int]:
    """``choose_split`` and the number of rotations of the split it returns (memoized)."""
    ks = np.asarray(offsets, dtype=np.int64)
    key = (ks.tobytes(), slots, block_local, hoisted_cost)
    n1, rep, rotations = _memoized(
        _SPLITS, key, lambda: _search_splits(ks, slots, block_local, hoisted_cost)
    )
    return n1, rep.copy(), rotations


def _memoized(cache: OrderedDict, key: tuple, compute: Callable[[], Any]) -> Any:
    """``cache[key]``, computed on a miss; the least recently used beyond the size dropped."""
    if key not in cache:
        cache[key] = compute()
        while len(cache) > _SPLITS_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def _search_splits(
    offsets: np.ndarray, slots: int, block_local: bool, hoisted_cost: float
) -> tuple[int, np.ndarray, int]:
    """Every candidate ``n1`` of every representation, costed (what ``_search`` memoizes)."""
    best, best_cost = None, None
    for rep, ks_all in enumerate(representations(offsets, slots, block_local)):
        ks = np.unique(ks_all)  # sorted, so ks // n1 is sorted too
        candidates = _candidates(ks, slots)
        if ks.size <= _VECTOR_OFFSETS:  # many n1 at once
            step = max(1, _VECTOR_CELLS // ks.size)
            for start in range(0, len(candidates), step):
                n1s = np.asarray(candidates[start : start + step], dtype=np.int64)
                babies_, giants_ = _split_counts(ks, n1s, slots, block_local)
                costs = hoisted_cost * babies_ + giants_
                i = int(np.lexsort((giants_, costs))[0])  # stable: the first n1 of a tie
                cost = (float(costs[i]), int(giants_[i]), rep)
                if best_cost is None or cost < best_cost:
                    best, best_cost = (int(n1s[i]), ks_all, int(babies_[i] + giants_[i])), cost
            continue
        for n1 in candidates:
            seen = np.zeros(n1, dtype=bool)
            seen[ks % n1] = True
            babies = int(np.count_nonzero(seen[1:]))
            g = ks // n1
            giants = 1 + int(np.count_nonzero(g[1:] != g[:-1]))  # distinct giant steps
            if not block_local and max(-g[0], g[-1]) * n1 >= slots:  # a whole turn is none
                giants = int(np.count_nonzero(np.unique(g) * n1 % slots))
            else:
                i = int(np.searchsorted(g, 0))
                giants -= int(i < len(g) and g[i] == 0)
            cost = (hoisted_cost * babies + giants, giants, rep)
            if best_cost is None or cost < best_cost:
                best, best_cost = (n1, ks_all, babies + giants), cost
    assert best is not None
    return best


# Up to this many offsets a split is costed for many n1 at once, each row of residues sorted;
# above it one n1 at a time with a table of residues (sorting K offsets then costs more than
# marking them), in blocks of this many (n1, offset) cells.
_VECTOR_OFFSETS = 256
_VECTOR_CELLS = 1 << 21


def _split_counts(
    ks: np.ndarray, n1s: np.ndarray, slots: int, block_local: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Baby and giant steps of the split of sorted distinct ``ks`` at each ``n1`` of ``n1s``:
    the distinct non-zero ``k mod n1``, and the distinct ``k // n1`` other than 0 (when a giant
    step may pass a whole turn, those that are not a multiple of ``slots``)."""
    n = n1s[:, None]
    g = ks[None, :] // n  # rows sorted, as ks is
    new_g = np.ones(g.shape, dtype=bool)
    new_g[:, 1:] = g[:, 1:] != g[:, :-1]
    plain = new_g.sum(axis=1) - (g == 0).any(axis=1)
    if block_local:
        giants = plain
    else:
        turns = np.maximum(-g[:, 0], g[:, -1]) * n1s >= slots
        giants = np.where(turns, (new_g & (g * n % slots != 0)).sum(axis=1), plain)
    r = np.sort(ks[None, :] % n, axis=1)
    new_r = np.ones(r.shape, dtype=bool)
    new_r[:, 1:] = r[:, 1:] != r[:, :-1]
    return (new_r & (r != 0)).sum(axis=1), giants


def choose_baby_step(offsets: np.ndarray, slots: int, hoisted_cost: float = 1.0) -> int:
    """The ``n1`` of ``choose_split`` (offsets as given, no signed representation)."""
    return choose_split(offsets, slots, True, hoisted_cost)[0]


@dataclass(frozen=True)
class ScheduleRotations:
    """Expand ``matvec`` ops by baby-step/giant-step, as their kernel attributes say
    (``choose-kernels``). A map without them (this pass run on its own, as tests do) gets them
    here first, from the same ``choose_kernel`` and the arguments below.

    Args:
        baby_step: force ``n1`` for every map; ``None`` searches it per map.
        block_local: rotate by exactly ``b`` and ``g·n1`` (offsets are the exact shifts of a
            ``block_local`` lowering) instead of their representatives modulo ``slots``.
        fold: evaluate maps with few output rows as merged diagonals and a block sum
            (``FoldPlan``) when that needs fewer rotations (not with ``block_local``).
    """

    baby_step: int | None = None
    block_local: bool = False
    fold: bool = True
    name: ClassVar[str] = "schedule-rotations"
    dialect: ClassVar[str] = "slot"

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in [op for op in graph.ops if op.kind == "matvec"]:
            if KERNEL not in op.attrs:  # no choose-kernels before (a pass run on its own)
                op.attrs.update(choose_kernel(op, self.baby_step, self.block_local, self.fold))
            new_ops, result = _expand(op, self.block_local)
            graph.replace_op(op, new_ops, result)
            changed = True
        return changed


# the matvec attribute naming its kernel (``choose-kernels``): "bsgs" or "folded"
KERNEL = "kernel"


def _terms(op: Op) -> tuple[np.ndarray, np.ndarray]:
    """A matvec's offsets and diagonals (an all-zero matrix, a layer pruned away: one zero
    diagonal, so that ``y = 0·x + b`` needs no rotation)."""
    offsets = np.asarray(op.attrs["offsets"], dtype=np.int64)
    if offsets.size == 0:
        slots = type_as(op.inputs[0].type, CipherType).slots
        return np.zeros(1, dtype=np.int64), np.zeros((1, slots))
    return offsets, op.consts["diags"]


def _signed(ks: np.ndarray, offsets: np.ndarray, slots: int, block_local: bool) -> bool:
    """Whether ``ks`` is the signed representation of ``offsets`` (``representations``)."""
    return not np.array_equal(ks, representations(offsets, slots, block_local)[0])


def choose_kernel(
    op: Op, baby_step: int | None, block_local: bool, fold_short: bool = True
) -> dict[str, object]:
    """How a ``matvec`` is evaluated, as its attributes: ``kernel`` ``"bsgs"`` (baby-step/
    giant-step with ``baby_step`` n1, offsets in their ``signed`` representation or not) or
    ``"folded"`` (``FoldPlan``: ``block`` B, and the split of the merged map the same way),
    or ``"paired"`` (``best_pair_shift``: two copies ``shift`` slots apart) where that costs
    less than the first two (rotations + plaintext multiplies / 30).
    ``baby_step`` forces n1 (and no folding); otherwise the cheapest split is searched."""
    S = type_as(op.inputs[0].type, CipherType).slots
    offsets, diags = _terms(op)
    if op.attrs.get("period"):  # a periodic output (``make_periodic``): folded in halves
        half = int(op.attrs["period"])
        probe = fold_probe(offsets % S, S, half)
        signed = _signed(probe.ks, probe.offsets, S, False)
        return {KERNEL: "folded", "block": half, "baby_step": probe.n1, "signed": signed}
    if baby_step:
        return {KERNEL: "bsgs", "baby_step": baby_step, "signed": False}
    n1, ks, rotations = _search(offsets, S, block_local)
    if fold_short and not block_local:
        layout = type_as(op.result.type, CipherType).layout
        # the slots the result must hold exactly: every one its layout uses
        outputs = layout.slot_of_element() if layout is not None else None
        fold = fold_plan(offsets, diags, S, outputs, rotations)
        if fold is not None:
            signed = _signed(fold.ks, fold.offsets, S, False)
            chosen = {KERNEL: "folded", "block": fold.block, "baby_step": fold.n1, "signed": signed}
            if fold.period and fold.period < S:
                chosen["lane"] = fold.period
            cost = _fold_cost(fold)
        else:
            chosen = {KERNEL: "bsgs", "baby_step": n1, "signed": _signed(ks, offsets, S, False)}
            cost = rotations + PT_MUL_PER_ROTATION * len(np.unique(offsets % S))
        rows = np.flatnonzero(np.any(diags != 0, axis=0))
        extent = int(np.union1d(rows, np.arange(S) if outputs is None else outputs).max()) + 1
        paired = best_pair_shift(offsets, S, extent)  # the plan itself is built by _expand
        if paired is not None and paired[3] < cost:
            shift, pair_n1, signed, _ = paired
            return {KERNEL: "paired", "shift": shift, "baby_step": pair_n1, "signed": signed}
        return chosen
    return {KERNEL: "bsgs", "baby_step": n1, "signed": _signed(ks, offsets, S, block_local)}


def _fold_cost(fold: FoldPlan) -> float:
    """Rotations + plaintext multiplies / 30 of a folded map (its merged map's split)."""
    babies, giants = split_cost(fold.ks, fold.n1, fold.slots)
    return babies + giants + fold.rotations() + PT_MUL_PER_ROTATION * len(fold.offsets)


def _expand(op: Op, block_local: bool) -> tuple[list[Op], Value]:
    """The rotations and plaintext multiplies of a ``matvec`` under its kernel attributes."""
    x = op.inputs[0]
    xt = type_as(x.type, CipherType)
    S, lvl = xt.slots, xt.level
    offsets, diags = _terms(op)
    carried = np.ones(len(offsets), dtype=np.int64)  # diagonals each plaintext holds
    n1, signed = int(op.attrs["baby_step"]), bool(op.attrs["signed"])
    fold = None
    if op.attrs[KERNEL] in ("folded", "paired"):
        if op.attrs[KERNEL] == "folded":
            block, period = int(op.attrs["block"]), int(op.attrs.get("lane", 0))
            fold = build_fold(offsets, diags, S, block, n1, signed, period)
        else:
            fold = build_pair_fold(offsets, diags, S, int(op.attrs["shift"]), n1, signed)
        offsets, diags, carried, ks = fold.offsets, fold.diags, fold.carried, fold.ks
    else:
        ks = representations(offsets, S, block_local)[int(signed)]
    ops: list[Op] = []

    def amount(k: int) -> int:
        return k if block_local else signed_rotation(k, S)

    def emit(kind, inputs, scale_deg, level=lvl, attrs=None, consts=None) -> Value:
        new = Op(kind, inputs, [CipherType(S, level, scale_deg)], attrs, consts, op.origin)
        ops.append(new)
        return new.result

    babies = {0: x}
    for b in sorted({int(b) for b in ks % n1} - {0}):
        babies[b] = emit("rotate", [x], 1, attrs={"k": amount(b)})
    acc: Value | None = None
    giants: list[tuple[Value, int]] = []  # partial sums waiting for their giant rotation

    def add_to_sum(v: Value) -> None:
        nonlocal acc
        acc = v if acc is None else emit("add", [acc, v], 2)

    def rotate_giants() -> None:  # up to SUM_CHUNK of them share one ModDown (rotate_sum)
        if len(giants) == 1:
            add_to_sum(emit("rotate", [giants[0][0]], 2, attrs={"k": giants[0][1]}))
        elif giants:
            ks_ = [k for _, k in giants]
            add_to_sum(emit("rotate_sum", [v for v, _ in giants], 2, attrs={"ks": ks_}))
        giants.clear()

    for g in sorted({int(g) for g in ks // n1}):
        partial = None
        for i in np.flatnonzero(ks // n1 == g):
            pre_rotated = np.roll(diags[i], g * n1)  # rot(d, -g·n1)
            attrs = {"diagonals": int(carried[i])} if carried[i] > 1 else None
            baby = babies[int(ks[i] % n1)]
            term = emit("mul_plain", [baby], 2, attrs=attrs, consts={"p": pre_rotated})
            partial = term if partial is None else emit("add", [partial, term], 2)
        assert partial is not None
        if g != 0 if block_local else (g * n1) % S:  # a whole turn of S slots moves nothing
            giants.append((partial, amount(g * n1)))
            if len(giants) == SUM_CHUNK:
                rotate_giants()
        else:
            add_to_sum(partial)
    rotate_giants()
    assert acc is not None
    result = emit("rescale", [acc], 1, level=lvl + 1)
    if fold is not None:  # y[r] = Σ_j P[r + B·j], at the lower level (cheaper rotations)
        result = fold.emit_sum(
            result,
            lambda k, v: emit("rotate", [v], 1, lvl + 1, {"k": amount(k)}),
            lambda a, b: emit("add", [a, b], 1, lvl + 1),
        )
    if op.consts["bias"].any():
        result = emit("add_plain", [result], 1, level=lvl + 1, consts={"p": op.consts["bias"]})
    result.type = op.result.type  # the last op holds the map's output tensor and layout
    return ops, result


@dataclass(frozen=True)
class FoldPlan:
    """A map with few output rows, evaluated as ``B`` merged diagonals and a block sum.

    When every output row ``r`` is below ``B`` (a power of two, ``B <= slots/2``), write each
    offset ``k = κ + B·j`` (``0 <= κ < B``). The term ``d_k[r]·x[r + k]`` is computed at slot
    ``r + B·j`` of one vector ``P = Σ_κ d'_κ ⊙ rot(x, κ)`` with ``d'_κ[r + B·j] = d_{κ+B·j}[r]``
    (the blocks ``[B·j, B·j + B)`` of different ``j`` are disjoint, so all diagonals with one
    ``κ`` share a plaintext), and ``y[r] = Σ_j P[r + B·j] = Σ_j rot(P, B·j)[r]``. ``P`` is a
    map with at most ``B`` diagonals (BSGS as usual); the block sum costs either one hoisted
    rotation of ``P`` per block ``j ≠ 0`` used, or ``t = ceil(log2 L)`` doublings
    ``Q += rot(Q, B·2^i)`` plus one rotation when the ``L`` blocks used (a cyclic window) do
    not start at 0. Blocks outside the window hold zeros in ``P``, so summing them is
    harmless; slots ``>= B`` of the result hold partial sums (unread: the output layout is
    contiguous). This is the hybrid diagonal method (GAZELLE) for wide, short maps.

    **Lanes** (``period`` H < slots): rows may also sit in ``[ℓ·H, ℓ·H + B)`` for every lane
    ``ℓ < slots/H`` when every offset is below ``H``. Row ``ℓ·H + r`` gathers ``P`` over
    ``ℓ·H + r + B·j`` for ``j < H/B``, inside its own lane, so the lanes share every
    plaintext and rotation: a map reading a periodic input (``lower-to-slots``: its offsets
    taken modulo ``H``) with ``E`` outputs in ``L`` lanes costs ``B = E/L`` plaintexts instead
    of ``E`` (Orion's LeNet-5 fc1, 3,136 → 512 on a 4,096-periodic input: 256 instead of 512).
    """

    block: int
    offsets: np.ndarray  # the κ's
    diags: np.ndarray  # d'_κ, one row each
    carried: np.ndarray  # original diagonals merged into each d'_κ
    blocks: tuple[int, ...]  # the j's used
    slots: int
    n1: int  # the baby step of P's map
    ks: np.ndarray  # the κ's as that split writes them
    period: int = 0  # H: the lanes' width (0: one lane, the whole vector)

    def sum_plan(self) -> tuple[str, int, int]:
        """``("hoisted", rotations, 0)`` or ``("tree", doublings, start)``."""
        nblocks = self.slots // self.block
        used = sorted(self.blocks)
        hoisted = len(used) - int(0 in used)
        if self.slots % self.block:  # a pair fold (``build_pair_fold``): one rotation by B
            return ("hoisted", hoisted, 0)
        if self.period and self.period < self.slots:  # lanes: windows from block 0, no wrap
            doublings = used[-1].bit_length()
            return ("hoisted", hoisted, 0) if hoisted <= doublings else ("tree", doublings, 0)
        # the shortest cyclic window holding every used block: start after the largest gap
        gaps = [(used[(i + 1) % len(used)] - b) % nblocks or nblocks for i, b in enumerate(used)]
        i = int(np.argmax(gaps))
        start, length = used[(i + 1) % len(used)], nblocks - gaps[i] + 1
        doublings = (length - 1).bit_length()
        if all(b < 1 << doublings for b in used):  # a window from block 0 needs no last turn
            start = 0
        tree = doublings + int(start != 0)
        return ("hoisted", hoisted, 0) if hoisted <= tree else ("tree", doublings, start)

    def rotations(self) -> int:
        kind, n, start = self.sum_plan()
        return n + int(kind == "tree" and start != 0)

    def emit_sum(self, p: Value, rotate, add) -> Value:
        kind, n, start = self.sum_plan()
        if kind == "hoisted":
            terms = [p if j == 0 else rotate(j * self.block, p) for j in sorted(self.blocks)]
            total = terms[0]
            for t in terms[1:]:
                total = add(total, t)
            return total
        q = p
        for i in range(n):
            q = add(q, rotate(self.block << i, q))
        return rotate(start * self.block, q) if start else q


def fold_shapes(ks: np.ndarray, rows: np.ndarray, slots: int) -> list[tuple[int, int]]:
    """The ``(period, block)`` a ``FoldPlan`` may take for offsets ``ks`` (in ``[0, slots)``)
    and output rows ``rows`` (every slot the result must hold: partial sums land elsewhere):
    one lane (``period = slots``, ``B`` above every row) and, where every offset is below
    ``H`` and the rows sit at the start of lanes ``H`` apart, ``period = H``."""
    shapes = []
    period = slots
    while period >= 2 and rows.size:
        if ks.size and int(ks.max()) >= period:
            break
        block = 1 << int((rows % period).max()).bit_length()
        lanes = np.unique(rows // period).size
        if block <= period // 2 and (period == slots or lanes > 1):
            shapes.append((period, block))
        period //= 2
    return shapes


def fold_plan(
    offsets: np.ndarray,
    diags: np.ndarray,
    slots: int,
    outputs: np.ndarray | None = None,
    plain_rotations: int | None = None,
) -> FoldPlan | None:
    """The cheapest ``FoldPlan`` of a map (``fold_shapes``) if it needs fewer rotations than
    plain BSGS, else ``None``.

    ``outputs``: the result's slots that are read (the fold leaves partial sums in the other
    slots, so its lanes must cover them all, bias-only rows included); ``None``: all.
    ``plain_rotations``: what plain BSGS needs (searched here when not given).
    """
    rows = np.flatnonzero(np.any(diags != 0, axis=0))
    if rows.size == 0:
        return None
    rows = np.union1d(rows, np.arange(slots) if outputs is None else outputs)
    ks = np.asarray(offsets, dtype=np.int64) % slots
    if plain_rotations is None:
        plain_rotations = _search(offsets, slots, False)[2]
    best = None
    for period, block in fold_shapes(ks, rows, slots):
        probe = fold_probe(ks, slots, block, period)
        cost = sum(split_cost(probe.ks, probe.n1, slots)) + probe.rotations()
        cost_pt = cost + PT_MUL_PER_ROTATION * probe.offsets.size
        if cost < plain_rotations and (best is None or cost_pt < best[0]):
            best = (cost_pt, probe)
    if best is None:
        return None
    probe = best[1]
    signed = _signed(probe.ks, probe.offsets, slots, False)
    return build_fold(offsets, diags, slots, probe.block, probe.n1, signed, probe.period)


def fold_probe(ks: np.ndarray, slots: int, block: int, period: int = 0) -> FoldPlan:
    """The ``FoldPlan`` of offsets ``ks`` folded in blocks of ``block`` slots, its merged map's
    split searched, without diagonals (what its costs need)."""
    merged = np.unique(ks % block)
    n1, rep, _ = _search(merged, slots, False)
    blocks = tuple(sorted({int(v) for v in ks // block}))
    empty = np.empty((0, slots))
    return FoldPlan(block, merged, empty, np.empty(0), blocks, slots, n1, rep, period)


def best_pair_shift(
    offsets: np.ndarray, slots: int, extent: int, candidates: int = 6
) -> tuple[int, int, bool, float] | None:
    """``(shift, n1, signed, cost)`` of the cheapest pair fold of these offsets for an output
    within slots ``0 .. extent-1`` (cost: rotations + plaintext multiplies / 30), or ``None``
    when no shift merges any diagonals; memoized, since the output layouts' estimates and
    choose-kernels ask for the same maps.

    The output rows ``0 .. E-1`` and their copy ``s .. s+E-1`` are disjoint for any shift
    ``E <= s <= slots - E``: diagonal ``k`` may then be computed in the copy, where it is
    diagonal ``k - s``, so ``k`` and ``k + s`` share one plaintext, and ``y = P + rot(P, s)``
    (``build_pair_fold``: ``FoldPlan`` with ``B = s`` and blocks ``0, 1``). Unlike the
    power-of-two fold, whose ``B`` is fixed by ``E``, ``s`` is free: the shifts tried are those
    that pair the most offsets (an autocorrelation of the offset set), each costed with its
    own split. On a multiplexed convolution (Orion's LeNet-5 conv2, 1,859 diagonals on 3,136
    of 8,192 slots) the best shift is a multiple of the channel block: 1,014 plaintexts and 67
    rotations, against 1,649 and 109 for the power-of-two fold.
    """
    ks = np.unique(np.asarray(offsets, dtype=np.int64) % slots)
    key = (ks.tobytes(), slots, extent, candidates)
    return _memoized(_PAIRS, key, lambda: _best_pair_shift(ks, slots, extent, candidates))


def _best_pair_shift(
    ks: np.ndarray, slots: int, extent: int, candidates: int
) -> tuple[int, int, bool, float] | None:
    if 2 * extent > slots:
        return None
    present = np.zeros(slots)
    present[ks] = 1
    spectrum = np.fft.rfft(present)
    pairs = np.rint(np.fft.irfft(spectrum * spectrum.conj(), slots)).astype(np.int64)
    shifts = np.arange(extent, slots - extent + 1)
    # a shift's pairs overcount what it merges where chains k, k+s, k+2s.. are long (each
    # offset pairs once): the most-paired shortlist is ranked again by offsets merged
    shortlist = [int(v) for v in shifts[np.argsort(-pairs[shifts], kind="stable")][:64]]
    merges = {s: np.unique(_pair_labels(ks, slots, s)[0]) for s in shortlist if pairs[s]}
    best = None
    for s in sorted(merges, key=lambda v: merges[v].size)[:candidates]:
        n1, signed, cost = _pair_split(ks, slots, s, merges[s])
        if best is None or cost < best[3]:
            best = (s, n1, signed, cost)
    return best


def _pair_split(
    ks: np.ndarray, slots: int, shift: int, merged: np.ndarray
) -> tuple[int, bool, float]:
    """``(n1, signed, cost)`` of the pair fold of offsets ``ks`` with this ``shift`` (offsets
    ``merged`` after it)."""
    n1, rep, inner = _search(merged, slots, False)
    return n1, _signed(rep, merged, slots, False), inner + 1 + PT_MUL_PER_ROTATION * merged.size


def _pair_labels(offsets: np.ndarray, slots: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Per offset ``k``: its merged offset ``κ`` and copy ``j`` (``κ = k - j·shift``).

    Along each chain ``k, k + s, k + 2s, ..`` of offsets present, consecutive ones pair up
    from the chain's start (the most pairs a chain holds): the second of a pair moves into the
    copy and shares the first one's plaintext."""
    ks = np.asarray(offsets, dtype=np.int64) % slots
    present = set(ks.tolist())
    copy: dict[int, int] = {}
    for k0 in sorted(k for k in present if (k - shift) % slots not in present):
        k, j = k0, 0
        while k in present and k not in copy:
            copy[k] = j
            k, j = (k + shift) % slots, 1 - j
    for k in sorted(present - set(copy)):  # a chain that closes on itself (no start)
        j = 0
        while k not in copy:
            copy[k] = j
            k, j = (k + shift) % slots, 1 - j
    copies = np.array([copy[int(k)] for k in ks], dtype=np.int64)
    return (ks - copies * shift) % slots, copies


def build_pair_fold(
    offsets: np.ndarray, diags: np.ndarray, slots: int, shift: int, n1: int, signed: bool
) -> FoldPlan:
    """The ``FoldPlan`` of a map folded in two copies ``shift`` slots apart (``best_pair_shift``),
    its merged map split with baby step ``n1``."""
    kappa, j = _pair_labels(offsets, slots, shift)
    merged, which = np.unique(kappa, return_inverse=True)
    extent = slots - shift
    folded = np.zeros((len(merged), slots))  # copy 1 of d'_κ: rows r + shift of d_{κ+shift}
    first = j == 0
    np.add.at(folded, which[first], diags[first])
    if (~first).any():
        rows = shift + np.arange(extent)
        np.add.at(folded, (which[~first][:, None], rows), diags[~first][:, :extent])
    carried = np.bincount(which, minlength=len(merged))
    blocks = tuple(sorted({int(v) for v in j}))
    rep = representations(merged, slots, False)[int(signed)]
    return FoldPlan(shift, merged, folded, carried, blocks, slots, n1, rep)


def build_fold(
    offsets: np.ndarray,
    diags: np.ndarray,
    slots: int,
    block: int,
    n1: int,
    signed: bool,
    period: int = 0,
) -> FoldPlan:
    """The ``FoldPlan`` of a map folded in blocks of ``block`` slots (in lanes of ``period``
    slots; 0: one lane), its merged map split with baby step ``n1`` (offsets in their
    ``signed`` representation or not)."""
    ks = np.asarray(offsets, dtype=np.int64) % slots
    kappa, j = ks % block, ks // block
    merged, which = np.unique(kappa, return_inverse=True)
    blocks = tuple(sorted({int(v) for v in j}))
    folded = np.zeros((len(merged), slots))  # block j of d'_κ holds rows 0..B-1 of d_k
    for lane in range(0, slots, period or slots):  # .. and lane ℓ's, ℓ·H + rows 0..B-1
        cells = lane + j[:, None] * block + np.arange(block)
        folded[which[:, None], cells] = diags[:, lane : lane + block]
    carried = np.bincount(which, minlength=len(merged))
    rep = representations(merged, slots, False)[int(signed)]
    return FoldPlan(block, merged, folded, carried, blocks, slots, n1, rep, period)
