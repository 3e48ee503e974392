"""``hec serve``: an HTTP inference server (Starlette on uvicorn) that evaluates ciphertexts.

::

    GET  /v1/info   what this server evaluates: artifact hash, key id, shapes, limits
    POST /v1/eval   body: an input ciphertext file; reply: the output ciphertext file

The HTTP process holds no key at all. It checks each request's size (before reading the body),
reading time, and ciphertext header (artifact, key id, layout), then hands the bytes to one of
``workers`` evaluation processes (or, with ``--ray``, actors of a Ray cluster: ``ClusterPool``);
each worker loads the evaluation keys once (``KEYDIR/public``, refused if it holds a secret key)
and evaluates one request at a time. Separate processes give
real parallelism whatever OpenFHE does with the GIL, a hard time limit (a worker past it is
killed and replaced) and isolation: a hostile ciphertext that crashes or exhausts a worker (it
runs under a memory limit) costs that request, not the server. Logs hold sizes, sample counts,
status and times; never ciphertext bytes.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path
from typing import Any

from hec.backend_openfhe.artifact import Artifact
from hec.errors import CiphertextError, HecError, KeysError, ServerError
from hec.runtime import ciphertext_file, keys

__all__ = ["ClusterPool", "ServeConfig", "WorkerPool", "make_app", "reply", "serve"]

log = logging.getLogger("hec.serve")


@dataclass(frozen=True)
class ServeConfig:
    """Limits of one server.

    Args:
        workers: evaluation processes (each holds the evaluation keys in memory).
        timeout_s: longest a request may wait for a worker plus evaluate.
        read_timeout_s: longest a client may take to send its request body.
        max_queue: requests that may wait for a worker; beyond that the server answers 503.
        memory_limit: address-space limit of each worker in bytes (0: none).
    """

    workers: int = 1
    timeout_s: float = 300.0
    read_timeout_s: float = 30.0
    max_queue: int = 8
    memory_limit: int = 0


class EvaluationFailed(Exception):
    """A request the worker could not evaluate; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- worker processes -----------------------------------------------------------------------


def _worker_main(conn, artifact_path: str, eval_keys: str, memory_limit: int) -> None:
    """One evaluation process: load keys once, then evaluate one request per message."""
    import resource
    import traceback

    if memory_limit:
        # A ciphertext whose framing claims huge vectors then fails to allocate (MemoryError)
        # instead of pushing the machine into swap.
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    try:
        from hec.backend_openfhe.artifact import load_artifact
        from hec.runtime.server import Server, answer

        server = Server.from_eval_keys(load_artifact(artifact_path), eval_keys)
    except HecError as exc:
        conn.send(("error", str(exc)))
        return
    except Exception as exc:  # a bug: say so, keep the traceback in the server log
        traceback.print_exc()
        conn.send(("error", f"evaluation worker failed to start ({type(exc).__name__})"))
        return
    conn.send(("ready", ""))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send(answer(server, data))


def reply(status: str, payload: bytes | str) -> bytes:
    """The result bytes of a ``server.answer``, or ``EvaluationFailed`` (400 when rejected,
    500 when failed)."""
    if status == "ok":
        assert isinstance(payload, bytes)
        return payload
    raise EvaluationFailed(400 if status == "rejected" else 500, str(payload))


