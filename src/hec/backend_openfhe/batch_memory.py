"""Peak memory of a batch program, predicted before any key exists, and the refusal to run it.

The evaluating process holds, at its peak: the Python process itself (interpreter, numpy, onnx,
OpenFHE; measured, not modelled, where a process exists), the relinearization key, and the
ciphertexts alive at the worst step of the schedule (``batch_schedule``) plus the temporaries of
the op running then. A ciphertext at level ``l`` is 2 polynomials over ``depth + 1 - l``
primes of ``ring_dim`` 64-bit words; the relinearization key is ``2·dnum`` polynomials over
``depth + 1 + K`` primes (OpenFHE's hybrid key switching: ``dnum`` = 2 digits up to depth 3,
3 above; ``K`` 60-bit primes of ``P`` cover the widest digit plus one bit). Both formulas match
the bytes OpenFHE 1.6.1 allocates and serializes to within 2% (measured at depths 1-16).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from hec.backend_openfhe.batch_schedule import (
    ROW_OPS,
    ElementGraph,
    Schedule,
    element_graph,
    late_inputs,
    peak_bytes,
    schedule,
    wave_schedule,
    waves,
)
from hec.backend_openfhe.params import CKKSParams
from hec.errors import ResourceError
from hec.ir import BatchCipherType, Graph, Op
from hec.ir.types import type_as

__all__ = [
    "MemoryPlan",
    "Planned",
    "plan_memory",
    "ciphertext_bytes",
    "relin_key_bytes",
    "machine_memory",
    "check_fits",
    "bound_plan",
    "PROCESS_BASELINE",
]

_WORD = 8
_AUX_PRIME_BITS = 60
# What a Python process running hec holds before any key or ciphertext exists (interpreter,
# numpy, scipy, onnx, networkx, OpenFHE): measured 115-130 MB; used only where no process
# exists yet (at compile time), otherwise the process's own resident size is read.
PROCESS_BASELINE = 130 << 20
# Temporaries an op holds while it runs, in ciphertexts of its level: a product holds its
# 3-part tensor and the key-switching digits, a weighted-sum row one scalar product besides
# its accumulator, a Chebyshev series its powers.
_TRANSIENT = {"mul": 3.0, "relinearize": 2.0, "weighted_sum": 1.0, "poly": 2.0}


def ciphertext_bytes(params: CKKSParams, level: int, parts: int = 2) -> int:
    """Bytes of one ciphertext of ``parts`` polynomials (2 once relinearized) at ``level``."""
    return parts * params.ring_dim * (params.depth + 1 - level) * _WORD


def relin_key_bytes(params: CKKSParams) -> int:
    """Bytes of the relinearization key (0 if the program multiplies no ciphertexts)."""
    if not params.needs_relinearization:
        return 0
    towers = params.depth + 1
    dnum = params.digits or (3 if params.depth > 3 else 2)
    widest = params.first_mod_bits + (math.ceil(towers / dnum) - 1) * params.scaling_bits
    aux = math.ceil((widest + 1) / _AUX_PRIME_BITS)
    return 2 * dnum * params.ring_dim * (towers + aux) * _WORD


@dataclass(frozen=True)
class MemoryPlan:
    """The schedule chosen for a batch program and the memory it predicts (bytes).

    Attributes:
        schedule: ``"demand"`` or ``"program"`` (see ``batch_schedule``).
        ciphertexts_computed: tasks the schedule runs (one ciphertext each).
        input_ciphertexts: ciphertexts the client sends.
        output_ciphertexts: ciphertexts the server returns.
        max_live_ciphertexts: the most ciphertexts alive at once.
        ciphertext_bytes: one fresh (level 0) ciphertext.
        peak_ciphertext_bytes: live ciphertexts (inputs included) and temporaries at the peak.
        key_bytes: the relinearization key.
        program_bytes: ``peak_ciphertext_bytes + key_bytes``: what evaluation adds to a process.
    """

    schedule: str
    ciphertexts_computed: int
    input_ciphertexts: int
    output_ciphertexts: int
    max_live_ciphertexts: int
    ciphertext_bytes: int
    peak_ciphertext_bytes: int
    key_bytes: int

    @property
    def program_bytes(self) -> int:
        return self.peak_ciphertext_bytes + self.key_bytes

    def to_json(self) -> dict:
        return {**asdict(self), "program_bytes": self.program_bytes}


@dataclass
class Planned:
    """What evaluation needs: the element graph, its schedule (and waves, with threads), and
    the memory they predict."""

    plan: MemoryPlan
    eg: ElementGraph
    schedule: Schedule
    waves: list | None = None


def plan_memory(program: Graph, params: CKKSParams, threads: int = 1) -> Planned:
    """Flatten and schedule ``program``; predict its peak memory under ``params``.

    With ``threads > 1`` the schedule is cut into waves (``batch_schedule.waves``); the
    prediction adds what the worker processes hold: each its current chain and temporaries,
    and copies of the pages the parent rewrites while they run (about its share of a wave).
    """
    eg = element_graph(program)

    def ct_bytes(level: int, parts: int = 2) -> int:
        return ciphertext_bytes(params, level, parts)

    def transient(op: Op, level: int) -> int:
        return int(_TRANSIENT.get(op.kind, 0.0) * ct_bytes(min(level, params.depth)))

    sched, peak = schedule(eg, ct_bytes, transient)
    w = None
    if threads > 1:
        from hec.backend_openfhe.parallel_batch import WINDOW

        w = waves(eg, sched, WINDOW)
        sched = wave_schedule(eg, w)

        def size(c) -> int:
            return ct_bytes(int(eg.level_of[c]), int(eg.parts_of[c]))

        chain_bytes = max((sum(size(c) for c in ch) for wave in w for ch in wave), default=0)
        wave_bytes = max((sum(size(ch[-1]) for ch in wave) for wave in w), default=0)
        worker = chain_bytes + int(max(_TRANSIENT.values()) * ct_bytes(0))
        peak = peak_bytes(eg, sched, ct_bytes, transient) + (threads - 1) * worker
        peak += wave_bytes * (threads - 1) // threads
    plan = MemoryPlan(
        schedule=sched.kind,
        ciphertexts_computed=len(sched.order),
        input_ciphertexts=eg.n_inputs,
        output_ciphertexts=len(eg.outputs),
        max_live_ciphertexts=_max_live(eg, sched),
        ciphertext_bytes=ct_bytes(0),
        peak_ciphertext_bytes=int(peak),
        key_bytes=relin_key_bytes(params),
    )
    return Planned(plan, eg, sched, w)


def bound_plan(program: Graph, params: CKKSParams) -> MemoryPlan:
    """A lower bound, without scheduling: the outputs all exist when evaluation ends, and the
    inputs of a ``weighted_sum`` or ``signed_sum`` row all exist when it runs.

    Checked first, so a model far too large is refused before its element graph is built.
    """
    out_types = [type_as(v.type, BatchCipherType) for v in program.outputs]
    outputs = sum(t.size for t in out_types)
    out_bytes = sum(t.size * ciphertext_bytes(params, t.level, t.parts) for t in out_types)
    widest, wide_bytes = 0, 0
    for op in program.ops:
        if op.kind in ROW_OPS and len(op.consts["indptr"]) > 1:
            n = int(np.diff(op.consts["indptr"]).max()) + 1  # its inputs and the row
            x = type_as(op.inputs[0].type, BatchCipherType)
            y = type_as(op.result.type, BatchCipherType)
            b = (n - 1) * ciphertext_bytes(params, x.level, x.parts) + ciphertext_bytes(
                params, y.level, y.parts
            )
            if b > wide_bytes:
                widest, wide_bytes = n, b
    n_in = sum(type_as(v.type, BatchCipherType).size for v in program.inputs)
    return MemoryPlan(
        schedule="lower bound (outputs, widest row)",
        ciphertexts_computed=0,
        input_ciphertexts=n_in,
        output_ciphertexts=outputs,
        max_live_ciphertexts=max(outputs, widest),
        ciphertext_bytes=ciphertext_bytes(params, 0),
        peak_ciphertext_bytes=max(out_bytes, wide_bytes),
        key_bytes=relin_key_bytes(params),
    )


def _max_live(eg: ElementGraph, s: Schedule) -> int:
    live = peak = 0
    for k in range(len(s.order)):
        live += 1 + len(s.load_before[k])
        peak = max(peak, live)
        live -= len(s.free_after[k])
    return max(peak, live + len(late_inputs(eg, s)))


def machine_memory() -> tuple[int, int]:
    """``(total, available)`` bytes of memory on this machine (``/proc/meminfo`` on Linux)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return total, int(line.split()[1]) * 1024
    except OSError:
        pass
    return total, os.sysconf("SC_AVPHYS_PAGES") * page


def check_fits(
    plan: MemoryPlan,
    params: CKKSParams,
    limit: int,
    baseline: int,
    where: str,
    min_ring_dim: int,
    limit_what: str = "this machine has",
) -> int:
    """Refuse (``ResourceError``) a batch program whose predicted peak exceeds ``limit``.

    Args:
        plan: the program's memory plan.
        params: its CKKS parameters.
        limit: bytes the process may use (the machine's memory, or what the user allows).
        baseline: bytes the process holds before keys and ciphertexts.
        where: what is being refused, for the message (``"compile"``, ``"key generation"``).
        min_ring_dim: the smallest ring 128-bit security allows for the program's depth; when
            the batch made the ring larger, a smaller batch is suggested.
        limit_what: where ``limit`` comes from, for the message.

    Returns:
        The predicted peak (bytes) of the process.
    """
    need = baseline + plan.program_bytes
    if need <= limit:
        return need
    live = plan.max_live_ciphertexts
    bound = "at least" if plan.ciphertexts_computed == 0 else "about"
    msg = (
        f"batch packing needs {bound} {_gb(need)} GB at its peak (predicted before {where}: "
        f"up to {live:,} ciphertexts of {_mb(plan.ciphertext_bytes)} MB alive at once at ring "
        f"2^{params.ring_dim.bit_length() - 1}, depth {params.depth}), more than the "
        f"{_gb(limit)} GB {limit_what}"
    )
    if params.ring_dim > min_ring_dim:
        # every ciphertext and the key shrink with the ring
        smaller = baseline + plan.program_bytes * min_ring_dim // params.ring_dim
        msg += (
            f"; --batch-size {min_ring_dim // 2} would use ring "
            f"2^{min_ring_dim.bit_length() - 1} (about {_gb(smaller)} GB)"
        )
    else:
        msg += (
            "; the ring is already the smallest 128-bit security allows for this depth: use "
            "--packing slots, a model with smaller layers, or a machine with more memory"
        )
    raise ResourceError(msg)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}"
