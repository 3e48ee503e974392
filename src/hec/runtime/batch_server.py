"""The model owner's side in batch packing: evaluates tensors of ciphertexts.

The server schedules the program one ciphertext at a time (``batch_schedule``), which is also
what its memory prediction assumes; ``threads > 1`` evaluates independent ciphertexts of each
op in worker processes (``parallel_batch``), or on a Ray cluster with a ``transport`` to it
(``cluster.RayTransport``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.batch_memory import MemoryPlan, Planned, plan_memory
from hec.backend_openfhe.execute_batch import BatchExecutor, InputSource, ProgressFn
from hec.runtime.key_cache import hold_keys

if TYPE_CHECKING:
    from hec.backend_openfhe.parallel_batch import Transport

__all__ = ["BatchServer"]


class BatchServer:
    """Evaluates a batch-packed artifact. ``context`` holds the relinearization key only.

    Args:
        artifact: a batch-packed artifact.
        context: OpenFHE crypto context with the evaluation key.
        threads: worker processes evaluating independent ciphertexts (1: in this process).
            With ``threads > 1`` this process must not have run OpenFHE with several OpenMP
            threads before (call ``parallel_batch.single_omp_thread()`` before key generation,
            or set ``OMP_NUM_THREADS=1``): forked workers hang otherwise.
        planned: ``plan_memory(artifact.program, artifact.params, threads)``, if already made.
        transport: where each wave's chains are computed instead of forked workers
            (``parallel_batch.Transport``); ``planned`` must then have waves.
    """

    def __init__(
        self,
        artifact: Artifact,
        context,
        threads: int = 1,
        planned: Planned | None = None,
        transport: Transport | None = None,
    ) -> None:
        if artifact.program.dialect != "batch":
            raise ValueError("BatchServer runs batch-packed artifacts; use Server")
        self.artifact = artifact
        hold_keys(self)  # OpenFHE keeps its keys in process-wide maps (key_cache)
        planned = planned or plan_memory(artifact.program, artifact.params, threads)
        self.plan: MemoryPlan = planned.plan
        self.threads = threads
        if threads > 1 or transport is not None:
            from hec.backend_openfhe.parallel_batch import ParallelBatchExecutor

            assert planned.waves is not None
            self._executor: BatchExecutor = ParallelBatchExecutor(
                context, planned.eg, planned.schedule, planned.waves, threads, transport
            )
        else:
            self._executor = BatchExecutor(context, planned.eg, planned.schedule)

    @property
    def worker_peak_bytes(self) -> int:
        """The most memory the worker processes of one wave held beyond what they share with
        this one (0 with one thread)."""
        return getattr(self._executor, "worker_peak_bytes", 0)

    def evaluate(self, cts: InputSource, progress: ProgressFn | None = None) -> list:
        """``cts``: one ciphertext per input element (a list, or a source that encrypts or
        reads each when asked: ``Client.element_encryptor``); returns one per output element.

        Each input is taken from ``cts`` just before its first use (its entry is set to
        ``None``) and freed after its last.
        """
        return self._executor.run([cts], progress)[0]
