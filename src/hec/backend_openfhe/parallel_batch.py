"""Evaluate a batch program's independent ciphertexts in worker processes.

Why processes: openfhe-python holds the GIL during every call (two Python threads evaluating
ciphertexts take as long as one doing both, measured), and OpenFHE's own OpenMP parallelism is
inside one operation. Many ciphertexts of a batch program are independent of each other, so
they are shared out to ``threads`` processes.

How: the memory-saving schedule is cut into *waves* of independent *chains* (a dense row, then
its square, then its rescale: one unit of work whose intermediates stay where they are made;
``batch_schedule.waves``). For each wave the evaluator forks ``threads - 1`` children: a child
inherits every ciphertext alive (copy-on-write, nothing is sent), computes a contiguous share of
the wave's chains and writes their results, serialized, to a file (a pipe would block it after
one ciphertext until the parent reads, which would serialize the work); the parent computes its
own share meanwhile, then reads and deserializes the children's. A deserialized ciphertext carries
its own copy of the ring parameters, which makes every later operation on it about ten times
slower (measured); adding it to a zero ciphertext of this process (same level, scale and parts)
gives a normal one. Receiving costs the parent about as much as a cheap task, so it keeps a
smaller share (``_parent_share``), and waves whose chains cost less than a transfer stay in the
parent.

Where the chains go is a *transport*: ``ForkTransport`` (the processes above, on this machine)
or ``hec.runtime.cluster.RayTransport`` (actors of a Ray cluster that hold the crypto context;
the chains' operands travel to them serialized, through the object store). Everything else
(waves, shares, receiving) is this one evaluator.

Requires one OpenMP thread per process (set here): forking with a live OpenMP pool is unsafe.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from typing import Protocol, cast

import numpy as np

from hec._environment import load_openfhe
from hec.backend_openfhe.batch_schedule import ElementGraph, Schedule, late_inputs
from hec.backend_openfhe.execute_batch import BatchExecutor, InputSource, ProgressFn
from hec.ir import BatchCipherType
from hec.ir.types import type_as

__all__ = ["ForkTransport", "ParallelBatchExecutor", "Transport", "WINDOW", "Zeros"]

WINDOW = 256  # chains per window when cutting waves (see batch_schedule.waves)
# Estimated milliseconds per task and per transfer (serialize, pipe, deserialize), at ring
# 2^14 and depth 5 (measured): only the ratio matters, and both grow alike with the ring.
_TRANSFER_MS = 10.0
_TASK_MS = {
    "mul": 20.0,
    "mul_norelin": 3.0,
    "relinearize": 17.0,
    "rescale": 6.0,
    "level_reduce": 0.5,
    "poly": 100.0,
    "add": 0.8,
}


class Transport(Protocol):
    """Where a wave's chains are computed besides this process.

    ``send`` starts computing each share of chains elsewhere (``env`` holds every ciphertext
    they read) and returns at once; ``receive`` then yields, share by share and chain by
    chain, the serialized last ciphertext of each chain. ``transfer_ms`` is the estimated cost
    of one such ciphertext's round trip, which decides what stays here.
    """

    workers: int
    transfer_ms: float
    parent_computes: bool  # whether this process takes a share of a costly wave too

    def send(self, shares: list[list[np.ndarray]], env: dict[int, object]) -> object: ...
    def receive(self, sent: object) -> Iterator[bytes]: ...
    def forget(self, cts: list[int]) -> None: ...


class ParallelBatchExecutor(BatchExecutor):
    """``BatchExecutor`` sharing each wave's chains out to ``transport``'s workers.

    Args:
        cc: crypto context with the relinearization key.
        eg: the element graph.
        schedule: a ``waves`` schedule (``batch_schedule.wave_schedule``).
        waves: the waves that schedule was made from.
        threads: processes evaluating at once (this one included) when ``transport`` is not
            given (then forked workers, ``ForkTransport``).
        transport: where the chains go.

    The results are those of ``BatchExecutor`` (the same kernels on the same ciphertexts,
    whichever process computes them).
    """

    def __init__(
        self,
        cc,
        eg: ElementGraph,
        schedule: Schedule,
        waves: list,
        threads: int = 1,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(cc, eg, schedule)
        self._fhe = load_openfhe()
        if transport is None:
            single_omp_thread()
            transport = ForkTransport(self, threads)
        self.transport = transport
        self._waves = waves
        # Deserialized ciphertexts reuse this process's context; recomputing its CRT tables
        # for every ciphertext would cost 3x the transfer.
        self._fhe.DisablePrecomputeCRTTablesAfterDeserializaton()
        self._zeros: Zeros | None = None
        position = {int(ct): k for k, ct in enumerate(schedule.order)}
        self._dead = [
            [d for ch in wave for ct in ch.tolist() for d in schedule.free_after[position[ct]]]
            for wave in waves
        ]
        self._loads = [
            [d for ch in wave for ct in ch.tolist() for d in schedule.load_before[position[ct]]]
            for wave in waves
        ]

    @property
    def worker_peak_bytes(self) -> int:
        """The most memory forked workers of one wave held beyond what they share with this
        process (0 for other transports)."""
        return getattr(self.transport, "peak_bytes", 0)

    def run(self, inputs: list[InputSource], progress: ProgressFn | None = None) -> list[list]:
        self._check_inputs(inputs)
        env: dict[int, object] = {}
        self._zeros = None
        done, total = 0, len(self.schedule.order)
        for wave, dead, load in zip(self._waves, self._dead, self._loads, strict=True):
            self.load(load, inputs, env)  # before the fork: the workers inherit them
            if self._zeros is None and load:
                first = env[load[0]]
                self._zeros = Zeros(self.cc, self.cc.EvalSub(first, first))  # a zero made here
            self._run_wave(wave, env)
            for ct in dead:
                env.pop(ct, None)
            self.transport.forget(dead)
            done += sum(len(c) for c in wave)
            if progress is not None:
                progress(done, total)
        self.load(late_inputs(self.eg, self.schedule), inputs, env)
        return [[env[ct] for ct in self.eg.ct_of[id(v)].tolist()] for v in self.eg.program.outputs]

    def chain(self, chain: np.ndarray, env: dict[int, object]) -> object:
        """Compute a chain of ciphertexts (each reads the one before); return the last."""
        for c in chain.tolist():
            env[c] = self.compute(c, env)
        return env[int(chain[-1])]

    def _run_wave(self, chains: list[np.ndarray], env: dict[int, object]) -> None:
        n, t = len(chains), self.transport
        c = self._task_ms(chains)
        if t.parent_computes:
            mine = _parent_share(n, t.workers + 1, c, t.transfer_ms)
        else:  # all sent when receiving a chain costs this process less than computing it
            mine = n if n < 2 * t.workers or c <= t.transfer_ms else 0
        if mine >= n:
            for chain in chains:
                self.chain(chain, env)
            return
        bounds = np.linspace(mine, n, t.workers + 1).round().astype(int)
        shares = [chains[int(lo) : int(hi)] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        sent = t.send(shares, env)
        for chain in chains[:mine]:
            self.chain(chain, env)
        received = t.receive(sent)
        for chain in chains[mine:]:
            last = int(chain[-1])
            ct = self._fhe.DeserializeCiphertextString(next(received), self._fhe.BINARY)
            assert self._zeros is not None  # made when the first inputs were loaded
            env[last] = self._zeros.fresh(ct, ciphertext_state(self.eg, last))
        for _ in received:  # let the transport finish its bookkeeping
            pass

    def _task_ms(self, chains: list[np.ndarray]) -> float:
        """Estimated milliseconds of a chain of the wave (the first; a wave's are alike)."""
        if not chains:
            return 0.0
        ms = 0.0
        for c in chains[0].tolist():
            op = self.eg.program.ops[int(self.eg.op_of[c])]
            if op.kind in ("weighted_sum", "signed_sum"):
                e = int(self.eg.element_of[c])
                nnz = int(op.consts["indptr"][e + 1] - op.consts["indptr"][e])
                ms += nnz * (1.8 if op.kind == "weighted_sum" else 0.8)
                ms += 6.0 if op.kind == "weighted_sum" else 0.0
            else:
                ms += _TASK_MS.get(op.kind, 1.0)
        return ms


# what ForkTransport.send returns: the directory of the children's files, and per child its
# process id, file and number of chains
_Forked = tuple[tempfile.TemporaryDirectory, list[tuple[int, str, int]]]


class ForkTransport:
    """Forked children of this process: a child inherits every ciphertext alive
    (copy-on-write, nothing is sent), computes its share and writes the results, serialized,
    to a file (a pipe would block it after one ciphertext until the parent reads)."""

    parent_computes = True
    transfer_ms = _TRANSFER_MS

    def __init__(self, executor: ParallelBatchExecutor, threads: int) -> None:
        self.workers = threads - 1
        self._executor = executor
        # the most memory the workers of one wave held at once beyond what they share with
        # this process (each reports its private pages when it is done)
        self.peak_bytes = 0

    def send(self, shares: list[list[np.ndarray]], env: dict[int, object]) -> object:
        tmp = tempfile.TemporaryDirectory(prefix="hec-wave-")
        children = []
        for k, share in enumerate(shares):
            path = os.path.join(tmp.name, f"worker{k}.bin")
            pid = os.fork()
            if pid == 0:  # child: compute, write, exit without running any Python cleanup
                os._exit(self._child(share, env, path))
            children.append((pid, path, len(share)))
        return tmp, children

    def receive(self, sent: object) -> Iterator[bytes]:
        tmp, children = cast(_Forked, sent)  # what send returned
        private = 0
        with tmp:
            for pid, path, count in children:
                _, status = os.waitpid(pid, 0)
                if status != 0:
                    raise RuntimeError(f"evaluation worker {pid} failed (status {status})")
                with open(path, "rb") as f:
                    for _ in range(count):
                        (size,) = struct.unpack("<Q", _read(f, 8))
                        yield _read(f, size)
                    private += struct.unpack("<Q", _read(f, 8))[0]
                os.unlink(path)
        self.peak_bytes = max(self.peak_bytes, private)

    def forget(self, cts: list[int]) -> None:
        pass  # nothing is kept between waves

    def _child(self, chains: list[np.ndarray], env: dict[int, object], path: str) -> int:
        """In a forked worker: compute ``chains``, write their results to ``path``."""
        fhe = self._executor._fhe
        try:
            with open(path, "wb") as f:
                for chain in chains:
                    data = fhe.Serialize(self._executor.chain(chain, env), fhe.BINARY)
                    for c in chain.tolist():  # hold one chain at a time
                        env.pop(c, None)
                    f.write(struct.pack("<Q", len(data)))
                    f.write(data)
                f.write(struct.pack("<Q", _private_bytes()))
        except BaseException:
            return 1
        return 0


def ciphertext_state(eg: ElementGraph, ct: int) -> tuple[int, int, int]:
    """(level, scale degree, parts) of element ciphertext ``ct`` (an input's or a result's)."""
    op = int(eg.op_of[ct])
    if op >= 0:
        t = type_as(eg.program.ops[op].result.type, BatchCipherType)
    else:
        t = next(
            type_as(v.type, BatchCipherType)
            for v in eg.program.inputs
            if ct in eg.ct_of[id(v)].tolist()
        )
    return t.level, t.scale_deg, t.parts


class Zeros:
    """Zero ciphertexts made in this process, one per (level, scale degree, parts).

    A deserialized ciphertext carries its own copy of the ring parameters, which makes every
    later operation on it about ten times slower (measured); ``fresh`` adds it to the zero of
    its state, which gives a normal one with the same value.

    Args:
        cc: the crypto context.
        base: a zero ciphertext of this process at level 0, scale degree 1, two parts.
    """

    def __init__(self, cc, base) -> None:
        self.cc = cc
        self._zeros: dict[tuple[int, int, int], object] = {(0, 1, 2): base}

    def fresh(self, ct, state: tuple[int, int, int]):
        """``ct`` (deserialized, in ``state``) as a ciphertext of this process."""
        return self.cc.EvalAdd(self.at(*state), ct)

    def at(self, level: int, scale_deg: int, parts: int) -> object:
        key = (level, scale_deg, parts)
        if key not in self._zeros:
            cc = self.cc
            if parts == 3 and scale_deg == 2:  # a product not yet relinearized
                z = self.at(level, 1, 2)
                self._zeros[key] = cc.EvalMultNoRelin(z, z)
            elif parts == 3:  # such a product rescaled
                self._zeros[key] = cc.Rescale(self.at(level - 1, 2, 3))
            elif scale_deg == 2:  # a relinearized product, or a scalar multiple
                self._zeros[key] = cc.EvalMult(self.at(level, 1, 2), 1.0)
            else:
                self._zeros[key] = cc.LevelReduce(self._zeros[0, 1, 2], None, level)
        return self._zeros[key]


def _parent_share(n: int, threads: int, task_ms: float, transfer_ms: float) -> int:
    """Tasks the parent computes itself so that it finishes receiving when the children
    finish computing: ``p·c + (n - p)·d = (n - p)·c / (threads - 1)``; all of them when a
    task costs less than its transfer."""
    c, d, w = task_ms, transfer_ms, threads - 1
    if n < 2 * threads or c / w <= d:
        return n
    return int(round(n * (c / w - d) / (c + c / w - d)))


def _private_bytes() -> int:
    """Pages this process does not share with its parent (written since the fork), in bytes."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            return 1024 * sum(
                int(line.split()[1])
                for line in f
                if line.startswith(("Private_Dirty", "Private_Clean"))
            )
    except OSError:  # not Linux: nothing measured
        return 0


def _read(f, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise RuntimeError("an evaluation worker ended before sending its ciphertexts")
    return data


def single_omp_thread() -> None:
    """One OpenMP thread in this process and its children.

    Call it before the first OpenFHE operation (key generation): a child forked after OpenMP
    has run a team of several threads hangs in its first parallel region (measured: ``hec run
    --threads 2`` without ``OMP_NUM_THREADS=1`` never finished).
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import ctypes

        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(1)
    except OSError:  # no GNU OpenMP loaded: nothing to limit
        pass
