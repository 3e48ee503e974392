"""The search layer: lower an HE-friendly tensor graph under candidate plans, keep the cheapest.

A candidate is a packing pipeline (``passes.pipeline``) run on a clone of the tensor graph with
one ``Plan``: the input layout, the output layouts, the readout and the packing. Candidates are
compared on ``ProgramStats`` (the compiled counts and the cost model's estimate), never on
guesses. Lowerings are memoized by the graph's contents and the options, so a graph lowered
twice (the pruner's last count and the program ``hec compile`` writes, or the same candidate
asked for by two comparisons) is lowered once; ``Search.lowerings`` counts those that ran.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from hec.backend_openfhe import choose_params, program_report
from hec.backend_openfhe.batch_memory import (
    PROCESS_BASELINE,
    bound_plan,
    check_fits,
    machine_memory,
    plan_memory,
)
from hec.backend_openfhe.cost_model import estimated_seconds
from hec.backend_openfhe.params import (
    MAX_RING_DIM,
    CKKSParams,
    min_ring_dim,
    program_depth,
    rotation_indices,
)
from hec.backend_openfhe.precision import measure_noise
from hec.backend_openfhe.report import batch_program_report
from hec.backend_openfhe.scale_drift import compensate_scale_drift
from hec.errors import LayoutError, ParameterError, ResourceError
from hec.ir import Graph
from hec.ir.slot_ops import key_groups, rotation_amounts
from hec.options import DEFAULT_PRECISION, CompileOptions
from hec.passes import LowerToBatch, PassManager, batch_packing_pipeline, slot_packing_pipeline
from hec.passes.check_ranges import CheckRanges
from hec.passes.input_layouts import INPUT_LAYOUTS, NotApplicable
from hec.passes.output_layouts import may_anchor
from hec.plan import Plan
from hec.progress import ProgressFn, no_progress
from hec.runtime.simulator import check_block_local

__all__ = [
    "ProgramStats",
    "Lowered",
    "Search",
    "graph_fingerprint",
    "resolve_precision",
    "within_memory",
]

# the counts a candidate layout is listed with in ``report.json`` → ``input_layout``
_LAYOUT_FIGURES = ("rotations", "diagonals", "plaintext_multiplies", "rotation_keys")


def resolve_precision(options: CompileOptions, has_samples: bool) -> float | None:
    """The output error a slot program's scale and first modulus are chosen for, or ``None``
    (``options.scaling_bits`` and ``first_mod_bits`` decide). ``"auto"``: ``DEFAULT_PRECISION``
    where typical inputs are given, the packing is slots and both bit widths are at their
    defaults (a program that then needs bootstrapping keeps its chain's fixed scale)."""
    if options.precision != "auto":
        return None if options.precision is None or not has_samples else float(options.precision)
    default = CompileOptions()
    unfixed = (options.scaling_bits, options.first_mod_bits) == (
        default.scaling_bits,
        default.first_mod_bits,
    )
    if has_samples and unfixed and options.packing != "batch":
        return DEFAULT_PRECISION
    return None


@dataclass(frozen=True)
class ProgramStats:
    """What the search compares of a compiled program (from its report figures)."""

    rotations: int
    diagonals: int
    plaintext_multiplies: int
    rotation_keys: int
    slots: int
    ring_dim: int
    estimated_seconds: float

    @classmethod
    def of(cls, figures: dict[str, Any]) -> ProgramStats:
        totals = figures["totals"]
        return cls(
            rotations=int(totals.get("rotations", 0)),
            diagonals=int(totals.get("diagonals", 0)),
            plaintext_multiplies=int(totals.get("plaintext_multiplies", 0)),
            rotation_keys=int(totals.get("rotation_keys", 0)),
            slots=int(figures["ckks"]["slots"]),
            ring_dim=int(figures["ckks"]["ring_dim"]),
            estimated_seconds=estimated_seconds(figures),
        )


@dataclass
class Lowered:
    """One lowered candidate: the program, its CKKS parameters, its report figures, its plan."""

    program: Graph | None  # None: let go by the cache, only the figures were asked for
    params: CKKSParams
    figures: dict[str, Any]
    plan: Plan

    @cached_property
    def stats(self) -> ProgramStats:  # computed once: the cost model reads its table file
        return ProgramStats.of(self.figures)


def graph_fingerprint(graph: Graph) -> str:
    """SHA-256 of everything a lowering reads of ``graph``: ops, wiring, attributes, types and
    constants (exact bytes). Two graphs with the same fingerprint lower to the same program."""
    h = hashlib.sha256()
    index: dict[int, int] = {}
    for v in graph.inputs:
        index[id(v)] = len(index)
        h.update(f"in {v.type}\n".encode())
    for op in graph.ops:
        args = [index[id(v)] for v in op.inputs]
        h.update(f"{op.kind} {args} {sorted(op.attrs.items())!r} {op.origin}\n".encode())
        for key in sorted(op.consts):
            c = np.ascontiguousarray(op.consts[key])
            h.update(f"{key} {c.dtype} {c.shape}\n".encode())
            h.update(c.tobytes())
        for r in op.results:
            index[id(r)] = len(index)
            h.update(f"{r.name}: {r.type}\n".encode())
    h.update(f"out {[index[id(v)] for v in graph.outputs]}".encode())
    return h.hexdigest()


@dataclass
class LoweringCache:
    """Lowered candidates by (graph fingerprint, options, plan), and how many lowerings ran.

    Every candidate's parameters and figures are kept; its program (hundreds of MB for LeNet-5,
    one plaintext vector per diagonal) only for the ``keep`` most recently used, so that a long
    search (pruning counts dozens of programs) holds few. A search's chosen candidate is used
    last, so the program ``compile`` asks for next is still there.
    """

    # a lowered candidate, or why it does not apply (raised again when asked again)
    programs: OrderedDict[tuple, Lowered | Exception] = field(
        default_factory=OrderedDict, repr=False
    )
    lowerings: int = 0
    keep: int = 2

    def use(self, key: tuple) -> Lowered | Exception:
        """The entry of ``key``, now the most recently used; older programs are let go."""
        self.programs.move_to_end(key)
        held = 0
        for k in reversed(self.programs):
            entry = self.programs[k]
            if isinstance(entry, Lowered) and entry.program is not None:
                held += 1
                if held > self.keep:
                    self.programs[k] = replace(entry, program=None)
        return self.programs[key]


@dataclass
class Search:
    """Lowers candidates of one compilation (``options`` says which are allowed).

    Args:
        options: the compile options; ``packing``, ``input_layout``, ``output_layouts`` and
            ``readout`` may be ``auto`` (every candidate that applies is lowered and the one with
            the lowest estimated time kept).
        plan: a recorded plan to lower exactly (``hec.plan.replay_plan``): no candidates.
        progress: progress callback of the lowering passes.
        first_index: where the IR dumps' numbering continues (after the HE-friendly passes).
        cache: shared by the searches of one compilation (``derive``).
    """

    options: CompileOptions
    plan: Plan | None = None
    progress: ProgressFn = no_progress
    first_index: int = 1
    cache: LoweringCache = field(default_factory=LoweringCache)
    # typical inputs (the calibration data): with ``options.precision``, slot programs get the
    # scale and first modulus that precision needs (``backend_openfhe.precision``)
    samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def lowerings(self) -> int:
        """Lowerings that ran (a memoized one is not counted again)."""
        return self.cache.lowerings

    def derive(self, **changes: Any) -> Search:
        """A search with some options changed, sharing this one's cache (no plan, quiet)."""
        options = replace(self.options, **changes)
        return Search(options, None, no_progress, self.first_index, self.cache, self.samples)

    # -- one candidate ----------------------------------------------------------------------
    def lower(
        self,
        graph: Graph,
        plan: Plan,
        options: CompileOptions | None = None,
        need_program: bool = True,
        fingerprint: str | None = None,
    ) -> Lowered:
        """Run ``plan``'s packing pipeline on a copy of ``graph``: the program, its parameters
        and its report figures (batch packing: refused here if predicted not to fit in memory).
        ``need_program=False``: a candidate lowered before may come back without its program
        (``LoweringCache``), the figures are enough. ``fingerprint``: ``graph``'s, when the
        caller has it (a search lowers one graph several times)."""
        opts = plan.apply(options or self.options)
        key = self._key(graph, plan, opts, fingerprint)
        programs = self.cache.programs
        entry = programs.get(key)
        rerun = isinstance(entry, Lowered) and entry.program is None and need_program
        if entry is None or rerun or opts.dump_ir_after is not None:
            try:
                programs[key] = self._run(graph, opts, plan)
            except (NotApplicable, ParameterError, ResourceError) as exc:
                programs[key] = exc  # a candidate that does not apply is not tried again
                raise
        done = self.cache.use(key)
        if isinstance(done, Exception):
            raise done
        return Lowered(done.program, done.params, copy.deepcopy(done.figures), plan)

    @staticmethod
    def _key(
        graph: Graph, plan: Plan, options: CompileOptions, fingerprint: str | None = None
    ) -> tuple:
        """What a lowering depends on: dumping and (in slot packing) the memory limit do not
        change the program."""
        same = replace(options, dump_ir_after=None)
        if plan.packing == "slots":
            same = replace(same, memory_limit=None)
        return (fingerprint or graph_fingerprint(graph), same, plan)

    def _keep_chosen(
        self,
        graph: Graph,
        best: Lowered,
        options: CompileOptions,
        need_program: bool,
        fingerprint: str,
    ) -> Lowered:
        """Make ``best`` (lowered under ``options``) the most recently used candidate, its
        program held by the cache (lowered again if it was let go and is needed)."""
        key = self._key(graph, best.plan, best.plan.apply(options), fingerprint)
        entry = self.cache.programs[key]
        if best.program is not None and isinstance(entry, Lowered):
            self.cache.programs[key] = replace(entry, program=best.program)
        elif best.program is None and need_program:
            return self.lower(graph, best.plan, options, fingerprint=fingerprint)
        self.cache.use(key)
        return best

    def _run(self, graph: Graph, options: CompileOptions, plan: Plan) -> Lowered:
        self.cache.lowerings += 1
        program = graph.clone()
        target = resolve_precision(options, self.samples is not None)
        if plan.packing == "batch":
            passes = batch_packing_pipeline(options, self._batch_slots(program, options))
        else:
            passes = slot_packing_pipeline(
                options, check_ranges=target is None, progress=self.progress
            )
        total = len(passes)
        done = iter(range(total))
        PassManager(
            passes,
            dump_dir=options.dump_ir_after,
            progress=lambda name: self.progress(f"compile: {name}", next(done), total),
            first_index=self.first_index,
        ).run(program)
        self.progress("compile", total, total)
        if plan.packing == "batch":
            params = choose_params(
                program, options.scaling_bits, options.first_mod_bits, options.security
            )
            return Lowered(program, params, self._batch_report(program, params, options), plan)
        bits, precision = (options.scaling_bits, options.first_mod_bits), None
        auto = options.precision == "auto"
        if target is not None and "bootstrap" in program.attrs:
            if not auto:
                raise ParameterError(
                    "--precision does not combine with bootstrapping (its chain fixes a 59-bit "
                    "scale); leave --precision out or pass --bootstrap off"
                )
            self._fixed_bits(graph, options)  # the chain's fixed scale
            target = None
        if target is not None:
            assert self.samples is not None
            self.progress("compile: choose-precision", total, total)
            try:
                precision = self._choose_precision(program, target, options)
                bits = (precision.scaling_bits, precision.first_mod_bits)
            except ParameterError:
                if not auto:
                    raise
                # the default precision is not reachable (values too large for any scale):
                # the fixed bits, whose range check names the node that overflows
                self._fixed_bits(graph, options)
        params = choose_params(program, *bits, options.security, options.sample_blocks)
        if params.blocks > 1:
            check_block_local(program, params.blocks)  # the guarantee the runtime relies on
        figures = program_report(program, params)
        if precision is not None:
            # small scales: the plaintexts absorb the drift of the rescales' primes
            unfixed = compensate_scale_drift(program, params)
            figures["precision"] = {**precision.to_json(), "unfixed_sums": unfixed}
        return Lowered(program, params, figures, plan)

    def _choose_precision(self, program: Graph, target: float, options: CompileOptions):
        """The scale and first prime for outputs within ``target`` (``precision.Precision``),
        sized for the ring they lead to.

        Raises:
            ParameterError: no scale meets ``target`` with the values the program reaches.
        """
        assert self.samples is not None
        noise = measure_noise(program, self.samples)
        ring = 1 << 14  # the smallest ring a leveled program gets at 128-bit security
        while True:  # the noise grows with the ring: size it for the ring it gets
            precision = noise.choose(target, ring)
            bits = (precision.scaling_bits, precision.first_mod_bits)
            ring_dim = choose_params(program, *bits, options.security).ring_dim
            if ring_dim <= ring:
                return precision
            ring = ring_dim

    @staticmethod
    def _fixed_bits(graph: Graph, options: CompileOptions) -> None:
        """Where the default precision gives way to ``options.scaling_bits`` and
        ``first_mod_bits``: the range check it replaced runs on the tensor graph ``graph``
        (it changes nothing; raises ``RangeOverflow`` naming the node that could overflow)."""
        CheckRanges(
            options.scaling_bits, options.first_mod_bits, input_range=options.input_range
        ).run(graph.clone())

    # -- the choices --------------------------------------------------------------------------
    def best(self, graph: Graph) -> Lowered:
        """The program ``options.packing`` asks for (``auto``: the faster packing), or the
        recorded plan's."""
        if self.plan is not None:
            return self.replay(graph, self.plan)
        packing = self.options.packing
        if packing == "auto":
            return self.best_packing(graph)
        if packing == "slots":
            return self.best_slots(graph)
        if packing == "batch":
            return self.lower(graph, Plan.of(self.options))
        raise ParameterError(f"packing {packing!r} is not one of slots, batch, auto")

    def best_slots(self, graph: Graph, need_program: bool = True) -> Lowered:
        """Slot packing with the input layout ``options.input_layout``; ``auto`` lowers every
        layout that applies to the first linear map and keeps the lowest estimated time (ties:
        the simpler layout). ``report.json`` → ``input_layout`` lists what each would cost.
        With ``output_layouts="auto"`` and a pruned dense layer, each is also lowered with
        ``anchored`` output layouts, kept where the whole program is cheaper (``output_layouts``
        in the report says which); with ``readout="auto"``, also with the output layer on
        copies of the input (``readout`` in the report)."""
        options = self.options
        if options.sample_blocks and options.readout == "copies":
            raise LayoutError(
                "--readout copies and --sample-blocks both fill the ciphertext's spare slots "
                "(copies of one input, or other inputs): choose one"
            )
        given = options.input_layout
        kinds = (given,) if given != "auto" else INPUT_LAYOUTS
        if given == "auto" and options.sample_blocks:  # block-locality is proven for direct only
            kinds = ("direct",)
        quiet = replace(options, dump_ir_after=None)
        fingerprint = graph_fingerprint(graph)  # once: every candidate lowers this graph
        results: dict[str, Lowered] = {}
        candidates: dict[str, dict[str, Any]] = {}
        refused: list[Exception] = []
        for kind in kinds:
            plan = Plan.of(options, packing="slots", input_layout=kind)
            try:
                results[kind] = self.lower(graph, plan, quiet, False, fingerprint)
            except (NotApplicable, ParameterError) as exc:  # e.g. im2col: too many slots
                refused.append(exc)
                if given != "auto" or kind == kinds[-1] and not results:
                    # why the first (simplest) layout failed: the others' reasons are about
                    # their own layout (a ResNet-20 showed im2col's slots, not direct's error)
                    raise refused[0] from None
                candidates[kind] = {"applies": False, "why": str(exc)}
                continue
            if options.output_layouts == "auto" and may_anchor(graph):
                # anchoring a pruned dense layer's neurons moves the input of the layer after
                # it, which may then cost more: keep whichever whole program is cheaper
                anchored_plan = replace(plan, output_layouts="anchored")
                anchored = self.lower(graph, anchored_plan, quiet, False, fingerprint)
                if anchored.stats.estimated_seconds < results[kind].stats.estimated_seconds:
                    results[kind] = anchored
            if options.readout == "auto" and not options.sample_blocks:  # copies, if cheaper
                again = replace(results[kind].plan, readout="copies")
                try:
                    copies = self.lower(graph, again, quiet, False, fingerprint)
                except (NotApplicable, ParameterError):
                    pass
                else:
                    if copies.stats.estimated_seconds < results[kind].stats.estimated_seconds:
                        results[kind] = copies
            figures = results[kind].figures
            candidates[kind] = {
                "applies": True,
                "slots": figures["ckks"]["slots"],
                "ring_dim": figures["ckks"]["ring_dim"],
                **{key: figures["totals"][key] for key in _LAYOUT_FIGURES},
                "estimated_seconds": round(results[kind].stats.estimated_seconds, 3),
            }
        chosen = min(results, key=lambda k: (candidates[k]["estimated_seconds"], kinds.index(k)))
        best = self._keep_chosen(graph, results[chosen], quiet, need_program, fingerprint)
        if options.dump_ir_after is not None:  # the chosen program once more, dumping its IR
            best = self.lower(graph, best.plan)
        best.figures["input_layout"] = {"kind": chosen, "choice": given, "candidates": candidates}
        best.figures["output_layouts"] = {
            "kind": best.plan.output_layouts,
            "choice": options.output_layouts,
        }
        best.figures["readout"] = {"kind": best.plan.readout, "choice": options.readout}
        return best

    def replay(self, graph: Graph, plan: Plan) -> Lowered:
        """``plan`` lowered as it is (the report says it was recorded, not searched)."""
        best = self.lower(graph, plan)
        if plan.packing == "slots":
            recorded = {"choice": "recorded plan"}
            best.figures["input_layout"] = {"kind": plan.input_layout, **recorded}
            best.figures["output_layouts"] = {"kind": plan.output_layouts, **recorded}
            best.figures["readout"] = {"kind": plan.readout, **recorded}
        return best

    def best_packing(self, graph: Graph) -> Lowered:
        """Slot packing unless ``batch_size`` inputs evaluate faster batch-packed (and fit).

        Slot packing runs ``B`` evaluations, batch packing ``ceil(B / slots)``; each is timed
        with ``cost_model.estimated_seconds`` from the compiled programs' counts.
        """
        slots = self.best_slots(graph)
        n = self.options.batch_size or 1
        if n <= 1:
            return slots
        try:
            batch = self.lower(graph, Plan.of(self.options, packing="batch"))
        except ResourceError:
            return slots
        t_slots = n * slots.stats.estimated_seconds
        t_batch = -(-n // batch.params.slots) * batch.stats.estimated_seconds
        return batch if t_batch < t_slots else slots

    # -- batch packing ------------------------------------------------------------------------
    @staticmethod
    def _batch_slots(graph: Graph, options: CompileOptions) -> int:
        """Slots per ciphertext in batch packing: ``batch_size`` rounded up to a power of two,
        or half the smallest ring the program's depth allows (what fills it)."""
        if options.batch_size is not None:
            if options.batch_size < 1 or options.batch_size > MAX_RING_DIM // 2:
                raise ParameterError(
                    f"batch size {options.batch_size} is outside 1..{MAX_RING_DIM // 2} "
                    f"(half the largest ring dimension)"
                )
            return 1 << (options.batch_size - 1).bit_length()
        probe = graph.clone()
        LowerToBatch(1).run(probe)  # the depth does not depend on the batch
        depth = program_depth(probe)
        return (
            min_ring_dim(depth, options.scaling_bits, options.first_mod_bits, options.security) // 2
        )

    @staticmethod
    def _batch_report(graph: Graph, params: CKKSParams, options: CompileOptions) -> dict:
        """The batch program's counts and memory plan; refuses one that cannot fit."""
        limit = options.memory_limit or machine_memory()[0]
        what = "allowed (memory limit)" if options.memory_limit else "this machine has"
        min_ring = min_ring_dim(
            params.depth, options.scaling_bits, options.first_mod_bits, options.security
        )
        # a lower bound first: a model far too large is refused before it is scheduled
        check_fits(
            bound_plan(graph, params), params, limit, PROCESS_BASELINE, "compile", min_ring, what
        )
        planned = plan_memory(graph, params)
        check_fits(planned.plan, params, limit, PROCESS_BASELINE, "compile", min_ring, what)
        return batch_program_report(graph, params, planned.plan, planned.eg, planned.schedule)


def _estimate(lowered: Lowered):
    """``runtime.resources``' estimate for a lowered slot program (before it is written)."""
    from hec.backend_openfhe.report_schema import Totals
    from hec.runtime.resources import estimate_program

    assert lowered.program is not None
    totals = Totals.from_dict(lowered.figures["totals"])
    return estimate_program(lowered.params, lowered.program, totals)


def within_memory(lowered: Lowered, options: CompileOptions) -> Lowered:
    """``lowered`` (a slot program) if its evaluating process fits ``options.memory_limit``
    bytes (``None``: this machine's memory); else the same program changed to fit, in three
    steps, each taken only while the estimate is over the limit:

    1. fewer rotation keys, its other rotations composed of them (``compose-rotations`` under
       ``max_keys``): as many keys as fit, or the powers of two. Costs rotations.
    2. the keys loaded a group at a time (``group-keys``): one group per stretch between
       bootstraps (the bootstrapping keys a group of their own), split further where a
       stretch's keys alone pass the limit. Costs reading the key files at every switch.
    3. a smaller plaintext cache (the program's ``plaintext_cache_bytes``): the constants
       it cannot hold are encoded again at every evaluation.

    All change ``lowered.program`` in place (the compile's last use of it, and a ResNet's
    program is gigabytes). The report's ``memory_plan`` says what changed.

    Raises:
        ResourceError: the three together are not enough.
    """
    limit = options.memory_limit if options.memory_limit is not None else machine_memory()[0]
    est = _estimate(lowered)
    if est.server_memory <= limit:
        return lowered
    result, after = _compose_within(lowered, est, limit, options)
    if after.server_memory > limit:
        result, after = _group_within(result, after, limit)
    if after.server_memory > limit and after.plaintext_bytes:
        assert result.program is not None
        cache = max(after.plaintext_bytes - (after.server_memory - limit), 0)
        result.program.attrs["plaintext_cache_bytes"] = int(cache)
        after = _estimate(result)
    keys = len(result.params.rotation_indices)
    if after.server_memory > limit:
        groups = f" in {after.key_groups} groups" if after.key_groups else ""
        cache = " and no encoded constants kept" if not after.plaintext_bytes else ""
        raise ResourceError(
            f"the program needs ~{after.server_memory / 1e9:.1f} GB to evaluate even with "
            f"{keys} rotation keys{groups}{cache} ({after.breakdown(keys)}), more than the "
            f"{limit / 1e9:.1f} GB limit; pass --memory-limit with more, or use a larger machine"
        )
    result.figures["memory_plan"] = {
        "limit_bytes": int(limit),
        "estimated_bytes": int(after.server_memory),
        "estimated_bytes_before": int(est.server_memory),
        "rotation_keys_before": len(lowered.params.rotation_indices),
        "rotation_keys": keys,
        "rotations_before": int(lowered.figures["totals"]["rotations"]),
        "rotations": int(result.figures["totals"]["rotations"]),
        **(
            {"key_groups": after.key_groups, "key_load_bytes": int(after.key_load_bytes)}
            if after.key_groups
            else {}
        ),
        **(
            {"plaintext_cache_bytes": int(after.plaintext_bytes)}
            if "plaintext_cache_bytes" in result.program.attrs
            else {}
        ),
    }
    return result


def _compose_within(lowered: Lowered, est, limit: int, options: CompileOptions):
    """Step 1 of ``within_memory``: compose rotations until the estimate is within ``limit``
    or no fewer keys are possible; (the program, its estimate)."""
    from hec.passes.compose_rotations import ComposeRotations

    program, params = lowered.program, lowered.params
    assert program is not None
    result, after = lowered, est
    got = len(params.rotation_indices)
    while after.server_memory > limit:
        # the keys over the limit, rounded up (composing can keep a ciphertext more alive)
        cap = got - -(-(after.server_memory - limit) // est.key_bytes)
        try:
            ComposeRotations(block_local=options.sample_blocks, max_keys=max(cap, 1)).run(program)
        except ParameterError:  # fewer than the powers of two its rotations compose from
            ComposeRotations("pow2", block_local=options.sample_blocks).run(program)
        # composing adds rotations only: the same context, another key set
        composed = replace(params, rotation_indices=rotation_indices(program))
        figures = {**lowered.figures, **program_report(program, composed)}
        result = Lowered(program, composed, figures, lowered.plan)
        after, fewer = _estimate(result), len(composed.rotation_indices) < got
        got = len(composed.rotation_indices)
        if not fewer:  # no fewer keys: the powers of two its rotations compose from
            break
    return result, after


def _group_within(lowered: Lowered, est, limit: int):
    """Step 2 of ``within_memory``: key groups, a group per stretch between bootstraps, then
    (if that is over ``limit``) as many keys per group as the limit leaves room for, or the
    fewest possible; (the program, its estimate), over the limit where that is not enough."""
    from hec.passes.group_keys import GroupKeys

    program = lowered.program
    assert program is not None

    def grouped(max_keys: int | None):
        GroupKeys(max_keys).run(program)
        params = replace(lowered.params, key_groups=key_groups(program))
        result = Lowered(program, params, lowered.figures, lowered.plan)
        return result, _estimate(result)

    result, after = grouped(None)
    if after.server_memory <= limit:
        return result, after
    # room for one group's keys: the limit less everything but the keys loaded at once; no
    # group can be smaller than the amounts of the widest op
    loaded = max(after.largest_group_bytes, after.bootstrap_key_bytes)
    room = limit - (after.server_memory - loaded)
    widest = max((len(set(rotation_amounts(op))) for op in program.ops), default=1)
    cap = max(int(room // est.key_bytes), widest)
    if cap * est.key_bytes >= after.largest_group_bytes or (
        after.bootstrap_key_bytes >= after.largest_group_bytes
    ):  # smaller groups would not lower the peak
        return result, after
    return grouped(cap)
