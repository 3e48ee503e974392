"""Evaluate a batch program's independent ciphertexts in worker processes.

Why processes: openfhe-python holds the GIL during every call (two Python threads evaluating
ciphertexts take as long as one doing both, measured), and OpenFHE's own OpenMP parallelism is
inside one operation. The ciphertexts of one op are independent of each other, so they are
shared out to ``threads`` processes.

How: the program runs op by op (program order). Each *stage* is an op plus the element-wise ops
that only consume it (a dense row, then its square, then its rescale: one task per element, so
only the stage's last ciphertext travels). At each stage the evaluator forks ``threads - 1``
children: a child inherits every ciphertext alive (copy-on-write, nothing is sent), computes a
contiguous share of the stage's elements and writes them, serialized, to a pipe; the parent
computes its own share meanwhile, then reads and deserializes the children's. Receiving costs
the parent about as much as a cheap task, so it keeps a smaller share (``_parent_share``), and
stages whose tasks cost less than a transfer stay in the parent.

Requires one OpenMP thread per process (set here): forking with a live OpenMP pool is unsafe.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from hec._environment import load_openfhe
from hec.backend_openfhe.batch_schedule import ElementGraph, Schedule, liveness, program_order
from hec.backend_openfhe.execute_batch import BatchExecutor, ProgressFn
from hec.ir import Graph

__all__ = ["ParallelBatchExecutor", "stages"]

ELEMENTWISE = ("mul", "rescale", "level_reduce", "poly")
# Estimated milliseconds per task and per transfer (serialize, pipe, deserialize), at ring
# 2^14 and depth 5 (measured): only the ratio matters.
_TRANSFER_MS = 10.0
_TASK_MS = {"mul": 20.0, "rescale": 6.0, "level_reduce": 0.5, "poly": 100.0, "add": 0.8}


def stages(program: Graph) -> list[list[int]]:
    """Op indices grouped into stages: an op and the element-wise ops that only consume it."""
    uses: dict[int, int] = {}
    for op in program.ops:
        for v in {id(x) for x in op.inputs}:
            uses[v] = uses.get(v, 0) + 1
    outputs = {id(v) for v in program.outputs}
    out: list[list[int]] = []
    for i, op in enumerate(program.ops):
        prev = program.ops[i - 1].result if out else None
        chained = (
            op.kind in ELEMENTWISE
            and prev is not None
            and all(x is prev for x in op.inputs)
            and uses.get(id(prev)) == 1
            and id(prev) not in outputs
        )
        if chained:
            out[-1].append(i)
        else:
            out.append([i])
    return out


class ParallelBatchExecutor(BatchExecutor):
    """``BatchExecutor`` sharing each stage's ciphertexts out to ``threads`` processes."""

    def __init__(self, cc, eg: ElementGraph, schedule: Schedule, threads: int) -> None:
        if schedule.kind != "program":
            schedule = liveness(eg, program_order(eg), "program")
        super().__init__(cc, eg, schedule)
        self.threads = threads
        self._fhe = load_openfhe()
        _single_omp_thread()
        # Deserialized ciphertexts reuse this process's context; recomputing its CRT tables
        # for every ciphertext would cost 3x the transfer.
        self._fhe.DisablePrecomputeCRTTablesAfterDeserializaton()
        self._stages = self._plan_stages()

    def _plan_stages(self) -> list[tuple[list[np.ndarray], list[int]]]:
        """Per stage: the ciphertext chain of each needed element, and what dies after it."""
        eg, s = self.eg, self.schedule
        position = {int(ct): k for k, ct in enumerate(s.order)}
        plan = []
        for ops in stages(eg.program):
            first = eg.ct_of[id(eg.program.ops[ops[0]].result)]
            chains = []
            for e in range(len(first)):
                chain = np.array([eg.ct_of[id(eg.program.ops[i].result)][e] for i in ops])
                # gathers name an earlier ciphertext; dead elements are not scheduled
                own = [
                    int(c) in position and eg.op_of[c] == i for c, i in zip(chain, ops, strict=True)
                ]
                chain = chain[own]
                if len(chain):
                    chains.append(chain)
            dead = [d for chain in chains for c in chain for d in s.free_after[position[int(c)]]]
            plan.append((chains, dead))
        return plan

    def run(self, inputs: list[list], progress: ProgressFn | None = None) -> list[list]:
        env: dict[int, object] = {}
        for v, cts in zip(self.eg.program.inputs, inputs, strict=True):
            env.update(zip(self._inputs[id(v)].tolist(), cts, strict=True))
        for ct in self.schedule.free_first:
            del env[ct]
        done, total = 0, len(self.schedule.order)
        for chains, dead in self._stages:
            self._run_stage(chains, env)
            for ct in dead:
                env.pop(ct, None)
            done += sum(len(c) for c in chains)
            if progress is not None:
                progress(done, total)
        return [[env[ct] for ct in self.eg.ct_of[id(v)].tolist()] for v in self.eg.program.outputs]

    def _chain(self, chain: np.ndarray, env: dict[int, object]) -> object:
        """Compute a chain of ciphertexts (each reads the one before); return the last."""
        local = env
        for c in chain.tolist():
            local[c] = self.compute(c, local)
        return local[int(chain[-1])]

    def _run_stage(self, chains: list[np.ndarray], env: dict[int, object]) -> None:
        n = len(chains)
        mine = _parent_share(n, self.threads, self._task_ms(chains))
        if mine >= n:
            for chain in chains:
                self._keep_last(chain, env, self._chain(chain, env))
            return
        bounds = np.linspace(mine, n, self.threads).round().astype(int)
        children = []
        for k in range(self.threads - 1):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: compute, send, exit without running any Python cleanup
                os.close(r)
                code = 0
                try:
                    with os.fdopen(w, "wb") as f:
                        for chain in chains[lo:hi]:
                            data = self._fhe.Serialize(self._chain(chain, env), self._fhe.BINARY)
                            for c in chain.tolist():  # hold one chain at a time
                                env.pop(c, None)
                            f.write(struct.pack("<Q", len(data)))
                            f.write(data)
                except BaseException:
                    code = 1
                os._exit(code)
            os.close(w)
            children.append((pid, r, lo, hi))
        for chain in chains[:mine]:
            self._keep_last(chain, env, self._chain(chain, env))
        for pid, r, lo, hi in children:
            with os.fdopen(r, "rb") as f:
                for chain in chains[lo:hi]:
                    (size,) = struct.unpack("<Q", _read(f, 8))
                    ct = self._fhe.DeserializeCiphertextString(_read(f, size), self._fhe.BINARY)
                    env[int(chain[-1])] = ct
            _, status = os.waitpid(pid, 0)
            if status != 0:
                raise RuntimeError(f"evaluation worker {pid} failed (status {status})")

    @staticmethod
    def _keep_last(chain: np.ndarray, env: dict[int, object], last: object) -> None:
        for c in chain[:-1].tolist():  # intermediates of a chain are read by the chain only
            env.pop(c, None)
        env[int(chain[-1])] = last

    def _task_ms(self, chains: list[np.ndarray]) -> float:
        """Estimated milliseconds of the stage's first task (tasks of a stage are alike)."""
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


def _read(f, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise RuntimeError("an evaluation worker ended before sending its ciphertexts")
    return data


def _single_omp_thread() -> None:
    """One OpenMP thread in this process and its children (forking a live pool can hang)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import ctypes

        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(1)
    except OSError:  # no GNU OpenMP loaded: nothing to limit
        pass
