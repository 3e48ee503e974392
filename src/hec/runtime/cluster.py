"""Scale-out on a Ray cluster (``hec run --ray ADDRESS``, ``hec serve --ray ADDRESS``).

What travels: the driver (the client in ``hec run``, the HTTP front end in ``hec serve``) puts
one *bundle* into the object store, the artifact's files and the files of ``KEYDIR/public``
(context, public, relinearization and rotation keys), and starts one ``Evaluator`` actor per
core of the cluster from it (``cluster_worker``). The secret key never leaves the client: the
bundle is made from the public key directory only, which ``keys.refuse_secret_material``
checks first, as a server does. Then only ciphertexts travel, serialized:

- slot packing: one input ciphertext file per evaluation to an actor, its result back;
- batch packing: the operands of each wave's chains (``parallel_batch``) to the actors that
  compute them, one object per ciphertext, and each chain's result back (``RayTransport``).

Ray restarts an actor whose process dies (from the same bundle) and runs its unfinished tasks
again (``max_restarts``, ``max_task_retries``): an evaluation is a pure function of its
ciphertexts, so a retried one gives the same result.

Ray is an optional extra (``pip install 'hec[ray]'``), imported only here, when asked for.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hec.backend_openfhe.artifact import Artifact
from hec.errors import EnvironmentProblem, ServerError
from hec.runtime import keys

__all__ = [
    "RayPool",
    "RayTransport",
    "RemoteSlots",
    "bundle",
    "client_bundle",
    "connect",
    "require_ray",
]

RESTARTS = 4  # times Ray restarts a dead actor, and runs one of its tasks again
# Estimated cost to the driver of one chain sent to the cluster (its share of putting the
# operands, getting, deserializing and adopting its result), at ring 2^14 and depth 5, on
# loopback (benchmarks/ray_throughput.py measures the parts)
TRANSFER_MS = 10.0


def require_ray():
    """The ``ray`` module, or ``EnvironmentProblem`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EnvironmentProblem(
            "--ray needs Ray, which is not installed here: pip install 'hec[ray]'"
        ) from None
    return ray


def connect(address: str):
    """Connect this process to the Ray cluster at ``address`` (``HOST:PORT`` of its head, as
    ``ray start --head`` prints it); return the ``ray`` module.

    A process stays connected to the first cluster it joined (Ray allows one). Ray's token
    authentication applies as the cluster was started (``RAY_AUTH_MODE``, ``~/.ray``).

    Raises:
        EnvironmentProblem: Ray is not installed.
        ServerError: no Ray cluster answers at ``address``.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    _check_reachable(address)  # Ray itself would wait for minutes
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServerError(
            f"cannot join the Ray cluster at {address} ({first}); start it with "
            f"`ray start --head` and give its address (HOST:PORT)"
        ) from None
    return ray


def _check_reachable(address: str) -> None:
    """Raise ``ServerError`` unless something accepts connections at ``HOST:PORT``."""
    import socket

    host, _, port = address.rpartition(":")
    hint = "start it with `ray start --head` and give its address (HOST:PORT)"
    if not host or not port.isdigit():
        raise ServerError(f"--ray {address}: not a Ray cluster address; {hint}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ServerError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); {hint}"
        ) from None


def bundle(artifact: Artifact, eval_keys: Path) -> dict[str, Any]:
    """What every worker needs, as bytes: the artifact's files and ``eval_keys``'s key files.

    Only the files the key sidecar lists (and the sidecar) are read: whatever else lies in
    the directory stays where it is.

    Raises:
        KeysError: ``eval_keys`` holds a secret key, or belongs to another artifact.
        ServerError: the program loads its keys a group at a time (not on a cluster yet).
    """
    if artifact.params.key_groups:
        raise ServerError(
            f"{artifact.path}: this program loads its rotation keys a group at a time "
            f"(compiled under a memory limit), which the Ray workers do not do yet; run it "
            f"without --ray, or compile it with a larger --memory-limit"
        )
    keys.refuse_secret_material(eval_keys)
    found = keys.read_key_files(eval_keys, "public", artifact, ())
    key_files = [keys.SIDECAR, *found.files]
    manifest = artifact.path / "manifest.json"
    import json

    names = ["manifest.json", *json.loads(manifest.read_text())["files"]]
    return {
        "artifact": {name: (artifact.path / name).read_bytes() for name in names},
        "keys": {name: (eval_keys / name).read_bytes() for name in key_files},
        "artifact_hash": artifact.content_hash,
    }


def client_bundle(artifact: Artifact, client) -> dict[str, Any]:
    """``bundle`` of the evaluation keys a ``Client`` made in memory (``export_public``)."""
    with tempfile.TemporaryDirectory(prefix="hec-public-") as tmp:
        client.export_public(Path(tmp))
        return bundle(artifact, Path(tmp))


class RayPool:
    """``Evaluator`` actors on a Ray cluster, made from one bundle in the object store.

    Args:
        address: the cluster's address (``connect``).
        what: a ``bundle``.
        workers: actors to start (default: one per core of the cluster); each takes a core.
    """

    def __init__(self, address: str, what: dict[str, Any], workers: int | None = None) -> None:
        ray = connect(address)
        self._ray = ray
        from hec.runtime.cluster_worker import Evaluator

        self.bundle_bytes = sum(
            len(d) for part in ("artifact", "keys") for d in what[part].values()
        )
        # Held here for as long as the actors live: a restarted actor loads it again from the
        # call Ray retries. (Inside a list: Ray then passes the reference, not the bundle.)
        self._bundle = [ray.put(what)]
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)(Evaluator)
        self.actors = [actor.options(scheduling_strategy="SPREAD").remote() for _ in range(n)]
        self.workers = n
        try:  # each loads the artifact and keys now, or says why not
            self.where = ray.get([a.where.remote(self._bundle) for a in self.actors])
        except Exception as exc:  # Ray wraps the actor's error: keep its last line
            self.close()
            raise ServerError(f"the Ray cluster's workers could not start: {_cause(exc)}") from None
        self.nodes = len({w["node"] for w in self.where})  # nodes the workers run on
        self._busy = [0] * n
        self._lock = threading.Lock()

    def submit(self, data: bytes) -> tuple[int, Any]:
        """Send one slot program's request to the least busy actor; ``result`` gets its
        reply."""
        with self._lock:
            k = int(np.argmin(self._busy))
            self._busy[k] += 1
        return k, self.actors[k].evaluate.remote(self._bundle, data)

    def result(self, sent: tuple[int, Any], timeout: float | None = None) -> tuple[str, Any]:
        """``server.answer``'s reply to a ``submit`` (``("failed", why)`` when the actor
        could not answer even after Ray's retries; ``TimeoutError`` past ``timeout``)."""
        ray = self._ray
        k, ref = sent
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError from None
        except ray.exceptions.RayError as exc:
            return "failed", f"the cluster worker failed ({_cause(exc)})"
        finally:
            with self._lock:
                self._busy[k] -= 1

    def evaluate(self, data: bytes, timeout: float | None = None) -> tuple[str, Any]:
        """``result(submit(data))``."""
        return self.result(self.submit(data), timeout)

    def close(self) -> None:
        """Stop the actors (the bundle leaves the object store with its last reference)."""
        for a in self.actors:
            self._ray.kill(a, no_restart=True)
        self.actors = []


class RemoteSlots:
    """Slot-packed evaluations of ``hec.run`` on a Ray cluster (``RayPool``), kept ahead of
    the decryption: up to two per worker are encrypted and in flight while ``client`` decrypts.

    ``evaluate(idx, span)`` gives what ``Client.decrypt_bytes`` gives for inputs ``idx`` (named
    ``span`` in errors): the same program on the same ciphertext as in one process
    (``Server.evaluate_bytes``). ``timings`` receives the encrypt, evaluate (waiting for the
    cluster) and decrypt seconds.
    """

    def __init__(
        self,
        art: Artifact,
        client,
        xb: np.ndarray,
        timings: dict[str, float],
        address: str,
        workers: int | None,
    ) -> None:
        self._client, self._xb, self._timings = client, xb, timings
        self.pool = RayPool(address, client_bundle(art, client), workers)
        per = art.params.blocks
        self._upcoming = iter(
            [list(range(s, min(s + per, len(xb)))) for s in range(0, len(xb), per)]
        )
        self._pending: dict[tuple[int, ...], tuple] = {}
        self._sent_bytes = self._received_bytes = 0

    def _submit(self, idx: list[int]) -> tuple:
        t = time.perf_counter()
        data = self._client.encrypt_to_bytes(self._xb[idx])
        self._timings["encrypt"] += time.perf_counter() - t
        self._sent_bytes += len(data)
        return self.pool.submit(data)

    def evaluate(self, idx: list[int], span: str):
        sent = self._pending.pop(tuple(idx), None) or self._submit(idx)
        while len(self._pending) < 2 * self.pool.workers:
            more = next(self._upcoming, None)
            if more is None:
                break
            if tuple(more) != tuple(idx):
                self._pending[tuple(more)] = self._submit(more)
        t = time.perf_counter()
        status, payload = self.pool.result(sent)
        self._timings["evaluate"] += time.perf_counter() - t
        if status != "ok":
            raise ServerError(f"input(s) {span}: {payload}")
        self._received_bytes += len(payload)
        t = time.perf_counter()
        try:
            return self._client.decrypt_bytes(payload, f"output of input(s) {span}")
        finally:
            self._timings["decrypt"] += time.perf_counter() - t

    def stats(self) -> dict:
        """Workers and bytes on the wire (the bundle once, ciphertext files each way)."""
        return {
            "workers": self.pool.workers,
            "nodes": self.pool.nodes,
            "bundle_bytes": self.pool.bundle_bytes,
            "sent_bytes": self._sent_bytes,
            "received_bytes": self._received_bytes,
        }

    def close(self) -> None:
        self.pool.close()


class RayTransport:
    """``parallel_batch.Transport`` to a ``RayPool``'s actors: a wave's chains are computed
    there, from their operands, each put into the object store once (serialized) and kept
    there until its last reader's wave is over."""

    parent_computes = False  # the driver is the client: it computes only what is not worth sending
    transfer_ms = TRANSFER_MS

    def __init__(self, pool: RayPool, eg) -> None:
        self._pool, self._eg = pool, eg
        self.workers = pool.workers
        self._refs: dict[int, object] = {}
        self.sent_bytes = 0  # serialized ciphertexts put into the object store
        self.put_seconds = 0.0  # serializing and putting them
        self.sent = self.received = 0  # ciphertexts

    def send(self, shares: list[list[np.ndarray]], env: dict[int, object]) -> object:
        from hec._environment import load_openfhe

        fhe, ray = load_openfhe(), self._pool._ray
        tasks = []
        for actor, share in zip(self._pool.actors, shares, strict=True):
            if not share:
                continue
            members = {c for ch in share for c in ch.tolist()}
            needed = sorted({int(d) for c in members for d in self._eg.deps[c].tolist()} - members)
            refs = []
            for ct in needed:
                if ct not in self._refs:
                    t = time.perf_counter()
                    data = fhe.Serialize(env[ct], fhe.BINARY)
                    self._refs[ct] = ray.put(data)
                    self.put_seconds += time.perf_counter() - t
                    self.sent_bytes += len(data)
                    self.sent += 1
                refs.append(self._refs[ct])
            chains = [ch.tolist() for ch in share]
            tasks.append(actor.chains.remote(self._pool._bundle, chains, needed, *refs))
        return tasks

    def receive(self, sent: object) -> Iterator[bytes]:
        ray = self._pool._ray
        for task in sent:  # type: ignore[attr-defined]  # what send returned
            try:
                results = ray.get(task)
            except ray.exceptions.RayError as exc:
                raise ServerError(f"a cluster worker failed ({_cause(exc)})") from None
            for data in results:
                self.received += 1
                yield data

    def forget(self, cts: list[int]) -> None:
        for ct in cts:
            self._refs.pop(ct, None)

    def stats(self) -> dict:
        """Workers and what travelled: the bundle once, ciphertexts each way."""
        return {
            "workers": self.workers,
            "nodes": self._pool.nodes,
            "bundle_bytes": self._pool.bundle_bytes,
            "sent_ciphertexts": self.sent,
            "sent_bytes": self.sent_bytes,
            "received_ciphertexts": self.received,
            "put_ms_per_ciphertext": 1e3 * self.put_seconds / max(1, self.sent),
        }

    def close(self) -> None:
        self._pool.close()


def _cause(exc: BaseException) -> str:
    """The last non-empty line of a (Ray-wrapped) error: the original error's message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
