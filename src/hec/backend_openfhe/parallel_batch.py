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

Requires one OpenMP thread per process (set here): forking with a live OpenMP pool is unsafe.
"""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np

from hec._environment import load_openfhe
from hec.backend_openfhe.batch_schedule import ElementGraph, Schedule, late_inputs
from hec.backend_openfhe.execute_batch import BatchExecutor, InputSource, ProgressFn
from hec.ir import BatchCipherType
from hec.ir.types import type_as

__all__ = ["ParallelBatchExecutor", "WINDOW"]

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


class ParallelBatchExecutor(BatchExecutor):
    """``BatchExecutor`` sharing each wave's chains out to ``threads`` processes.

    Args:
        cc: crypto context with the relinearization key.
        eg: the element graph.
        schedule: a ``waves`` schedule (``batch_schedule.wave_schedule``).
        waves: the waves that schedule was made from.
        threads: processes evaluating at once (this one included).
    """

    def __init__(self, cc, eg: ElementGraph, schedule: Schedule, waves: list, threads: int) -> None:
        super().__init__(cc, eg, schedule)
        self.threads = threads
        self._waves = waves
        self._fhe = load_openfhe()
        single_omp_thread()
        # Deserialized ciphertexts reuse this process's context; recomputing its CRT tables
        # for every ciphertext would cost 3x the transfer.
        self._fhe.DisablePrecomputeCRTTablesAfterDeserializaton()
        self._zeros: dict[tuple[int, int, int], object] = {}
        # the most memory the workers of one wave held at once beyond what they share with
        # this process (each reports its private pages when it is done)
        self.worker_peak_bytes = 0
        position = {int(ct): k for k, ct in enumerate(schedule.order)}
        self._dead = [
            [d for ch in wave for ct in ch.tolist() for d in schedule.free_after[position[ct]]]
            for wave in waves
        ]
        self._loads = [
            [d for ch in wave for ct in ch.tolist() for d in schedule.load_before[position[ct]]]
            for wave in waves
        ]

    def run(self, inputs: list[InputSource], progress: ProgressFn | None = None) -> list[list]:
        self._check_inputs(inputs)
        env: dict[int, object] = {}
        self._zeros = {}
        done, total = 0, len(self.schedule.order)
        for wave, dead, load in zip(self._waves, self._dead, self._loads, strict=True):
            self.load(load, inputs, env)  # before the fork: the workers inherit them
            if not self._zeros and load:
                first = env[load[0]]
                self._zeros = {(0, 1, 2): self.cc.EvalSub(first, first)}  # a zero made here
            self._run_wave(wave, env)
            for ct in dead:
                env.pop(ct, None)
            done += sum(len(c) for c in wave)
            if progress is not None:
                progress(done, total)
        self.load(late_inputs(self.eg, self.schedule), inputs, env)
        return [[env[ct] for ct in self.eg.ct_of[id(v)].tolist()] for v in self.eg.program.outputs]

    def _chain(self, chain: np.ndarray, env: dict[int, object]) -> object:
        """Compute a chain of ciphertexts (each reads the one before); return the last."""
        for c in chain.tolist():
            env[c] = self.compute(c, env)
        return env[int(chain[-1])]

    def _run_wave(self, chains: list[np.ndarray], env: dict[int, object]) -> None:
        n = len(chains)
        mine = _parent_share(n, self.threads, self._task_ms(chains))
        if mine >= n:
            for chain in chains:
                self._chain(chain, env)
            return
        bounds = np.linspace(mine, n, self.threads).round().astype(int)
        children = []
        private = 0
        with tempfile.TemporaryDirectory(prefix="hec-wave-") as tmp:
            for k in range(self.threads - 1):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                path = os.path.join(tmp, f"worker{k}.bin")
                pid = os.fork()
                if pid == 0:  # child: compute, write, exit without running any Python cleanup
                    os._exit(self._child(chains[lo:hi], env, path))
                children.append((pid, path, lo, hi))
            for chain in chains[:mine]:
                self._chain(chain, env)
            for pid, path, lo, hi in children:
                _, status = os.waitpid(pid, 0)
                if status != 0:
                    raise RuntimeError(f"evaluation worker {pid} failed (status {status})")
                with open(path, "rb") as f:
                    for chain in chains[lo:hi]:
                        (size,) = struct.unpack("<Q", _read(f, 8))
                        data = _read(f, size)
                        ct = self._fhe.DeserializeCiphertextString(data, self._fhe.BINARY)
                        env[int(chain[-1])] = self.cc.EvalAdd(self._zero(int(chain[-1])), ct)
                    private += struct.unpack("<Q", _read(f, 8))[0]
                os.unlink(path)
        self.worker_peak_bytes = max(self.worker_peak_bytes, private)

    def _child(self, chains: list[np.ndarray], env: dict[int, object], path: str) -> int:
        """In a forked worker: compute ``chains``, write their results to ``path``."""
        try:
            with open(path, "wb") as f:
                for chain in chains:
                    data = self._fhe.Serialize(self._chain(chain, env), self._fhe.BINARY)
                    for c in chain.tolist():  # hold one chain at a time
                        env.pop(c, None)
                    f.write(struct.pack("<Q", len(data)))
                    f.write(data)
                f.write(struct.pack("<Q", _private_bytes()))
        except BaseException:
            return 1
        return 0

    def _zero(self, ct: int) -> object:
        """A zero ciphertext of this process with the state of element ciphertext ``ct``."""
        t = type_as(self.eg.program.ops[int(self.eg.op_of[ct])].result.type, BatchCipherType)
        return self._zero_at(t.level, t.scale_deg, t.parts)

    def _zero_at(self, level: int, scale_deg: int, parts: int) -> object:
        key = (level, scale_deg, parts)
        if key not in self._zeros:
            cc = self.cc
            if parts == 3 and scale_deg == 2:  # a product not yet relinearized
                z = self._zero_at(level, 1, 2)
                self._zeros[key] = cc.EvalMultNoRelin(z, z)
            elif parts == 3:  # such a product rescaled
                self._zeros[key] = cc.Rescale(self._zero_at(level - 1, 2, 3))
            elif scale_deg == 2:  # a relinearized product, or a scalar multiple
                self._zeros[key] = cc.EvalMult(self._zero_at(level, 1, 2), 1.0)
            else:
                self._zeros[key] = cc.LevelReduce(self._zeros[0, 1, 2], None, level)
        return self._zeros[key]

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


def _parent_share(n: int, threads: int, task_ms: float) -> int:
    """Tasks the parent computes itself so that it finishes receiving when the children
    finish computing: ``p·c + (n - p)·d = (n - p)·c / (threads - 1)``."""
    c, d, w = task_ms, _TRANSFER_MS, threads - 1
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