class _Worker:
    def __init__(self, ctx, artifact_path: Path, eval_keys: Path, memory_limit: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main,
            args=(child, str(artifact_path), str(eval_keys), memory_limit),
            daemon=True,
        )
        self.process.start()
        child.close()

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            self.kill()
            raise KeysError("evaluation worker did not load the keys in time")
        try:
            status, message = self.conn.recv()
        except (EOFError, OSError):
            raise KeysError("evaluation worker died while loading the keys") from None
        if status != "ready":
            self.kill()
            raise KeysError(message)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class WorkerPool:
    """``workers`` evaluation processes; ``evaluate`` blocks until one is free and done."""

    def __init__(self, artifact: Artifact, eval_keys: Path, config: ServeConfig) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._artifact_path = artifact.path
        self._eval_keys = eval_keys
        self._config = config
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self._artifact_path, self._eval_keys, self._config.memory_limit)

    def start(self, load_timeout: float = 600.0) -> None:
        """Start every worker and wait until each has loaded the keys (or raise why not)."""
        started = [self._spawn() for _ in range(self._config.workers)]
        try:
            for w in started:
                w.wait_ready(load_timeout)
        except HecError:
            for w in started:
                w.kill()
            raise
        for w in started:
            self._all.add(w)
            self._idle.put(w)

    def _replace(self, dead: _Worker) -> None:
        """Kill ``dead`` and start a replacement in the background (it loads keys again)."""
        dead.kill()
        with self._lock:
            self._all.discard(dead)

        def respawn() -> None:
            if self._closed:
                return
            w = self._spawn()
            try:
                w.wait_ready(600.0)
            except HecError as exc:
                log.error("replacement worker failed: %s", exc)
                return
            with self._lock:
                self._all.add(w)
            self._idle.put(w)

        threading.Thread(target=respawn, daemon=True).start()

    def evaluate(self, data: bytes) -> bytes:
        """Evaluate one request's bytes in a worker, within the configured time limit.

        Raises:
            EvaluationFailed: rejected ciphertext (400), busy (503), time limit (504),
                worker failure (500).
        """
        deadline = time.monotonic() + self._config.timeout_s
        worker: _Worker | None
        try:
            worker = self._idle.get(timeout=self._config.timeout_s)
        except queue.Empty:
            raise EvaluationFailed(503, "no evaluation worker became free in time") from None
        try:
            worker.conn.send_bytes(data)
            if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                self._replace(worker)
                worker = None
                raise EvaluationFailed(504, "evaluation exceeded the server's time limit")
            status, payload = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            if worker is not None:
                self._replace(worker)
                worker = None
            raise EvaluationFailed(500, "the evaluation process died on this request") from None
        finally:
            if worker is not None:
                self._idle.put(worker)
        return reply(status, payload)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
        for w in workers:
            w.kill()


class ClusterPool:
    """``WorkerPool``'s interface over the workers of a Ray cluster (``hec serve --ray``):
    each holds the evaluation keys (sent once, from ``eval_keys``, which must hold no secret
    key) and evaluates with ``server.answer``; ``workers`` 0 starts one per core of the cluster."""

    def __init__(
        self, artifact: Artifact, eval_keys: Path, config: ServeConfig, address: str
    ) -> None:
        self._artifact, self._eval_keys = artifact, eval_keys
        self._config, self._address = config, address
        self.workers = config.workers

    def start(self) -> None:
        from hec.runtime.cluster import RayPool, bundle

        what = bundle(self._artifact, self._eval_keys)
        self._pool = RayPool(self._address, what, self._config.workers or None)
        self.workers = self._pool.workers

    def evaluate(self, data: bytes) -> bytes:
        """As ``WorkerPool.evaluate`` (a worker the cluster lost is restarted by Ray, which
        runs the request again)."""
        try:
            status, payload = self._pool.evaluate(data, timeout=self._config.timeout_s)
        except TimeoutError:
            raise EvaluationFailed(504, "evaluation exceeded the server's time limit") from None
        return reply(status, payload)

    def close(self) -> None:
        if hasattr(self, "_pool"):
            self._pool.close()


# -- HTTP ---------------------------------------------------------------------------------------


def server_info(artifact: Artifact, key_id: str, config: ServeConfig) -> dict[str, Any]:
    return {
        "format": "hec-server",
        "artifact_hash": artifact.content_hash,
        "key_id": key_id,
        "input_shape": list(artifact.input_shape),
        "output_shape": list(artifact.output_shape),
        "samples_per_ciphertext": artifact.params.blocks,
        "max_request_bytes": ciphertext_file.max_bytes(artifact),
        "timeout_s": config.timeout_s,
        "workers": config.workers,
    }


def make_app(artifact: Artifact, key_id: str, pool: WorkerPool | ClusterPool, config: ServeConfig):
    """The Starlette application: ``/v1/info`` and ``/v1/eval`` in front of ``pool``."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    info = server_info(artifact, key_id, config)
    limit = info["max_request_bytes"]
    pending = {"n": 0}
    most = config.workers + config.max_queue
    ids = count(1)

    def refuse(status: int, message: str, rid: int, size: int, start: float) -> JSONResponse:
        elapsed = time.monotonic() - start
        log.info("request %d: %d bytes -> %d in %.2f s", rid, size, status, elapsed)
        return JSONResponse({"error": message}, status_code=status)

    async def get_info(request: Request) -> JSONResponse:
        return JSONResponse(info)

    async def post_eval(request: Request) -> Response:
        rid, start = next(ids), time.monotonic()
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return refuse(413, f"request larger than {limit} bytes", rid, 0, start)
        if pending["n"] >= most:
            return refuse(503, "server busy; retry later", rid, 0, start)
        pending["n"] += 1
        try:
            body = bytearray()
            try:
                with anyio.fail_after(config.read_timeout_s):
                    async for chunk in request.stream():
                        body += chunk
                        if len(body) > limit:
                            return refuse(413, f"request larger than {limit} bytes", rid, 0, start)
            except TimeoutError:
                return refuse(408, "request body not received in time", rid, len(body), start)
            data = bytes(body)
            try:  # the cheap checks here; the worker repeats them and checks what OpenFHE reads
                header, _ = ciphertext_file.unpack(data, "request")
                samples = ciphertext_file.check_header(header, artifact, key_id, "input", "request")
            except CiphertextError as exc:
                return refuse(400, str(exc), rid, len(data), start)
            try:
                result = await anyio.to_thread.run_sync(pool.evaluate, data)
            except EvaluationFailed as exc:
                return refuse(exc.status, str(exc), rid, len(data), start)
            log.info(
                "request %d: %d bytes, %d sample(s) -> 200, %d bytes in %.2f s",
                rid,
                len(data),
                samples,
                len(result),
                time.monotonic() - start,
            )
            return Response(result, media_type="application/octet-stream")
        finally:
            pending["n"] -= 1

    return Starlette(
        routes=[
            Route("/v1/info", get_info, methods=["GET"]),
            Route("/v1/eval", post_eval, methods=["POST"]),
        ]
    )


def serve(
    artifact: Artifact,
    eval_keys: Path,
    host: str,
    port: int,
    config: ServeConfig,
    on_ready=None,
    ray: str | None = None,
) -> None:
    """Check the keys, start the workers, then serve until interrupted.

    ``on_ready(url, workers)`` is called once the socket is bound and every worker holds the
    keys. With ``ray`` (a Ray cluster's address) the workers are actors of that cluster
    (``ClusterPool``) instead of processes of this machine.
    """
    import socket

    import uvicorn

    keys.refuse_secret_material(eval_keys)
    # The sidecar only (no key is opened here): fail fast, before spawning workers.
    key_id = keys.read_key_files(eval_keys, "public", artifact, ()).key_id
    pool: WorkerPool | ClusterPool
    if ray is None:
        pool = WorkerPool(artifact, eval_keys, config)
    else:
        pool = ClusterPool(artifact, eval_keys, config, ray)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now: requests arriving while workers load wait in the backlog.
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    try:
        pool.start()
        if isinstance(pool, ClusterPool):  # as many as the cluster has cores, by default
            config = replace(config, workers=pool.workers)
        app = make_app(artifact, key_id, pool, config)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,  # our own one line per request, sizes and status only
                timeout_keep_alive=5,
                limit_concurrency=config.workers + config.max_queue + 16,
            )
        )
        bound = sock.getsockname()
        if on_ready is not None:
            on_ready(f"http://{host}:{bound[1]}", config.workers)
        server.run(sockets=[sock])
    finally:
        pool.close()
        sock.close()
