"""Evaluation order and liveness of a batch program, one ciphertext at a time.

A batch program's values are tensors of ciphertexts, thousands of them; whether it fits in
memory depends on how many are alive at once, which the order of evaluation decides. So the
program is flattened into an *element graph*: one task per output ciphertext (a row of a
``weighted_sum``, an element of a ``mul``, …), with an edge to every ciphertext it reads. A
``signed_sum`` row that is a lone +1 with no bias (a reshape, a crop) is no task at all: it
names its input ciphertext. Tasks no output depends on are dropped.

Four orders are considered and the one with the smallest predicted peak is kept:

- ``program``: op after op, element after element (what a layer-by-layer evaluator does);
- ``demand``: depth-first from the outputs (networkx ``dfs_postorder_nodes`` over the
  dependency graph), which computes each value just before its first consumer needs it, so a
  pooling window or a dense row consumes its inputs soon after they exist;
- ``demand-local``: the same walk visiting a task's inputs by the first program input each
  reaches, so a convolution's channels at one position are made together (LeNet-5: 8.4 → 4.0
  GB);
- ``stream``: program inputs in id (raster) order, each task when its first reader can run,
  like a line buffer; best where sparse dense rows scatter a depth-first walk (pruned models).

A ciphertext is freed right after its last reader (``free_after``); outputs stay. An input
ciphertext is brought in just before its first reader (``load_before``): the evaluator asks its
source for it then (the client encrypts it, or it is read), so the inputs are not all alive
when evaluation starts; without that, LeNet-5's 784 input ciphertexts alone would hold half of
a pruned model's peak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hec.ir import BatchCipherType, Graph, Op, VerifyError
from hec.ir.batch_ops import sparse_matrix
from hec.ir.types import type_as

__all__ = [
    "ElementGraph",
    "Schedule",
    "element_graph",
    "late_inputs",
    "liveness",
    "program_order",
    "schedule",
]

ROW_OPS = ("weighted_sum", "signed_sum")
CtBytes = Callable[[int, int], int]  # (level, parts) -> bytes of one ciphertext
Transient = Callable[[Op, int], int]  # (op, level) -> bytes the op holds while it runs


@dataclass
class ElementGraph:
    """A batch program flattened to ciphertexts.

    Attributes:
        program: the batch graph.
        ct_of: per value (``id(value)``), the ciphertext id of each element (aliases share).
        op_of: per ciphertext, the index of the op computing it (-1: a program input).
        element_of: per ciphertext, its element index in the op's result (or the input).
        level_of: per ciphertext, its level (what its size depends on, with its parts).
        parts_of: per ciphertext, its number of polynomial parts (2, or 3 unrelinearized).
        deps: per ciphertext, the ciphertexts its task reads (empty for inputs).
        outputs: ciphertext ids of the program outputs, flattened in order.
    """

    program: Graph
    ct_of: dict[int, np.ndarray]
    op_of: np.ndarray
    element_of: np.ndarray
    level_of: np.ndarray
    parts_of: np.ndarray
    deps: list[np.ndarray]
    outputs: np.ndarray

    @property
    def n_inputs(self) -> int:
        return int(np.count_nonzero(self.op_of < 0))

    def verify(self) -> None:
        """Check the flattening: one entry per ciphertext in every table, each task reading only
        ciphertexts made before it, at its level or an earlier one, inputs reading nothing, outputs
        existing; raise ``VerifyError`` (a compiler bug)."""
        n = len(self.op_of)
        tables = (self.element_of, self.level_of, self.parts_of, self.deps)
        if any(len(t) != n for t in tables):
            raise VerifyError(f"element graph: tables of {[len(t) for t in tables]} for {n}")
        if np.any(np.diff(self.op_of) < 0):
            raise VerifyError("element graph: ciphertexts not in program order")
        if not np.all(np.isin(self.parts_of, (2, 3))):
            raise VerifyError("element graph: a ciphertext with other than 2 or 3 parts")
        counts = np.array([len(d) for d in self.deps], dtype=np.int64)
        reader = np.repeat(np.arange(n), counts)  # the task of each read
        read = np.concatenate([*self.deps, np.zeros(0, dtype=np.int64)]).astype(np.int64)
        bad = np.flatnonzero((self.op_of[reader] < 0) | (read < 0) | (read >= reader))
        if bad.size:
            raise VerifyError(f"element graph: ciphertext {reader[bad[0]]} reads {read[bad[0]]}")
        deeper = np.flatnonzero(self.level_of[read] > self.level_of[reader])
        if deeper.size:
            raise VerifyError(f"element graph: ciphertext {reader[deeper[0]]} reads a deeper level")
        if len(self.outputs) and (self.outputs.min() < 0 or self.outputs.max() >= n):
            raise VerifyError("element graph: an output is no ciphertext")

    def __str__(self) -> str:
        """One line per op: the ciphertexts it makes, what they read, level and parts."""
        lines = [f"element graph: {len(self.op_of)} ciphertexts, {self.n_inputs} inputs"]
        ops = self.program.ops
        for i in np.unique(self.op_of):
            cts = np.flatnonzero(self.op_of == i)
            reads = sum(len(self.deps[ct]) for ct in cts)
            what = "input" if i < 0 else f"{ops[i].kind} ({ops[i].origin or 'no origin'})"
            lines.append(
                f"  {what}: ciphertexts {cts[0]}..{cts[-1]} ({len(cts)}), {reads} reads, "
                f"level {self.level_of[cts[0]]}, parts {self.parts_of[cts[0]]}"
            )
        lines.append(f"  outputs: {len(self.outputs)} ciphertexts")
        return "\n".join(lines) + "\n"


@dataclass
class Schedule:
    """An evaluation order of an element graph and when each ciphertext dies.

    Attributes:
        order: the ciphertexts to compute, in order.
        free_after: ``free_after[k]`` lists the ciphertexts to drop after computing ``order[k]``.
        free_first: inputs nothing reads (never brought in).
        kind: ``"program"``, ``"demand"``, ``"demand-local"``, ``"stream"`` or ``"waves"``.
        load_before: ``load_before[k]`` lists the input ciphertexts to bring in before
            computing ``order[k]`` (those ``order[k]`` is the first to read).
    """

    order: np.ndarray
    free_after: list[list[int]]
    free_first: list[int]
    kind: str
    load_before: list[list[int]]


def element_graph(program: Graph) -> ElementGraph:
    """Flatten ``program`` (a batch graph) into one task per element ciphertext."""
    op_of: list[int] = []
    element_of: list[int] = []
    level_of: list[int] = []
    parts_of: list[int] = []
    deps: list[np.ndarray] = []
    ct_of: dict[int, np.ndarray] = {}
    empty = np.zeros(0, dtype=np.int64)

    def new(n: int, op_index: int, level: int, parts: int) -> np.ndarray:
        start = len(op_of)
        op_of.extend([op_index] * n)
        element_of.extend(range(n))
        level_of.extend([level] * n)
        parts_of.extend([parts] * n)
        return np.arange(start, start + n, dtype=np.int64)

    for v in program.inputs:
        t = type_as(v.type, BatchCipherType)
        ct_of[id(v)] = new(t.size, -1, t.level, t.parts)
        deps.extend([empty] * t.size)
    for i, op in enumerate(program.ops):
        out = op.result
        t = type_as(out.type, BatchCipherType)
        ins = [ct_of[id(x)] for x in op.inputs]
        if op.kind in ROW_OPS:
            rows = _row_inputs(op, ins[0])
            ids = np.empty(t.size, dtype=np.int64)
            alias = _gather_rows(op) if op.kind == "signed_sum" else np.full(len(rows), -1)
            for r, cols in enumerate(rows):
                if alias[r] >= 0:
                    ids[r] = ins[0][alias[r]]
                else:
                    ids[r] = new(1, i, t.level, t.parts)[0]
                    element_of[-1] = r
                    deps.append(cols)
        else:
            ids = new(t.size, i, t.level, t.parts)
            for e in range(t.size):
                deps.append(np.unique(np.array([x[e] for x in ins], dtype=np.int64)))
        ct_of[id(out)] = ids
    outputs = np.concatenate([ct_of[id(v)] for v in program.outputs])
    eg = ElementGraph(
        program,
        ct_of,
        np.asarray(op_of, dtype=np.int64),
        np.asarray(element_of, dtype=np.int64),
        np.asarray(level_of, dtype=np.int64),
        np.asarray(parts_of, dtype=np.int64),
        deps,
        outputs,
    )
    eg.verify()
    return eg


def _row_inputs(op: Op, ins: np.ndarray) -> list[np.ndarray]:
    """The input ciphertexts of each row; an empty row reads element 0 (for its level)."""
    indptr, indices = op.consts["indptr"], op.consts["indices"]
    rows = []
    for r in range(len(indptr) - 1):
        cols = indices[indptr[r] : indptr[r + 1]]
        rows.append(np.unique(ins[cols]) if len(cols) else ins[:1])
    return rows


def _gather_rows(op: Op) -> np.ndarray:
    """Per row of a ``signed_sum``: the input element it merely names, or -1."""
    A = sparse_matrix(op)
    n = np.diff(A.indptr)
    lone = (n == 1) & (op.consts["bias"] == 0.0)
    alias = np.full(A.shape[0], -1, dtype=np.int64)
    rows = np.flatnonzero(lone)
    first = A.indptr[rows]
    plus = A.data[first] == 1.0
    alias[rows[plus]] = A.indices[first[plus]]
    return alias


def _demand_order(eg: ElementGraph, local: bool = False) -> np.ndarray:
    """Depth-first from the outputs; a task's inputs are visited in id order, or (``local``)
    in the order of the first program input each reaches, so that the ciphertexts made from
    the same inputs are made together (a convolution's channels at one position) and the
    inputs die soon after they come in."""
    import networkx as nx

    reach = _input_reached(eg, np.min) if local else None
    g = nx.DiGraph()
    for ct, d in enumerate(eg.deps):
        if eg.op_of[ct] >= 0:
            g.add_node(ct)
            if reach is not None:
                d = d[np.argsort(reach[d], kind="stable")]
            g.add_edges_from((ct, int(x)) for x in d)
    root = -1  # one source reaching every output, in output order
    g.add_edges_from((root, int(o)) for o in eg.outputs)
    order = nx.dfs_postorder_nodes(g, source=root)
    return np.asarray([ct for ct in order if ct != root and eg.op_of[ct] >= 0], dtype=np.int64)


def _stream_order(eg: ElementGraph) -> np.ndarray:
    """Program inputs taken in id order (an image: raster order), each task computed when its
    first reader can run, i.e. when the last program input that reader depends on has come in:
    a convolution runs as its windows fill, like a line buffer, and a square waits for the
    pooling sum that reads it. Ties in program order. Topological: a reader depends on every
    input its operands depend on."""
    last_input = _input_reached(eg, np.max)
    tasks = program_order(eg)
    when = last_input.copy()  # an output nothing reads: as soon as it can
    read = np.zeros(len(eg.op_of), dtype=bool)
    for ct in tasks.tolist():  # readers in id order: the first sets it, later ones lower it
        d = eg.deps[ct]
        when[d[~read[d]]] = last_input[ct]
        read[d] = True
        np.minimum.at(when, d, last_input[ct])
    return tasks[np.lexsort((tasks, when[tasks]))]


def _input_reached(eg: ElementGraph, pick: Callable[[np.ndarray], int]) -> np.ndarray:
    """Per ciphertext, the first (``np.min``) or last (``np.max``) program-input ciphertext it
    depends on; an input reaches itself."""
    reach = np.arange(len(eg.op_of), dtype=np.int64)
    for ct in np.flatnonzero(eg.op_of >= 0).tolist():  # ids are in program order
        reach[ct] = pick(reach[eg.deps[ct]])  # every task reads at least one ciphertext
    return reach


def program_order(eg: ElementGraph) -> np.ndarray:
    """Tasks in op order, keeping only those an output depends on."""
    needed = np.zeros(len(eg.op_of), dtype=bool)
    stack = [int(o) for o in eg.outputs]
    while stack:
        ct = stack.pop()
        if not needed[ct]:
            needed[ct] = True
            stack.extend(int(d) for d in eg.deps[ct] if not needed[d])
    tasks = np.flatnonzero(needed & (eg.op_of >= 0))
    # ciphertext ids are allocated op by op, element by element: id order is program order
    return tasks.astype(np.int64)


def liveness(eg: ElementGraph, order: np.ndarray, kind: str) -> Schedule:
    """When each input ciphertext is brought in and each ciphertext dies under ``order``."""
    last = np.full(len(eg.op_of), -1, dtype=np.int64)
    first = np.full(len(eg.op_of), -1, dtype=np.int64)
    for k, ct in enumerate(order):
        d = eg.deps[ct]
        last[d] = k
        first[d[first[d] < 0]] = k
    keep = np.zeros(len(eg.op_of), dtype=bool)
    keep[eg.outputs] = True
    free_after: list[list[int]] = [[] for _ in order]
    for ct in np.flatnonzero((last >= 0) & ~keep):
        free_after[last[ct]].append(int(ct))
    inputs = np.flatnonzero(eg.op_of < 0)
    free_first = [int(ct) for ct in inputs if last[ct] < 0 and not keep[ct]]
    load_before: list[list[int]] = [[] for _ in order]
    for ct in inputs:
        if first[ct] >= 0:
            load_before[first[ct]].append(int(ct))
    return Schedule(order, free_after, free_first, kind, load_before)


def late_inputs(eg: ElementGraph, s: Schedule) -> list[int]:
    """Inputs that are outputs and nothing reads: brought in at the end, with the outputs."""
    loaded = {ct for load in s.load_before for ct in load}
    return sorted({int(ct) for ct in eg.outputs if eg.op_of[ct] < 0 and int(ct) not in loaded})


def schedule(
    eg: ElementGraph,
    ct_bytes: CtBytes,
    transient: Transient | None = None,
    only: str | None = None,
) -> tuple[Schedule, int]:
    """The order (``program`` or ``demand``) with the smaller predicted peak, and that peak.

    Args:
        eg: the element graph.
        ct_bytes: ``ct_bytes(level, parts)`` is the size of one ciphertext.
        transient: ``transient(op, level)``, extra bytes an op holds while it runs.
        only: consider only this order.
    """
    best: tuple[Schedule, int] | None = None
    orders = {
        "demand": _demand_order,
        "demand-local": lambda eg: _demand_order(eg, local=True),
        "stream": _stream_order,
        "program": program_order,
    }
    for kind, make in orders.items():
        if only is not None and kind != only:
            continue
        order = make(eg)
        s = liveness(eg, order, kind)
        peak = peak_bytes(eg, s, ct_bytes, transient)
        if best is None or peak < best[1]:
            best = (s, peak)
    assert best is not None
    return best


def peak_bytes(
    eg: ElementGraph, s: Schedule, ct_bytes: CtBytes, transient: Transient | None = None
) -> int:
    """The most bytes of ciphertexts alive at once while running ``s``."""
    top = int(eg.level_of.max(initial=0)) + 1
    size = np.array([[ct_bytes(lv, parts) for parts in range(4)] for lv in range(top)])
    sizes = size[eg.level_of, eg.parts_of]
    live = peak = 0
    ops = eg.program.ops
    for k, ct in enumerate(s.order):
        live += int(sizes[ct]) + int(sizes[s.load_before[k]].sum())
        extra = 0 if transient is None else transient(ops[eg.op_of[ct]], int(eg.level_of[ct]))
        peak = max(peak, live + extra)
        if s.free_after[k]:
            live -= int(sizes[s.free_after[k]].sum())
    return max(peak, live + int(sizes[late_inputs(eg, s)].sum()))


# -- parallel waves ---------------------------------------------------------------------------
ELEMENTWISE = ("mul", "mul_norelin", "relinearize", "rescale", "level_reduce", "poly")


def chains(eg: ElementGraph, s: Schedule) -> list[np.ndarray]:
    """The scheduled tasks grouped into chains, in the order their last task is scheduled.

    A task joins its input's chain when its op is element-wise, it reads only that ciphertext
    and is its only reader (a dense row, its square, its rescale): a chain is one unit of work
    whose intermediate ciphertexts never leave the process computing it.
    """
    readers = np.zeros(len(eg.op_of), dtype=np.int64)
    for ct in s.order.tolist():
        readers[eg.deps[ct]] += 1
    is_output = np.zeros(len(eg.op_of), dtype=bool)
    is_output[eg.outputs] = True
    ops = eg.program.ops
    head_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    for ct in s.order.tolist():
        d = eg.deps[ct]
        joins = (
            ops[eg.op_of[ct]].kind in ELEMENTWISE
            and len(d) == 1
            and int(d[0]) in head_of
            and readers[d[0]] == 1
            and not is_output[d[0]]
        )
        head = head_of[int(d[0])] if joins else ct
        head_of[ct] = head
        members.setdefault(head, []).append(ct)
    position = {ct: k for k, ct in enumerate(s.order.tolist())}
    out = sorted(members.values(), key=lambda m: position[m[-1]])
    return [np.asarray(m, dtype=np.int64) for m in out]


def waves(eg: ElementGraph, s: Schedule, window: int) -> list[list[np.ndarray]]:
    """Chains grouped into waves of mutually independent chains, for parallel evaluation.

    The chains are taken in schedule order, ``window`` at a time; inside a window each chain
    goes to the wave after the latest chain of the window it reads. Ciphertexts are computed at
    most a window earlier than the schedule says, so memory stays near its prediction.
    """
    all_chains = chains(eg, s)
    chain_of = {int(ct): i for i, ch in enumerate(all_chains) for ct in ch.tolist()}
    out: list[list[np.ndarray]] = []
    for start in range(0, len(all_chains), window):
        level: dict[int, int] = {}
        for i in range(start, min(start + window, len(all_chains))):
            deps = {chain_of.get(int(d), -1) for d in eg.deps[int(all_chains[i][0])]}
            level[i] = 1 + max((level[j] for j in deps if j in level), default=-1)
        groups: dict[int, list[np.ndarray]] = {}
        for i, lv in level.items():
            groups.setdefault(lv, []).append(all_chains[i])
        out.extend(groups[lv] for lv in sorted(groups))
    return out


def wave_schedule(eg: ElementGraph, w: list[list[np.ndarray]]) -> Schedule:
    """The schedule running ``w`` wave by wave, each input brought in at the start of the wave
    holding its first reader and each ciphertext freed at the end of the wave holding its last
    (a wave's chains run in several processes at once)."""
    order = np.concatenate([ch for wave in w for ch in wave]) if w else np.zeros(0, np.int64)
    s = liveness(eg, order, "waves")
    ends = np.cumsum([sum(len(ch) for ch in wave) for wave in w]) - 1
    wave_of = np.searchsorted(ends, np.arange(len(order)))
    starts = ends - np.array([sum(len(ch) for ch in wave) for wave in w]) + 1
    free_after: list[list[int]] = [[] for _ in order]
    load_before: list[list[int]] = [[] for _ in order]
    for k, (dead, load) in enumerate(zip(s.free_after, s.load_before, strict=True)):
        free_after[int(ends[wave_of[k]])].extend(dead)
        load_before[int(starts[wave_of[k]])].extend(load)
    return Schedule(order, free_after, s.free_first, "waves", load_before)
