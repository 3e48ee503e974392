"""One worker of a Ray cluster (an actor): holds an artifact and its evaluation keys, never a
secret key, and evaluates what the driver sends it.

It loads a *bundle* the driver put into the object store once (``cluster.bundle``): the
artifact's files and the files of ``KEYDIR/public``. The actor writes them to a private
temporary directory, loads them with the same checks as ``hec serve`` (artifact digests, key
sidecar, ``refuse_secret_material``), and removes the directory before it evaluates anything:
from then on the keys exist only in its memory. Every call names the bundle, so a worker Ray
restarted after its process died loads the same one again on the call Ray retries.

- Slot packing: ``evaluate`` takes an input ciphertext file's bytes and returns the result
  file's bytes (``Server.evaluate_bytes``, the function behind ``hec serve``).
- Batch packing: ``chains`` computes chains of element ciphertexts of a wave
  (``parallel_batch``) from their serialized operands and returns each chain's last
  ciphertext, serialized.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from hec.backend_openfhe.artifact import Artifact

__all__ = ["Evaluator"]


class Evaluator:
    """A Ray actor holding the artifact and evaluation keys of a bundle (see the module).

    Every call names the bundle (``bundle_ref``: a list holding its ObjectRef, so that Ray
    passes the reference, not the bundle): a worker loads it on its first call, and a worker
    Ray restarted (empty again) on the call Ray retries. A bundle given to the actor's
    constructor would do the same, but Ray warns about every such actor.
    """

    def __init__(self) -> None:
        from hec.backend_openfhe.parallel_batch import single_omp_thread

        single_omp_thread()  # one core per actor: Ray schedules actors by cores
        self.artifact: Artifact | None = None

    def _load(self, bundle_ref: list) -> None:
        """Load the bundle unless this worker holds it already."""
        if self.artifact is not None:
            return
        import ray

        from hec._environment import load_openfhe
        from hec.backend_openfhe.artifact import load_artifact
        from hec.backend_openfhe.parallel_batch import Zeros
        from hec.errors import ArtifactError
        from hec.runtime.server import Server, load_eval_keys

        bundle = ray.get(bundle_ref[0])
        with tempfile.TemporaryDirectory(prefix="hec-worker-") as tmp:
            root = Path(tmp)
            for part in ("artifact", "keys"):
                (root / part).mkdir(mode=0o700)
                for name, data in bundle[part].items():
                    (root / part / name).write_bytes(data)
            art = load_artifact(root / "artifact")
            loaded = load_eval_keys(art, root / "keys")
        if art.content_hash != bundle["artifact_hash"]:
            raise ArtifactError("the cluster worker received another artifact than was sent")
        self._fhe = load_openfhe()
        if art.program.dialect == "batch":
            from hec.backend_openfhe.batch_schedule import Schedule, element_graph
            from hec.backend_openfhe.execute_batch import BatchExecutor

            # compute() only: the driver decides what to compute and when
            nothing = Schedule(np.zeros(0, np.int64), [], [], "driver", [])
            self._batch = BatchExecutor(loaded.context, element_graph(art.program), nothing)
            cc = loaded.context
            self._fhe.DisablePrecomputeCRTTablesAfterDeserializaton()
            zero = cc.Encrypt(loaded.public_key, cc.MakeCKKSPackedPlaintext([0.0]))
            self._zeros = Zeros(cc, zero)
        else:
            self._server = Server(
                art, loaded.context, loaded.key_id, loaded.key_tag, loaded.public_key
            )
            self._server.prepare()
        self.artifact = art

    def evaluate(self, bundle_ref: list, data: bytes) -> tuple[str, bytes | str]:
        """A slot program's request: ``server.answer`` (``("ok", result file bytes)``, or
        ``("rejected" | "failed", why)``)."""
        from hec.runtime.server import answer

        self._load(bundle_ref)
        return answer(self._server, data)

    def chains(
        self, bundle_ref: list, chains: list[list[int]], operand_ids: list[int], *operands: bytes
    ) -> list:
        """Compute ``chains`` of a batch program's wave from the serialized ciphertexts
        ``operands`` (of ids ``operand_ids``); return each chain's last ciphertext, serialized.

        The results are those the driver's own ``BatchExecutor`` would compute (same kernels;
        a received ciphertext is made this process's own by adding a zero, which leaves its
        value as it is).
        """
        from hec.backend_openfhe.parallel_batch import ciphertext_state

        self._load(bundle_ref)
        fhe, eg = self._fhe, self._batch.eg
        env: dict[int, object] = {}
        for ct, data in zip(operand_ids, operands, strict=True):
            received = fhe.DeserializeCiphertextString(bytes(data), fhe.BINARY)
            env[ct] = self._zeros.fresh(received, ciphertext_state(eg, ct))
        out = []
        for chain in chains:
            for c in chain:
                env[c] = self._batch.compute(c, env)
            out.append(fhe.Serialize(env[chain[-1]], fhe.BINARY))
            for c in chain:  # hold one chain at a time
                env.pop(c, None)
        return out

    def where(self, bundle_ref: list) -> dict:
        """Load the bundle; this worker's process id and Ray node id."""
        import ray

        self._load(bundle_ref)
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}
