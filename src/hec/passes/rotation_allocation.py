"""Share a rotation budget among the maps of a slot program (``prune-blocks`` with
``rotation_budget``).

A rotation removed from one map is not worth one removed from another: LeNet-5's conv1 keeps
its accuracy with one kernel tap (digits are smooth), its fc2 collapses below a few residue
classes. One global order of blocks by score (what the sparsity targets use) cannot see that:
under a budget of 40 it left fc2 one residue class of 128 and the network at ~30%. So:

1. **Per map, an order**: the blocks are whole baby-step and giant-step groups (one rotation
   each) and, for a folded map, the blocks ``j`` of its block sum (a sum over a shorter
   window of blocks needs fewer rotations); each map's removal order is the greedy of
   ``prune_blocks`` (cheapest calibrated score relative to what is left of the map first),
   which only looks at the map itself. A map keeps at least one block (its offset-0
   diagonal, or its last group).
2. **Per map, its rotations** after each prefix of its order, as ``schedule-rotations`` will
   emit them at most: the groups still alive (the unpruned map's ``n1``; the scheduler may
   only find a cheaper split) plus, for a folded map, the block sum over the blocks its live
   diagonals still use.
3. **Allocation**: every map starts at its fewest rotations; then, while the budget allows,
   the map whose next step (the better per rotation of a quarter more rotations, at least
   one, and twice as many) lowers the network's calibration loss most *per rotation* gets
   it. The loss is the KL divergence of the pruned network's outputs from the unpruned
   network's (logits scaled by their spread, so that a far-off network still ranks by how
   far), after the least-squares refit that recovery will do (``hec.recover.refit``, on 3/4
   of the calibration inputs, the loss on the other quarter). Every map is measured again
   after each step (gains are not diminishing, so a lazy queue would rank maps by stale
   measurements). A sparsity asked for besides the budget caps the weights the steps may
   bring back.
4. The rotations the scheduler will really emit (its own search of ``n1`` and of fold vs.
   plain, ``map_rotations``) are then counted; budget left over goes to further steps.

A sparsity alone (``--prune S`` without ``--rotation-budget``) is turned into a budget here
too (``sparsity_budget``): the rotations fall with the weights, so the same allocation chooses
the blocks, and there is one way of choosing them under slot packing.

Preserves: nothing by itself (it chooses which weights ``prune-blocks`` zeroes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hec.ir import Graph, interpret
from hec.passes.diagonal_blocks import SlotMap
from hec.passes.schedule_rotations import FoldPlan, choose_split, split_cost
from hec.recover import prunable_ops, refit

__all__ = [
    "sparsity_budget",
    "MapChain",
    "fold_block",
    "map_chain",
    "map_rotations",
    "block_sum_rotations",
    "allocate",
    "trim",
    "CalibrationLoss",
]


def sparsity_budget(sparsity: float, rotations: int) -> int:
    """The rotation budget a weight sparsity asks for under slot packing: the unpruned
    program's ``rotations`` times ``sqrt(1 - sparsity)`` (at least one). A map's
    baby-step/giant-step rotations grow as the square root of its diagonals (``n1 + n/n1 >=
    2 sqrt(n)``), so a map keeping ``1 - sparsity`` of its diagonals keeps about that share
    of its rotations. Weights pruned diagonal by diagonal do not get there by themselves (a
    rotation goes only with a whole baby or giant step, and a weight sparsity lands in the
    large dense layers), so plain ``--prune S`` prunes under this budget, with ``S`` of the
    weights as well."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} is not in [0, 1)")
    return max(1, math.floor(math.sqrt(1.0 - sparsity) * rotations + 1e-9))


def fold_block(m: SlotMap) -> int:
    """The ``B`` a folding scheduler uses for map ``m`` (a power of two above its rows)."""
    return 1 << max(m.outputs - 1, 0).bit_length()


