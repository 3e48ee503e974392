"""prune-blocks: zero the weights of whole packing-shaped blocks, so every pruned block removes
HE operations (after MOFHEI).

Single zero weights save nothing under CKKS: a diagonal with one non-zero still costs a rotation
share and a plaintext multiply, a filter with one non-zero weight still produces its
ciphertexts. So the block follows the packing:

- **slots**: a block is one generalized diagonal of a fused map's slot matrix; it is gone when
  every weight putting a non-zero on it is zero (``diagonal_blocks`` builds that incidence from
  the lowering itself). Greedy: remove the diagonal whose still-alive weights cost least,
  kill those weights everywhere (other diagonals they fed may empty: free), repeat; cut the
  removal order at a global weight sparsity or at a per-layer sparsity. Under a
  ``rotation_budget`` the blocks are whole baby/giant-step groups (a rotation each), removed
  in each map's own greedy order, and the budget is shared among the maps by the network's
  loss on the calibration data after the refit (``rotation_allocation``); the rotations are
  counted as ``schedule-rotations`` will emit them.
- **batch**: a block is a whole filter / neuron (an output channel). A dead channel's
  ciphertexts are constants; the next layer's weights reading them are *culled* and their
  constant contribution is folded into its bias, so nothing reads those elements and the batch
  schedule never computes them (no ciphertext, no operation). Single weights inside kept
  filters may go too: a weighted sum skips a zero weight, one multiply per output position
  (``prune_filters``).

Scores: ``magnitude`` (``w²``) or ``calibrated`` (``w²·E[x²]`` over the calibration data: the
expected squared output error of removing the weight, exact per output row); normalized per
layer so layers compare. The output layer's neurons are never pruned under batch packing.

Preserves: the graph's structure and shapes (pruned weights are zeros in the same tensors, so
it exports to an ordinary ONNX model). The function changes, approximately: the accuracy cost
is measured (``hec.prune``) and recovered by ``hec.recover.refit``.
Requires: an HE-friendly tensor graph (polynomials only). Golden:
``tests/passes/golden/prune_blocks.txt`` (numeric tests beside it).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from hec.errors import InputError
from hec.ir import Graph, Op
from hec.passes.diagonal_blocks import SlotMap, slot_diagonals
from hec.passes.prune_filters import prune_filters
from hec.passes.rotation_allocation import (
    CalibrationLoss,
    allocate,
    fold_block,
    map_chain,
    map_rotations,
    trim,
)
from hec.passes.schedule_rotations import FoldPlan, choose_baby_step
from hec.progress import ProgressFn, no_progress
from hec.recover import layer_inputs, patches, prunable_ops

__all__ = ["PruneBlocks", "rotation_count", "weight_scores"]


def rotation_count(offsets: np.ndarray, slots: int) -> int:
    """Rotations ``schedule-rotations`` emits for a map with these diagonal offsets."""
    ks = np.unique(np.asarray(offsets, dtype=np.int64))
    if ks.size == 0:
        return 0
    n1 = choose_baby_step(ks, slots)
    babies = len({int(b) for b in ks % n1} - {0})
    giants = sum(1 for g in {int(g) for g in ks // n1} if g % slots)
    return babies + giants


def weight_scores(op: Op, xin: np.ndarray | None) -> np.ndarray:
    """Per weight (same shape as the weight): ``w²`` times the mean square of the input it
    multiplies (``calibrated``, when ``xin`` is given), normalized to sum 1 over the layer."""
    w = op.consts["weight"]
    s = w.astype(np.float64) ** 2
    if xin is not None:
        energy = np.mean(patches(op, xin) ** 2, axis=0)  # per fan-in position
        s = s * (energy[:, None] if op.kind == "matmul" else energy.reshape(1, *w.shape[1:]))
    total = s.sum()
    return s / total if total > 0 else s


@dataclass(frozen=True)
class PruneBlocks:
    """Prune packing-shaped blocks of the conv/matmul weights.

    Args:
        sparsity: fraction of the linear layers' weights to remove (global, or per layer with
            ``per_layer``); with ``rotation_budget`` (and the ``loss`` allocation), at least
            this fraction besides the budget (0: the budget alone).
        packing: ``"slots"`` (diagonal blocks) or ``"batch"`` (filter blocks + culling).
        rotation_budget: slots only: keep removing diagonals until the whole program needs at
            most this many rotations.
        per_layer: reach ``sparsity`` in every layer instead of over all weights.
        calibration: inputs ``[N, ...]`` for the calibrated score and for culling; ``None``:
            magnitude score (batch packing needs calibration data to fold culled channels).
        slots: slots per ciphertext of the lowering (``None``: as ``lower-to-slots``).
        single_weights: batch only: single weights inside kept filters may go too (each saves
            a multiply per output position there); ``False``: whole filters only (MOFHEI).
        score: ``"calibrated"`` (``w²·E[x²]``, needs ``calibration``) or ``"magnitude"``.
        fold: slots: the scheduler folds short maps (``B`` output rows or fewer, ``B`` a power
            of two up to ``slots/2``) into one plaintext per residue ``k mod B`` of the
            offsets; a block is then such a residue class of diagonals.
        output_layouts: slots: the compile option (``lower-to-slots``). Unless
            ``contiguous``, the blocks are read off strided outputs wherever a map has one:
            after pruning they are the cheaper layout (a conv weight on a few diagonals
            instead of hundreds), which ``auto`` then picks.
        input_layout: slots: the compile option. Unless ``direct``, the first map's blocks
            are read as the ``replicated`` input layout makes them (one diagonal per kernel
            tap), where it applies (``auto`` picks it there: fewer diagonals).
        stencil_sums: slots: the compile option. Under ``always`` the blocks are read with
            every pool a stencil sum (``stencil_sums``: its rotations fixed, one diagonal per
            weight after it); else with pools fused into the map after them.
        allocation: with ``rotation_budget``: ``loss`` shares the budget among the maps by
            the network's calibration loss (``rotation_allocation``; needs ``calibration``,
            else ``global``); ``global`` cuts one removal order of all maps' blocks at the
            longest prefix within the budget (the former method, kept to compare).
        progress: ``progress("allocate rotations", used, budget)`` as the ``loss``
            allocation hands out rotations (minutes on LeNet-5).
        anchored: slots: read the blocks of dense layers that are sparse already (at most
            ``ANCHOR_READS`` inputs a neuron) with their neurons on slots they read
            (``output_layouts``' anchored layout), as the compiler lays them out when cheaper.
        readout: slots: ``copies``: the output layer is computed on copies of the input
            (``expand_copies``): a fixed cost, its weights not pruned.
        trim: with the ``loss`` allocation: remove rotations from the whole network down
            (``rotation_allocation.trim``) instead of growing every map from its fewest
            (``allocate``); what a budget derived from a sparsity uses.
    """

    sparsity: float = 0.9
    packing: str = "slots"
    rotation_budget: int | None = None
    per_layer: bool = False
    calibration: np.ndarray | None = field(default=None, compare=False, repr=False)
    slots: int | None = None
    single_weights: bool = True
    score: str = "calibrated"
    fold: bool = False
    output_layouts: str = "auto"
    input_layout: str = "direct"
    stencil_sums: str = "auto"
    allocation: str = "loss"
    anchored: bool = False
    readout: str = "matrix"
    trim: bool = False
    progress: ProgressFn = field(default=no_progress, compare=False, repr=False)
    name: ClassVar[str] = "prune-blocks"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        self.prune(graph)
        return True

    def prune(self, graph: Graph) -> list[dict[str, Any]]:
        """Prune ``graph`` in place; returns one row per layer (blocks kept / pruned)."""
        if not 0.0 <= self.sparsity < 1.0:
            raise InputError(f"--prune {self.sparsity}: the sparsity must be in [0, 1)")
        ops = prunable_ops(graph)
        if not ops:
            return []
        if self.allocation not in ("loss", "global"):
            raise InputError(f"budget allocation {self.allocation!r} is not loss or global")
        if self.score not in ("calibrated", "magnitude"):
            raise InputError(f"pruning score {self.score!r} is not calibrated or magnitude")
        x = self.calibration
        calibrated = x is not None and self.score == "calibrated"
        inputs = layer_inputs(graph, x[:256], ops) if x is not None and calibrated else {}
        scores = {id(op): weight_scores(op, inputs.get(id(op))) for op in ops}
        if self.packing == "slots":
            return self._prune_slots(graph, scores)
        if self.packing == "batch":
            if x is None:
                raise InputError(
                    "batch-packing pruning needs calibration data (--calib) to "
                    "fold culled channels into the next layer's bias"
                )
            return prune_filters(
                graph, ops, scores, x, self.sparsity, self.per_layer, self.single_weights
            )
        raise InputError(f"--packing {self.packing!r} is not one of slots, batch")

    # -- slot packing: diagonal blocks ----------------------------------------------------
    def _prune_slots(self, graph: Graph, scores: dict[int, np.ndarray]) -> list[dict]:
        layouts = "contiguous" if self.output_layouts == "contiguous" else "strided"
        # `auto` compiles every input layout and keeps the cheapest: for a first convolution
        # with one input channel that is `replicated` (a diagonal per kernel tap)
        inputs = "direct" if self.input_layout == "direct" else "replicated"
        # pools fused into the next map (where `auto` leaves them until pruning makes a
        # stencil sum cheaper) unless the compiler is told to make every pool one
        stencils = self.stencil_sums == "always"
        maps, layers = slot_diagonals(
            graph, self.slots, layouts, inputs, stencils, self.anchored, self.readout
        )
        if not layers:
            return []
        diag_base = np.cumsum([0] + [len(m.offsets) for m in maps])
        w_base = np.cumsum([0] + [lay.op.consts["weight"].size for lay in layers])
        pw = np.concatenate([lay.pairs_weight + w_base[i] for i, lay in enumerate(layers)])
        pd = np.concatenate([lay.pairs_diag + diag_base[lay.map_index] for lay in layers])
        s = np.concatenate([scores[id(lay.op)].ravel() for lay in layers])
        layer_of_w = np.repeat(np.arange(len(layers)), np.diff(w_base))
        # zero weights are dead already: their diagonals may be free (and so are weights a
        # billion times below their layer's largest, which training left at ~1e-15: the
        # lowering drops them as negligible, the refit would bring them back)
        alive0 = np.concatenate([_alive(lay.op.consts["weight"]).ravel() for lay in layers])
        n_diag = int(diag_base[-1])
        unfolded = (maps, diag_base, pw, pd)  # diagonals, before merging them by residue
        if self.fold:  # blocks are the plaintexts of folded maps: diagonals merged by residue
            pd, diag_base, maps = _fold_units(maps, diag_base, pd)
            n_diag = int(diag_base[-1])
            key = np.unique(pw.astype(np.int64) * n_diag + pd)  # a weight once per unit
            pw, pd = key // n_diag, key % n_diag
            for i, lay in enumerate(layers):
                sel = (pw >= w_base[i]) & (pw < w_base[i + 1])
                lay.pairs_weight = pw[sel] - w_base[i]
                lay.pairs_diag = pd[sel] - diag_base[lay.map_index]
        map_of_d = np.repeat(np.arange(len(maps)), np.diff(diag_base))
        map_of_w = np.array([lay.map_index for lay in layers])[layer_of_w]
        greedy_args = (map_of_w, map_of_d)
        if self.rotation_budget is not None:
            # blocks: whole baby-step and giant-step groups (each one rotation) of every map
            pw_u, pu, map_of_u = _bsgs_units(maps, diag_base, pw, pd)
            by_loss = self.allocation == "loss" and self.calibration is not None
            gw, gu, gmap = pw_u, pu, map_of_u
            if by_loss and self.fold:  # and blocks of a block sum, which shortens as they go
                pw_b, pb, map_of_b = _sum_blocks(*unfolded)
                gw, gu = np.concatenate([pw_u, pw_b]), np.concatenate([pu, pb + len(map_of_u)])
                gmap = np.concatenate([map_of_u, map_of_b])
            order, killed = _greedy(gw, gu, s, len(gmap), alive0, False, map_of_w, gmap)
            if by_loss:  # each map's share by the network's loss
                unit_pairs = (pw_u, map_of_u[pu], pu)
                dead_w = self._allocate(
                    graph, layers, w_base, unfolded, unit_pairs, order, killed, gmap, alive0
                )
            else:
                cut = _budget_cut(killed, maps, diag_base, pw, pd, alive0, self.rotation_budget)
                dead_w = _dead_weights(killed, cut, len(s), alive0)
        elif self.per_layer:
            dead_w = ~alive0
            for index in range(len(maps)):
                in_map = [i for i, lay in enumerate(layers) if lay.map_index == index]
                if not in_map:
                    continue
                wmask = np.isin(layer_of_w, in_map)
                sel = wmask[pw]
                order, killed = _greedy(pw[sel], pd[sel], s, n_diag, alive0, True, *greedy_args)
                cut = _sparsity_cut(
                    killed, int(np.ceil(self.sparsity * wmask.sum())), int((~alive0 & wmask).sum())
                )
                dead_w |= _dead_weights(killed, cut, len(s), alive0)
        else:
            order, killed = _greedy(pw, pd, s, n_diag, alive0, True, *greedy_args)
            cut = _sparsity_cut(killed, int(np.ceil(self.sparsity * len(s))), int((~alive0).sum()))
            dead_w = _dead_weights(killed, cut, len(s), alive0)
        live_diag = np.zeros(n_diag, dtype=bool)
        live_diag[pd[~dead_w[pw]]] = True
        rows = []
        for i, lay in enumerate(layers):
            w = lay.op.consts["weight"]
            dead = dead_w[w_base[i] : w_base[i + 1]].reshape(w.shape)
            lay.op.consts = {**lay.op.consts, "weight": np.where(dead, 0.0, w)}
            m = maps[lay.map_index]
            own = np.unique(lay.pairs_diag)
            rows.append(
                {
                    "name": lay.op.origin,
                    "map": m.origin,
                    "block": "residue" if m.outputs and self.fold and _folds(m) else "diagonal",
                    "weights": int(w.size),
                    "weights_pruned": int(dead.sum()),
                    "blocks": int(own.size),
                    "blocks_kept": int(live_diag[own + diag_base[lay.map_index]].sum()),
                }
            )
        # a layer with no blocks (the output layer of a copies readout) is left whole
        by_name = {row["name"]: row for row in rows}
        return [by_name.get(op.origin) or _unblocked_row(op) for op in prunable_ops(graph)]

    def _allocate(
        self,
        graph: Graph,
        layers: list,
        w_base: np.ndarray,
        unfolded: tuple,
        unit_pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
        order: list[int],
        killed: list[np.ndarray],
        map_of_u: np.ndarray,
        alive0: np.ndarray,
    ) -> np.ndarray:
        """Dead weights under ``rotation_budget``: each map's blocks go in its own greedy
        order, and the budget is shared among the maps by the network's calibration loss
        (``rotation_allocation``)."""
        maps, diag_base, pw, pd = unfolded
        uw, umap, uu = unit_pairs
        map_of_d = np.repeat(np.arange(len(maps)), np.diff(diag_base))
        fold = self.fold
        chains, fixed = [], 0
        for m, smap in enumerate(maps):
            if not smap.prunable:
                fixed += map_rotations(smap.offsets, smap, fold)
                continue
            steps = [ws for u, ws in zip(order, killed, strict=True) if map_of_u[u] == m]
            sel_d = map_of_d[pd] == m
            diag_pairs = (pw[sel_d], smap.offsets[pd[sel_d] - diag_base[m]])
            sel_u = umap == m
            pairs = (uw[sel_u], uu[sel_u])
            chains.append(map_chain(m, smap, steps, pairs, diag_pairs, alive0, fold))
        positions = {op.origin: i for i, op in enumerate(prunable_ops(graph))}
        first = {
            c.index: min(positions[lay.op.origin] for lay in layers if lay.map_index == c.index)
            for c in chains
        }
        budget, x = self.rotation_budget, self.calibration
        if budget is None or x is None:
            raise ValueError("the loss allocation needs a rotation budget and calibration data")
        loss = CalibrationLoss(graph, x[:512])

        def dead_of(prefix: list[int]) -> np.ndarray:
            dead = ~alive0
            for c, p in zip(chains, prefix, strict=True):
                for ws in c.steps[:p]:
                    dead[ws] = True
            return dead

        def measure(prefix: list[int], start: int) -> tuple[float, Graph]:
            dead = dead_of(prefix)
            masks = {
                lay.op.origin: dead[w_base[i] : w_base[i + 1]].reshape(
                    lay.op.consts["weight"].shape
                )
                for i, lay in enumerate(layers)
            }
            return loss(masks, start)

        def accept(g: Graph) -> None:
            loss.current = g

        def exact(prefix: list[int]) -> int:
            live = ~dead_of(prefix)[pw]
            total = fixed
            for c in chains:
                sel = live & (map_of_d[pd] == c.index)
                offs = maps[c.index].offsets[pd[sel] - diag_base[c.index]]
                total += map_rotations(offs, maps[c.index], fold)
            return total

        # a sparsity asked for besides the budget: at most that many weights alive
        kept = int(np.floor((1 - self.sparsity) * len(alive0))) - int(
            alive0.sum() - sum(int(c.kept[0]) for c in chains)
        )
        cap = kept if self.sparsity > 0 else None

        def tick(used: int) -> None:
            self.progress("allocate rotations", min(used, budget - 1), budget)

        if self.trim:  # from the whole network down (a budget a sparsity derived)
            prefix = trim(chains, fixed, budget, measure, accept, first, cap, tick)
        else:
            prefix = allocate(
                chains, fixed, budget, measure, accept, first, max_kept=cap, progress=tick
            )
        # the counts above are upper bounds; the scheduler's own split may need fewer: give
        # out what is left (an allowance that overshoots is halved, from the last that fit)
        feasible, fits, ub = prefix, budget, budget
        for _ in range(4):
            used = exact(prefix)
            if used <= budget:
                feasible, fits = prefix, ub
                if used == budget:
                    break
                ub += budget - used
            elif ub - fits > 1:
                ub = fits + (ub - fits) // 2
            else:
                break
            prefix = allocate(chains, fixed, ub, measure, accept, first, feasible, cap, tick)
            if prefix == feasible:
                break
        self.progress("allocate rotations", budget, budget)
        return dead_of(feasible)


def _unblocked_row(op: Op) -> dict[str, Any]:
    w = op.consts["weight"]
    return {
        "name": op.origin,
        "map": op.origin,
        "block": "none",
        "weights": int(w.size),
        "weights_pruned": int((w == 0).sum()),
        "blocks": 0,
        "blocks_kept": 0,
    }


def _alive(w: np.ndarray) -> np.ndarray:
    """The weights that count: not zero, nor negligible next to the layer's largest."""
    return np.abs(w) > 1e-9 * float(np.abs(w).max(initial=0.0))


def _folds(m: SlotMap) -> bool:
    """Whether a folding scheduler can evaluate map ``m`` per residue class (short map)."""
    return (
        m.prunable
        and m.offsets.size > 0
        and 1 << max(m.outputs - 1, 0).bit_length() <= (m.slots // 2)
    )


def _fold_units(maps: list[SlotMap], diag_base: np.ndarray, pd: np.ndarray):
    """Diagonal ids → residue-class ids for maps a folding scheduler evaluates per residue
    ``κ = k mod B``; other maps keep their diagonals. Returns ``(pd, base, maps)`` with each
    map's offsets replaced by its units' representatives (the residues, for folded maps)."""
    unit_of = np.empty(int(diag_base[-1]), dtype=np.int64)
    new_maps, base = [], [0]
    for i, m in enumerate(maps):
        block = 1 << max(m.outputs - 1, 0).bit_length()
        if _folds(m):
            kappa, which = np.unique(m.offsets % block, return_inverse=True)
            unit_of[diag_base[i] : diag_base[i + 1]] = base[-1] + which
            # the block sum of the unpruned map: pruning leaves it the same or shorter
            blocks = tuple(sorted({int(j) for j in (m.offsets % m.slots) // block}))
            empty = np.empty((0, m.slots))
            probe = FoldPlan(block, kappa, empty, np.empty(0), blocks, m.slots, 1, kappa)
            new_maps.append(SlotMap(m.origin, kappa, m.slots, True, m.outputs, probe.rotations()))
        else:
            unit_of[diag_base[i] : diag_base[i + 1]] = base[-1] + np.arange(m.offsets.size)
            new_maps.append(m)
        base.append(base[-1] + new_maps[-1].offsets.size)
    return unit_of[pd], np.asarray(base), new_maps


def _greedy(
    pw: np.ndarray,
    pd: np.ndarray,
    s: np.ndarray,
    n_diag: int,
    alive0: np.ndarray,
    mean: bool,
    map_of_w: np.ndarray,
    map_of_d: np.ndarray,
) -> tuple[list[int], list[np.ndarray]]:
    """Remove diagonals cheapest first; returns the order and the weights each step kills.

    Cost of a diagonal: the summed score of the alive weights on it, relative to the score
    still alive in its map (so each further cut of a thinned layer weighs more, and no layer
    is emptied because it is large); ``mean``: per weight killed, so that a weight-sparsity
    target is reached at the least cost. A diagonal whose weights all died costs 0 and goes
    next, for free. Costs only grow, so stale heap entries are re-queued when popped.
    """
    alive = alive0.copy()
    by_diag = sp.csr_matrix((np.ones(len(pw)), (pd, pw)), shape=(n_diag, len(s)))
    by_w = by_diag.tocsc()
    live_pairs = alive[pw]
    cost = np.bincount(pd[live_pairs], weights=s[pw[live_pairs]], minlength=n_diag)
    count = np.bincount(pd[live_pairs], minlength=n_diag).astype(np.int64)
    remaining = np.bincount(map_of_w[alive], weights=s[alive], minlength=map_of_d.max() + 1)
    alive_in_map = np.bincount(map_of_w[alive], minlength=len(remaining))
    present = np.zeros(n_diag, dtype=bool)
    present[pd] = True

    def prio(d: int) -> float:
        if count[d] <= 0:
            return 0.0
        rel = cost[d] / max(remaining[map_of_d[d]], 1e-300)
        return rel / count[d] if mean else rel

    heap = [(prio(d), d) for d in np.flatnonzero(present)]
    heapq.heapify(heap)
    removed = np.zeros(n_diag, dtype=bool)
    order, killed = [], []
    while heap:
        p, d = heapq.heappop(heap)
        if removed[d]:
            continue
        now = prio(d)
        if now != p:
            heapq.heappush(heap, (now, d))
            continue
        removed[d] = True
        ws = by_diag.indices[by_diag.indptr[d] : by_diag.indptr[d + 1]]
        ws = ws[alive[ws]]
        if len(ws) and len(ws) >= alive_in_map[map_of_d[d]]:
            continue  # a map keeps one block: an all-zero map is not a linear layer any more
        alive_in_map[map_of_d[d]] -= len(ws)
        alive[ws] = False
        for w in ws:
            ds = by_w.indices[by_w.indptr[w] : by_w.indptr[w + 1]]
            cost[ds] -= s[w]
            count[ds] -= 1
            remaining[map_of_w[w]] -= s[w]
        order.append(int(d))
        killed.append(ws)
    return order, killed


def _sparsity_cut(killed: list[np.ndarray], target: int, already: int) -> int:
    """The shortest prefix of the removal order killing ``target`` weights in all."""
    total = already
    for i, ws in enumerate(killed):
        if total >= target:
            return i
        total += len(ws)
    return len(killed)


def _dead_weights(killed: list[np.ndarray], cut: int, n: int, alive0: np.ndarray) -> np.ndarray:
    dead = ~alive0.copy()
    for ws in killed[:cut]:
        dead[ws] = True
    return dead


def _bsgs_units(maps: list[SlotMap], diag_base: np.ndarray, pw: np.ndarray, pd: np.ndarray):
    """Weight-unit pairs where a unit is a map's baby step ``b != 0`` or giant step ``g != 0``
    (``k = g·n1 + b`` with the ``n1`` ``schedule-rotations`` picks for the unpruned map):
    removing a unit removes one rotation. Returns ``(pairs_weight, pairs_unit, map_of_unit)``."""
    keys_w, keys_u = [], []
    for i, m in enumerate(maps):
        if not m.prunable or m.offsets.size == 0:
            continue
        n1 = choose_baby_step(m.offsets, m.slots)
        sel = (pd >= diag_base[i]) & (pd < diag_base[i + 1])
        k = m.offsets[pd[sel] - diag_base[i]]
        baby, giant = k % n1, k // n1
        span = m.slots + 1
        for kind, value, valid in ((0, baby, baby != 0), (1, giant, giant % m.slots != 0)):
            keys_w.append(pw[sel][valid])
            keys_u.append((i * 2 + kind) * span + value[valid])
    if not keys_w:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    units, pu = np.unique(np.concatenate(keys_u), return_inverse=True)
    span_of = np.array([m.slots + 1 for m in maps])
    map_of_u = np.array([u // 2 for u in units // span_of.max()])  # all maps share slots
    return np.concatenate(keys_w), pu, map_of_u


def _sum_blocks(maps: list[SlotMap], diag_base: np.ndarray, pw: np.ndarray, pd: np.ndarray):
    """Weight-unit pairs where a unit is a block ``j`` of a folded map's block sum (the
    diagonals ``k`` with ``k mod slots`` in ``[B·j, B·j + B)``): once no weight is left on it,
    the sum runs over fewer blocks, a shorter window. Returns
    ``(pairs_weight, pairs_unit, map_of_unit)``; ``pd`` indexes the maps' own diagonals."""
    keys_w, keys_u = [], []
    span = max((m.slots for m in maps), default=1) + 1
    for i, m in enumerate(maps):
        if not _folds(m):
            continue
        sel = (pd >= diag_base[i]) & (pd < diag_base[i + 1])
        k = m.offsets[pd[sel] - diag_base[i]] % m.slots
        keys_w.append(pw[sel])
        keys_u.append(i * span + k // fold_block(m))
    if not keys_w:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    units, pu = np.unique(np.concatenate(keys_u), return_inverse=True)
    return np.concatenate(keys_w), pu, units // span


def _budget_cut(
    killed: list[np.ndarray],
    maps: list[SlotMap],
    diag_base: np.ndarray,
    pw: np.ndarray,
    pd: np.ndarray,
    alive0: np.ndarray,
    budget: int,
) -> int:
    """The shortest prefix of the removals after which the program needs ``<= budget``
    rotations: a diagonal stays while one of its weights lives, and each map's rotations are
    counted as ``schedule-rotations`` will emit them (its ``n1`` chosen again). Bisection: the
    count falls, not always strictly, as weights die."""

    def rotations(cut: int) -> int:
        dead = _dead_weights(killed, cut, len(alive0), alive0)
        live = np.zeros(int(diag_base[-1]), dtype=bool)
        live[pd[~dead[pw]]] = True
        total = 0
        for i, m in enumerate(maps):
            offsets = m.offsets[live[diag_base[i] : diag_base[i + 1]]] if m.prunable else m.offsets
            total += rotation_count(offsets, m.slots) + (m.sum_rotations if offsets.size else 0)
            total += m.stencil
        return total

    lo, hi = 0, len(killed)
    if rotations(hi) > budget:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if rotations(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo
