"""Packing-aware pruning of an HE-friendly graph, its recovery, and what it saved.

``hec optimize --prune`` and ``hec compile --prune`` run it after the HE-friendly conversion:
``prune-blocks`` zeroes packing-shaped blocks, ``recover.refit`` refits the surviving weights on
the calibration data, and (with ``hec[train]``) fine-tuning trains them with the pruning masks
fixed. The savings are counted on the *compiled* programs before and after (``report.json``
figures of the same lowering), never estimated from the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from hec.backend_openfhe.report_schema import CkksParameters, Layer, ProgramFigures
from hec.ir import Graph, interpret
from hec.options import CompileOptions
from hec.passes.expand_copies import copies_for
from hec.passes.input_layouts import NotApplicable
from hec.passes.one_input_neurons import (
    conv_ops,
    hidden_dense_ops,
    one_input_channel,
    one_input_per_neuron,
)
from hec.passes.prune_blocks import PruneBlocks
from hec.passes.rotation_allocation import sparsity_budget
from hec.plan import Plan
from hec.progress import ProgressFn, no_progress
from hec.recover import prunable_ops, reconstruction_errors, refit
from hec.search import Lowered, LoweringCache, Search

__all__ = [
    "PruneOptions",
    "Prune",
    "prune_graph",
    "derives_budget",
    "compiled_figures",
    "counted_program",
]


@dataclass(frozen=True)
class PruneOptions:
    """What to prune (see ``PruneBlocks``) and how to recover.

    Args:
        sparsity: fraction of the conv/matmul weights to remove. Slots, without
            ``rotation_budget`` (and not ``per_layer``, allocation ``loss``): the program's
            rotations are cut by the same fraction too (``derives_budget``), since weights
            alone leave them where they were.
        packing: ``"slots"`` (diagonal blocks) or ``"batch"`` (filter blocks and culling).
        rotation_budget: slots: prune until the program needs at most this many rotations.
        per_layer: the sparsity in every layer rather than over all weights.
        recover: refit the surviving weights by least squares on the calibration data.
        fine_tune_epochs: then train them with the masks fixed (needs ``hec[train]``).
        learning_rate: of that fine-tuning.
        score: how blocks are ranked: ``"calibrated"`` (expected output error on the
            calibration data) or ``"magnitude"`` (squared weights).
        allocation: how a rotation budget is shared among the maps: ``"loss"`` (by the
            network's calibration loss) or ``"global"`` (one removal order of all blocks,
            the former method; see ``PruneBlocks``; with a sparsity alone, the former
            diagonal-by-diagonal order, no budget derived).
        trim: a ``loss`` allocation removes rotations from the whole network down
            (``rotation_allocation.trim``), as a budget derived from the sparsity does,
            instead of growing every map from its fewest.
    """

    sparsity: float = 0.9
    packing: str = "slots"
    rotation_budget: int | None = None
    per_layer: bool = False
    recover: bool = True
    fine_tune_epochs: int = 0
    learning_rate: float = 1e-3
    score: str = "calibrated"
    allocation: str = "loss"
    trim: bool = False


def counted_program(
    graph: Graph, options: CompileOptions, packing: str, cache: LoweringCache | None = None
) -> Lowered:
    """The program ``hec compile`` writes for ``graph`` (the search's choice of layouts), as
    pruning counts it (its figures; the program itself may have been let go by the cache): a
    batch program too large for this machine is still counted.
    ``cache``: the compilation's, so that a graph counted once is not lowered again."""
    search = Search(options, cache=cache or LoweringCache())
    counting = search.derive(memory_limit=1 << 60, dump_ir_after=None)
    if packing == "slots":
        try:
            return counting.best_slots(graph, need_program=False)
        except NotApplicable:  # copies that do not fit (yet): the program a matrix readout makes
            if options.readout != "copies":
                raise
            return counting.derive(readout="matrix").best_slots(graph, need_program=False)
    return counting.lower(graph, Plan.of(counting.options, packing=packing), need_program=False)


def compiled_figures(
    graph: Graph, options: CompileOptions, packing: str, cache: LoweringCache | None = None
) -> ProgramFigures:
    """The report figures (``report.json`` totals and layers) of ``counted_program``."""
    return ProgramFigures.from_dict(counted_program(graph, options, packing, cache).figures)


@dataclass
class Prune:
    """prune: packing-aware block pruning of an HE-friendly tensor graph, then its recovery
    (``prune_graph``), run by the pass manager like any pass (verified, dumped).

    ``report`` is the pruning report after ``run``; ``plan`` the plan the pruned program was
    counted under (what ``hec optimize`` records for ``hec compile``).
    """

    options: PruneOptions
    calibration: np.ndarray
    search: Search  # the compilation's: its options, and its lowerings shared
    evaluation: tuple[np.ndarray, np.ndarray | None] | None = None
    train: tuple[np.ndarray, np.ndarray | None] | None = None
    progress: ProgressFn = no_progress
    report: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    name: ClassVar[str] = "prune"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        options, cache = self.search.options, self.search.cache
        self.report = prune_graph(
            graph,
            self.calibration,
            self.options,
            options,
            self.evaluation,
            self.train,
            self.progress,
            cache=cache,
        )
        self.plan = counted_program(graph, options, self.options.packing, cache).plan
        return True


def _accuracy(graph: Graph, x: np.ndarray, y: np.ndarray) -> float:
    from hec.metrics import accuracy, graph_ends_with_sigmoid

    return accuracy(interpret(graph, x)[0], y, graph_ends_with_sigmoid(graph))


def _prune(
    graph: Graph,
    original: Graph,
    calibration: np.ndarray,
    options: PruneOptions,
    copts: CompileOptions,
    cache: LoweringCache,
    progress: ProgressFn = no_progress,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``prune-blocks`` on ``graph``; returns its rows and, for a slot rotation budget shared
    by the loss, how the two structures below compared.

    Under a rotation budget the allocation runs twice: on the network as it is, and with its
    hidden dense layers first reduced to one input a neuron (``one_input_neurons``, matched to
    the inputs the first run left live) and their blocks read under anchored outputs, the
    inputs that pruning made constant then culled into the bias (``culling``); under a copies
    readout (``expand_copies``) its convolutions too are first reduced to few channels
    (``one_input_channel``: the first keeps its strongest filters, the later ones read one
    channel a filter), as many as the copies fit and one more, each tried. The one whose
    calibration loss after the refit (``rotation_allocation.CalibrationLoss``) is lower, and
    whose program is within the budget, is kept."""
    rows = _prune_within(graph, original, calibration, options, copts, cache, progress)
    budget_by_loss = options.rotation_budget is not None and options.allocation == "loss"
    if options.packing != "slots" or not budget_by_loss or not hidden_dense_ops(graph):
        return rows, None
    from hec.passes.culling import constant_inputs, cull_constant_inputs
    from hec.passes.rotation_allocation import CalibrationLoss

    was_const = constant_inputs(original, prunable_ops(original), calibration)

    def cull(g: Graph) -> None:
        cull_constant_inputs(
            g,
            prunable_ops(g),
            calibration,
            dict(zip([id(op) for op in prunable_ops(g)], was_const.values(), strict=True)),
        )

    loss = CalibrationLoss(original, calibration[:512])

    def loss_of(g: Graph) -> float:
        dead = {op.origin: op.consts["weight"] == 0 for op in prunable_ops(g)}
        return loss(dead, 0)[0]

    # under a copies readout, each channel count worth trying; the lowest loss within the
    # budget is kept (more channels than fit may fit once pruning has dropped some)
    counts = _copies_channels(original) if copts.readout == "copies" else [None]
    best: tuple[float, Graph, list, int | None] | None = None
    tried = {}
    for channels in counts:
        matched = original.clone()
        if channels is not None:  # and few conv channels, one input channel each
            one_input_channel(matched, channels)
            first = hidden_dense_ops(matched)[0]
            live = ~constant_inputs(matched, [first], calibration)[id(first)]
        else:
            first = hidden_dense_ops(graph)[0]
            live = ~constant_inputs(graph, [first], calibration)[id(first)]
        one_input_per_neuron(matched, live)
        other = matched.clone()
        rows_b = _prune_within(
            other,
            matched,
            calibration,
            options,
            copts,
            cache,
            progress,
            anchored=True,
            finish=cull,
        )
        value = loss_of(other)
        if channels is not None:
            tried[channels] = round(value, 5)
            used = compiled_figures(other, copts, "slots", cache).totals.rotations
            if options.rotation_budget is not None and used > options.rotation_budget:
                continue
        if best is None or value < best[0]:
            best = (value, other, rows_b, channels)
    losses = {"as_is": loss_of(graph)}
    if best is not None:
        losses["one_input_neurons"] = best[0]
    kept = min(losses, key=losses.__getitem__)
    if kept == "one_input_neurons" and best is not None:
        for op, new in zip(prunable_ops(graph), prunable_ops(best[1]), strict=True):
            op.consts = dict(new.consts)
        rows = best[2]
    report: dict[str, Any] = {
        "kept": kept,
        "calibration_loss": {k: round(v, 5) for k, v in losses.items()},
    }
    if best is not None and best[3] is not None:
        report["channels"] = best[3]
        report["channels_tried"] = tried
    return rows, report


# the copies readout's ciphertext at most this many slots (ring 2^16): the first convolution
# keeps as many channels as fit that many copies of the program
COPIES_SLOTS = 1 << 15


def _copies_channels(graph: Graph) -> list[int | None]:
    """Channel counts of the first convolution to try under ``readout="copies"``: the most
    with which the copies fit ``COPIES_SLOTS``, and one more (``[None]``: no convolution)."""
    convs = conv_ops(graph)
    if not convs:
        return [None]
    shape = convs[0].result.shape
    per = int(np.prod(shape[1:]))
    copies = copies_for(math.prod(graph.outputs[0].shape))
    fits = [
        k
        for k in range(1, shape[0] + 1)
        if (1 << (k * per - 1).bit_length()) * copies <= COPIES_SLOTS
    ]
    k = max(fits, default=1)
    return [k, k + 1] if k < shape[0] else [k]


def _prune_within(
    graph: Graph,
    original: Graph,
    calibration: np.ndarray,
    options: PruneOptions,
    copts: CompileOptions,
    cache: LoweringCache,
    progress: ProgressFn = no_progress,
    anchored: bool = False,
    finish: Callable[[Graph], None] | None = None,
) -> list[dict[str, Any]]:
    """``prune-blocks`` on ``graph`` (``anchored``: its option; ``finish``: run on the pruned
    graph before it is counted). With a rotation budget, the compiled program is counted:
    where the compiler's choices (layouts, splits) need more rotations than the pruning
    counted, it is pruned again from ``original`` under a budget lowered by the excess; where
    they need fewer (a pool the pruned program sums by rotations, ``stencil_sums``), under
    one raised by what is left, kept if it still fits; lowered up to five times while nothing
    fits."""
    target = budget = options.rotation_budget
    fits: tuple[list[dict[str, Any]], list[dict]] | None = None  # the last pruning within
    # three attempts; up to five while none has fit yet (a copies readout's estimate may be
    # off by more than one lowering corrects)
    for attempt in range(5):
        if attempt >= 3 and fits is not None:
            break
        if attempt:  # each attempt prunes the original weights
            for op, ref in zip(prunable_ops(graph), prunable_ops(original), strict=True):
                op.consts = dict(ref.consts)
        rows = PruneBlocks(
            options.sparsity,
            options.packing,
            budget,
            options.per_layer,
            calibration,
            copts.slots,
            score=options.score,
            # a scheduler folding short maps (a plaintext per offset residue) sets the blocks
            fold=copts.fold_short_maps,
            output_layouts=copts.output_layouts,
            input_layout=copts.input_layout,
            stencil_sums=copts.stencil_sums,
            allocation=options.allocation,
            anchored=anchored,
            readout="copies" if copts.readout == "copies" else "matrix",
            trim=options.trim,
            progress=progress,
        ).prune(graph)
        if finish is not None:
            finish(graph)
            zeros = {op.origin: int((op.consts["weight"] == 0).sum()) for op in prunable_ops(graph)}
            for row in rows:  # what `finish` zeroed counts as pruned
                row["weights_pruned"] = zeros.get(row["name"], row["weights_pruned"])
        if target is None or budget is None or options.packing != "slots":
            return rows
        used = compiled_figures(graph, copts, "slots", cache).totals.rotations
        if used <= target:
            fits = (rows, [dict(op.consts) for op in prunable_ops(graph)])
            if used == target:
                break
            budget += target - used
        elif fits is not None or budget - (used - target) < 0:
            break  # raised too far (the last that fit is kept), or nothing left to lower
        else:
            budget -= used - target
    if fits is None:
        return rows
    for op, consts in zip(prunable_ops(graph), fits[1], strict=True):
        op.consts = consts
    return fits[0]


def derives_budget(options: PruneOptions) -> bool:
    """Whether ``options`` prune under a rotation budget derived from the sparsity: slot
    packing, a sparsity and no budget asked for, over all weights (``per_layer`` keeps its
    diagonal order per layer) and by the loss allocation (``global`` keeps the former single
    diagonal order, to compare)."""
    return (
        options.packing == "slots"
        and options.rotation_budget is None
        and options.sparsity > 0
        and not options.per_layer
        and options.allocation == "loss"
    )


def _derived_budget(
    graph: Graph,
    options: PruneOptions,
    copts: CompileOptions,
    cache: LoweringCache,
    before: ProgramFigures | None,
) -> dict[str, Any] | None:
    """The rotation budget plain ``--prune S`` prunes under (``sparsity_budget`` of the
    unpruned program's rotations, counted as ``hec compile`` writes it), or ``None``."""
    if not derives_budget(options):
        return None
    unpruned = (before or compiled_figures(graph, copts, "slots", cache)).totals.rotations
    return {
        "sparsity": options.sparsity,
        "unpruned_rotations": unpruned,
        "rotation_budget": sparsity_budget(options.sparsity, unpruned),
    }


def prune_graph(
    graph: Graph,
    calibration: np.ndarray,
    options: PruneOptions,
    compile_options: CompileOptions | None = None,
    evaluation: tuple[np.ndarray, np.ndarray | None] | None = None,
    train: tuple[np.ndarray, np.ndarray | None] | None = None,
    progress: ProgressFn = no_progress,
    count: bool = True,
    cache: LoweringCache | None = None,
) -> dict[str, Any]:
    """Prune ``graph`` (HE-friendly tensor graph) in place; returns the pruning report.

    ``count``: compile before and after to report the HE operations each layer saved.
    ``cache``: the lowerings of the compilation this pruning is part of (shared, not redone).
    """
    if options.fine_tune_epochs:
        from hec.train import require_labels

        require_labels(None if train is None else train[1])
    copts = compile_options or CompileOptions()
    cache = cache or LoweringCache()
    original = graph.clone()
    packing = options.packing
    before = compiled_figures(graph, copts, packing, cache) if count else None
    asked = options
    derived = _derived_budget(graph, options, copts, cache, before)
    if derived is not None:
        options = replace(options, rotation_budget=derived["rotation_budget"], trim=True)
    progress("prune", 0, 3)
    rows, structures = _prune(graph, original, calibration, options, copts, cache, progress)
    progress("prune", 1, 3)
    report: dict[str, Any] = {
        "packing": packing,
        "target_sparsity": options.sparsity,
        "score": options.score,
        "rotation_budget": asked.rotation_budget,
        "per_layer": options.per_layer,
    }
    if derived is not None:
        report["rotation_budget_from_sparsity"] = derived
    if structures is not None:
        report["structures"] = structures
    errors = reconstruction_errors(graph, original, calibration)
    if options.recover:
        report["refit"] = refit(graph, original, calibration)
    # what recovery did, before fine-tuning moves the layers towards the task instead
    after_err = reconstruction_errors(graph, original, calibration)
    # the evaluation data when it has labels
    labelled = (
        (evaluation[0], evaluation[1])
        if evaluation is not None and evaluation[1] is not None
        else None
    )
    if options.fine_tune_epochs and labelled:  # what pruning and the refit alone leave
        report["accuracy_before_fine_tune"] = _accuracy(graph, *labelled)
    if options.fine_tune_epochs:
        from hec.train.fine_tune import fine_tune

        assert train is not None  # with labels: required on entry
        xt, yt = train
        assert yt is not None
        masks = {id(op): op.consts["weight"] != 0 for op in prunable_ops(graph)}
        report["fine_tune"] = {
            "epochs": options.fine_tune_epochs,
            "losses": [
                round(v, 5)
                for v in fine_tune(
                    graph,
                    xt,
                    yt,
                    options.fine_tune_epochs,
                    options.learning_rate,
                    progress=progress,
                    masks=masks,
                )
            ],
        }
    progress("prune", 2, 3)
    for row, e0, e1 in zip(rows, errors, after_err, strict=True):
        row["reconstruction_error"] = {"pruned": e0, "recovered": e1}
    total = sum(r["weights"] for r in rows)
    report["weights"] = total
    report["weights_pruned"] = sum(r["weights_pruned"] for r in rows)
    report["sparsity"] = report["weights_pruned"] / max(total, 1)
    if labelled:
        x, y = labelled
        report["accuracy"] = {
            "before": _accuracy(original, x, y),
            "after": _accuracy(graph, x, y),
            "samples": int(len(x)),
        }
    if before is not None:  # count
        after = compiled_figures(graph, copts, packing, cache)
        _attach_counts(rows, before, after)
        report["totals"] = {"before": _totals(before), "after": _totals(after)}
    report["layers"] = rows
    progress("prune", 3, 3)
    return report


_SLOT_KEYS = ("plaintext_multiplies", "rotations", "rotation_keys")
_BATCH_KEYS = (
    "scalar_multiplies",
    "additions",
    "ciphertexts",
    "ciphertext_multiplies",
    "rescales",
    "polynomials",
)


def _keys(fig: ProgramFigures) -> tuple[str, ...]:
    return _BATCH_KEYS if fig.packing == "batch" else _SLOT_KEYS


def _plaintext_bytes(layer: Layer, ck: CkksParameters) -> int:
    """Encoded diagonals of a slot layer: ``ring_dim`` 64-bit words per remaining prime."""
    return layer.plaintext_multiplies * ck.ring_dim * 8 * (ck.depth + 1 - layer.level_in)


def _attach_counts(rows: list[dict], before: ProgramFigures, after: ProgramFigures) -> None:
    """Per pruned layer, the compiled counts of the fused map(s) holding it, before/after."""
    for row in rows:
        for tag, fig in (("before", before), ("after", after)):
            maps = [
                lay
                for lay in fig.layers
                if row["name"] in lay.name.split("+") and lay.kind == "linear"
            ]
            counts = {k: sum(getattr(m, k) for m in maps) for k in _keys(fig)}
            if fig.packing == "slots":
                counts["plaintext_bytes"] = sum(_plaintext_bytes(m, fig.ckks) for m in maps)
            row[tag] = counts


def _totals(fig: ProgramFigures) -> dict[str, Any]:
    t = {k: getattr(fig.totals, k) for k in _keys(fig)}
    if fig.packing == "batch" and fig.memory is not None:
        t["he_operations"] = sum(
            getattr(fig.totals, k)
            for k in (
                "scalar_multiplies",
                "additions",
                "plaintext_additions",
                "ciphertext_multiplies",
            )
        )
        t["peak_bytes"] = fig.memory.program_bytes
        t["max_live_ciphertexts"] = fig.memory.max_live_ciphertexts
    else:
        t["plaintext_bytes"] = sum(_plaintext_bytes(m, fig.ckks) for m in fig.layers)
    from hec.backend_openfhe.cost_model import estimated_seconds

    t["estimated_seconds"] = round(estimated_seconds(fig), 3)
    return t