def block_sum_rotations(offsets: np.ndarray, m: SlotMap) -> int:
    """Rotations of a folded map's block sum over the blocks its ``offsets`` use."""
    block = fold_block(m)
    blocks = tuple(sorted({int(j) for j in (np.asarray(offsets) % m.slots) // block}))
    if not blocks:
        return 0
    e = np.empty(0)
    return FoldPlan(block, e, np.empty((0, m.slots)), e, blocks, m.slots, 1, e).rotations()


def map_rotations(offsets: np.ndarray, m: SlotMap, fold: bool) -> int:
    """The rotations ``schedule-rotations`` emits for map ``m`` with these diagonal offsets:
    its searched baby/giant split, or the fold (merged residues and a block sum) when that
    needs fewer (``fold_plan``'s rule)."""
    ks = np.unique(np.asarray(offsets, dtype=np.int64) % m.slots)
    if ks.size == 0:
        return m.stencil
    n1, rep = choose_split(ks, m.slots)
    plain = sum(split_cost(rep, n1, m.slots))
    block = fold_block(m)
    if not fold or block > m.slots // 2:
        return plain
    kappa = np.unique(ks % block)
    n1f, repf = choose_split(kappa, m.slots)
    folded = sum(split_cost(repf, n1f, m.slots)) + block_sum_rotations(ks, m)
    return min(plain, folded)


@dataclass
class MapChain:
    """One map's removal order and what each prefix of it costs.

    ``steps[i]``: the weights (global indices) removal ``i`` kills; ``rotations[p]``: the
    rotations (upper bound, see the module doc) once ``steps[:p]`` are removed, ``kept[p]``:
    the weights still alive then.
    """

    index: int
    steps: list[np.ndarray]
    rotations: np.ndarray
    kept: np.ndarray

    def prefix_for(self, rotations: int) -> int:
        """The shortest prefix (most kept) needing at most ``rotations``."""
        ok = np.flatnonzero(self.rotations <= rotations)
        return int(ok[0]) if ok.size else len(self.steps)


def map_chain(
    index: int,
    m: SlotMap,
    steps: list[np.ndarray],
    unit_pairs: tuple[np.ndarray, np.ndarray],
    diag_pairs: tuple[np.ndarray, np.ndarray],
    alive0: np.ndarray,
    fold: bool,
) -> MapChain:
    """Map ``index``'s chain: after every prefix ``p`` of its ``steps``, its live baby/giant
    groups (``unit_pairs``: weight, group) plus a folded map's block sum over the blocks of
    its live diagonals (``diag_pairs``: weight, offset), and its live weights."""
    uw, uu = unit_pairs
    dw, dk = diag_pairs
    alive = alive0.copy()
    folds = fold and m.prunable and fold_block(m) <= m.slots // 2
    rotations, kept = [], []
    mine = np.unique(dw)
    for p in range(len(steps) + 1):
        if p:
            alive[steps[p - 1]] = False
        kept.append(int(alive[mine].sum()))
        live_k = dk[alive[dw]]
        if live_k.size == 0:
            rotations.append(0)
            continue
        r = np.unique(uu[alive[uw]]).size
        rotations.append(r + (block_sum_rotations(live_k, m) if folds else 0))
    return MapChain(index, steps, np.asarray(rotations), np.asarray(kept))


class CalibrationLoss:
    """The network's loss once some weights are dead: refit (as recovery will), then the KL
    divergence of its outputs from the unpruned network's, on held-out calibration inputs,
    both logits divided by the unpruned logits' standard deviation (the temperature).

    Keeps the refitted graph of the current state, so a candidate that changes one map refits
    only from that map's first layer on.
    """

    def __init__(self, graph: Graph, x: np.ndarray) -> None:
        self.original = graph.clone()
        n = len(x)
        cut = (3 * n) // 4 if n >= 64 else n
        self.fit, self.held = x[:cut], (x[cut:] if cut < n else x)
        logits = interpret(self.original, self.held)[0].reshape(len(self.held), -1)
        # at the logits' own scale: a network far off (early in the search) still ranks by
        # how far, where at temperature 1 large logits make every loss saturate alike
        self.temperature = max(float(logits.std()), 1e-12)
        self.ref = _log_softmax(logits / self.temperature)
        self.ops = prunable_ops(self.original)
        self.position = {op.origin: i for i, op in enumerate(self.ops)}
        self.current = self.original.clone()

    def __call__(self, dead: dict[str, np.ndarray], start: int) -> tuple[float, Graph]:
        """Loss with ``dead`` (layer origin -> bool mask over its weight); layers before
        position ``start`` are as in the current state. Returns the loss and the graph."""
        g = self.current.clone()
        for i, (op, ref) in enumerate(zip(prunable_ops(g), self.ops, strict=True)):
            if i >= start and op.origin in dead:  # a layer with no blocks stays as it is
                w = ref.consts["weight"]
                op.consts = {**ref.consts, "weight": np.where(dead[op.origin], 0.0, w)}
        refit(g, self.original, self.fit, start=start)
        out = _log_softmax(
            interpret(g, self.held)[0].reshape(len(self.held), -1) / self.temperature
        )
        return float(np.mean(np.sum(np.exp(self.ref) * (self.ref - out), axis=1))), g


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def allocate(
    chains: list[MapChain],
    fixed: int,
    budget: int,
    loss: Callable[[list[int], int], tuple[float, Any]],
    accept: Callable[[Any], None],
    first_layer: dict[int, int],
    start: list[int] | None = None,
    max_kept: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Each chain's prefix (steps removed) under ``budget`` rotations (``fixed``: what maps
    outside the chains cost). ``loss(prefixes, start)`` measures a candidate, refitting from
    layer position ``start`` on, and returns ``(loss, state)``; ``accept(state)`` makes a
    measured candidate the current state; ``start``: the prefixes to grow from (default:
    every map at its fewest rotations); ``max_kept``: at most this many weights alive (a
    sparsity asked for besides the budget); ``progress(used)``: called with the rotations
    allocated so far, after each step. See the module doc (3)."""
    prefix = list(start) if start else [c.prefix_for(int(c.rotations[-1])) for c in chains]

    def alive_in(prefix: list[int]) -> int:
        return sum(int(c.kept[p]) for c, p in zip(chains, prefix, strict=True))

    if max_kept is not None and alive_in(prefix) > max_kept:
        prefix = [len(c.steps) for c in chains]  # the fewest weights the floor allows
    used = fixed + sum(int(c.rotations[p]) for c, p in zip(chains, prefix, strict=True))
    alive = alive_in(prefix)
    if used > budget:
        return prefix
    limit = max(max_kept, alive) if max_kept is not None else None
    current, state = loss(prefix, 0)
    accept(state)
    if progress is not None:
        progress(used)

    def candidate(i: int) -> tuple[float, int, float, Any] | None:
        """Chain ``i``'s best next step against the current state: ``(gain per rotation,
        prefix, loss, state)``, or ``None`` if it cannot grow."""
        c, p = chains[i], prefix[i]
        r = int(c.rotations[p])
        room = budget - used
        # the first prefix within the weights allowed (kept only falls along the chain)
        floor = 0 if limit is None else int(np.argmax(c.kept <= limit - alive + c.kept[p]))
        best, tried = None, set()
        # a quarter more, and twice as many: a map may need several rotations before they
        # pay (a fully connected layer reading few inputs per row), which single small
        # steps would never show
        for step in (max(1, (r + 3) // 4), max(2, r)):
            target = min(r + step, r + room)
            q = max(c.prefix_for(target), floor)
            while q >= p and target < r + room:  # the next prefix that keeps more
                target += 1
                q = max(c.prefix_for(target), floor)
            if q >= p or q in tried:
                continue
            tried.add(q)
            trial = list(prefix)
            trial[i] = q
            value, st = loss(trial, first_layer[c.index])
            gain = (current - value) / max(int(c.rotations[q]) - r, 1)
            if best is None or gain > best[0]:
                best = (gain, q, value, st)
        return best

    # Every map is measured again after each step: gains are not diminishing (a map's
    # rotations pay more once the maps around it are good), so a lazy queue would keep a
    # map measured early, against a poor network, at the bottom.
    while True:
        found = [(cand, i) for i in range(len(chains)) if (cand := candidate(i)) is not None]
        if not found:
            return prefix
        (_, q, value, st), i = max(found, key=lambda f: f[0][0])
        accept(st)
        used += int(chains[i].rotations[q]) - int(chains[i].rotations[prefix[i]])
        alive += int(chains[i].kept[q]) - int(chains[i].kept[prefix[i]])
        prefix[i], current = q, value
        if progress is not None:
            progress(used)


def trim(
    chains: list[MapChain],
    fixed: int,
    budget: int,
    loss: Callable[[list[int], int], tuple[float, Any]],
    accept: Callable[[Any], None],
    first_layer: dict[int, int],
    max_kept: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Each chain's prefix under ``budget`` rotations, from the whole network down (what a
    sparsity alone derives a budget for): while the program needs more than ``budget``
    rotations, the map whose next removal (a quarter of its rotations, at least one) raises
    the calibration loss least *per rotation saved* loses it; then, while more than
    ``max_kept`` weights are alive, the one raising it least per weight removed. Arguments as
    ``allocate``'s. Starting from the network that works, every step is measured against a
    good network, where ``allocate``, growing from every map at its fewest rotations, ranks
    its first steps against a broken one (LeNet-5 at a fifth of its rotations: one conv1 tap
    left, 73% after the refit)."""
    prefix = [0] * len(chains)
    used = used0 = fixed + sum(int(c.rotations[0]) for c in chains)
    alive = sum(int(c.kept[0]) for c in chains)
    current, state = loss(prefix, 0)
    accept(state)

    def candidate(i: int, by_weight: bool) -> tuple[float, int, float, Any] | None:
        c, p = chains[i], prefix[i]
        if p >= len(c.steps):
            return None
        r = int(c.rotations[p])
        if by_weight:  # the next removal that kills a weight
            q = p + 1
            while q < len(c.steps) and c.kept[q] == c.kept[p]:
                q += 1
            saved = int(c.kept[p]) - int(c.kept[q])
        else:  # the shortest prefix saving a quarter of its rotations (at least one)
            q = c.prefix_for(r - max(1, min(r // 4, used - budget)))
            saved = r - int(c.rotations[q])
        if saved <= 0 or q <= p:
            return None
        trial = list(prefix)
        trial[i] = q
        value, st = loss(trial, first_layer[c.index])
        return (value - current) / saved, q, value, st

    while used > budget or (max_kept is not None and alive > max_kept):
        by_weight = used <= budget
        found = [(cand, i) for i in range(len(chains)) if (cand := candidate(i, by_weight))]
        if not found:
            return prefix
        (_, q, value, st), i = min(found, key=lambda f: f[0][0])
        accept(st)
        used += int(chains[i].rotations[q]) - int(chains[i].rotations[prefix[i]])
        alive += int(chains[i].kept[q]) - int(chains[i].kept[prefix[i]])
        prefix[i], current = q, value
        if progress is not None:
            progress(budget * (used0 - used) // max(used0 - budget, 1))
    return prefix
