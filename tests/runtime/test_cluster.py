"""Scale-out on a Ray cluster: a head and one more node on loopback, started with ``ray start``.

Results through the cluster equal the local run's (slot and batch packing), a worker killed
in the middle of a run is recovered by Ray's retries, and no process of the cluster (files,
environment, memory, which holds the object store) ever holds the secret key.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

import hec
from hec.runtime import Client

from conftest import EXAMPLE
from loopback_cluster import LoopbackCluster
from op_cases import CASES

ray = pytest.importorskip("ray")  # the ray extra (make setup installs it; CI must run these)

pytestmark = pytest.mark.slow

NOISE = 1e-3  # CKKS noise between two encrypted runs of one program (logits)


@pytest.fixture(scope="session")
def cluster():
    with LoopbackCluster.started(nodes=2, cpus=1) as c:
        try:
            yield c
        finally:
            ray.shutdown()  # this process leaves the cluster before it stops


@pytest.fixture(scope="module")
def slots(tmp_path_factory) -> tuple[hec.Artifact, np.ndarray, hec.RunResult]:
    """The CryptoNets digits example in slot packing, six test images and their local run."""
    art = hec.compile(EXAMPLE / "model.onnx", tmp_path_factory.mktemp("slots") / "art")
    x = np.load(EXAMPLE / "test.npz")["x"][:6]
    return art, x, hec.run(art, x)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[hec.Artifact, np.ndarray, hec.RunResult]:
    """A small CryptoNets-like network in batch packing (4 samples) and its local run."""
    model, _ = CASES["cryptonets_like"]()
    options = hec.CompileOptions(packing="batch", batch_size=4)
    art = hec.compile(model, tmp_path_factory.mktemp("batch") / "art", options)
    x = np.random.default_rng(5).uniform(-1, 1, size=(4, 1, 8, 8)).astype(np.float32)
    return art, x, hec.run(art, x)


def _same_results(remote: hec.RunResult, local: hec.RunResult) -> None:
    assert not remote.failed and not np.isnan(remote.logits).any()
    assert remote.predictions.tolist() == local.predictions.tolist()
    np.testing.assert_allclose(remote.logits, local.logits, atol=NOISE, rtol=0)


def _evaluators(c: LoopbackCluster) -> list[int]:
    """Process ids of the cluster's hec workers (Ray names an actor's process after it)."""
    out = []
    for pid in c.processes():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::Evaluator"):
                out.append(pid)
        except OSError:
            pass
    return out


def test_slot_packing_on_two_nodes_equals_the_local_run(cluster, slots) -> None:
    art, x, local = slots
    remote = hec.run(art, x, ray=cluster.address)
    _same_results(remote, local)
    stats = remote.stats["cluster"]
    assert stats["workers"] == 2 and stats["nodes"] == 2  # one worker on each node
    assert stats["sent_bytes"] > 0 and stats["received_bytes"] > 0


def test_batch_packing_on_two_nodes_equals_the_local_run(cluster, batch) -> None:
    art, x, local = batch
    remote = hec.run(art, x, ray=cluster.address)
    _same_results(remote, local)
    stats = remote.stats["cluster"]
    assert stats["workers"] == 2 and stats["nodes"] == 2
    assert stats["received_ciphertexts"] > 0  # chains were computed on the cluster


def test_serve_forwards_requests_to_the_cluster(cluster, slots, tmp_path) -> None:
    """``hec serve --ray``'s worker pool: KEYDIR/public goes to the cluster once, each request's
    result decrypts to the local run's logits; a key directory holding the secret key is
    refused before anything is sent."""
    from hec.errors import KeysError
    from hec.runtime.serving import ClusterPool, ServeConfig

    art, x, local = slots
    client = Client(art)
    client.save_keys(tmp_path / "keys")
    with pytest.raises(KeysError, match="secret"):
        ClusterPool(art, tmp_path / "keys", ServeConfig(), cluster.address).start()
    pool = ClusterPool(art, tmp_path / "keys" / "public", ServeConfig(workers=0), cluster.address)
    pool.start()
    try:
        assert pool.workers == 2  # one per core of the cluster
        for i in (0, 1):
            out = pool.evaluate(client.encrypt_to_bytes(x[i : i + 1]))
            values = client.decrypt_bytes(out).values
            np.testing.assert_allclose(values, local.logits[i : i + 1], atol=NOISE, rtol=0)
    finally:
        pool.close()


def test_a_worker_killed_mid_run_is_restarted_and_nothing_is_lost(cluster, slots) -> None:
    art, x, local = slots
    killed: list[int] = []

    def kill_one(stage: str, done: int, total: int) -> None:
        # at the second evaluation, both workers hold requests: one of them dies mid-task
        if stage.startswith("eval 2/") and not killed:
            pid = _evaluators(cluster)[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    remote = hec.run(art, x, progress=kill_one, ray=cluster.address)
    assert killed  # the kill happened during the run
    _same_results(remote, local)


def test_no_secret_key_reaches_the_cluster(cluster, slots, monkeypatch) -> None:
    """Files under the cluster's directory (its workers' temporary files included), each of
    its processes' environment and memory (the object store is shared memory of them) hold
    the public key the workers are sent and never a piece of the secret key."""
    import hec.api
    from hec._environment import load_openfhe

    art, x, _ = slots
    openfhe = load_openfhe()
    clients: list[Client] = []

    class Recorded(Client):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            clients.append(self)

    monkeypatch.setattr(hec.api, "Client", Recorded)
    seen: dict[str, list] = {}

    def inspect(stage: str, done: int, total: int) -> None:
        if not stage.startswith("eval 2/") or seen:
            return
        client = clients[0]
        secret = openfhe.Serialize(client._secret_key, openfhe.BINARY)
        public = openfhe.Serialize(client.public_key, openfhe.BINARY)
        pieces = {"secret": _piece(secret), "public": _piece(public)}
        pids = cluster.processes()
        seen["workers"] = _evaluators(cluster)
        shared: dict[tuple[str, str], set[str]] = {}  # the object store, in several processes
        # the memory of every process that receives objects or tasks: the object stores and
        # control store (raylet, GCS) and the workers (Ray's own Python agents receive neither)
        receiving = [p for p in pids if _receives(p)]
        try:
            found = {p: _memory_holds(p, pieces, shared) for p in receiving}
        except PermissionError:  # a kernel that lets no process read another's (ptrace scope)
            found = None
        seen["secret environ"] = [p for p in pids if _environ_holds(p, pieces["secret"])]
        seen["secret files"] = _files_holding(cluster.root, pieces["secret"])
        if found is not None:
            # the scan finds key material where it is: the public key sent with the keys
            seen["public"] = [p for p in receiving if "public" in found[p]]
            seen["secret memory"] = [p for p in receiving if "secret" in found[p]]

    hec.run(art, x[:3], progress=inspect, ray=cluster.address)
    assert seen["workers"] and seen["secret environ"] == [] and seen["secret files"] == []
    assert not list((cluster.root / "tmp").glob("hec-worker-*"))  # the workers' key copies
    if "public" not in seen:
        pytest.skip("this kernel lets no process read another's memory (files, environ checked)")
    assert set(seen["workers"]) <= set(seen["public"])
    assert seen["secret memory"] == []


def _receives(pid: int) -> bool:
    """Whether process ``pid`` is a raylet, the GCS or a worker (not one of Ray's agents)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return cmd.endswith((b"/raylet", b"/gcs_server")) or (
        cmd.startswith(b"ray::") and b"Agent" not in cmd
    )


def _piece(serialized: bytes) -> bytes:
    """64 bytes from the middle of a serialized key: polynomial coefficients, laid out as in
    memory (64-bit words), found nowhere else."""
    mid = len(serialized) // 2
    return serialized[mid : mid + 64]


def _holds(data: bytes, piece: bytes) -> bool:
    """``piece in data``, fast in mostly-zero memory: the coefficients' high bytes are zeros,
    which make Python's search crawl there, so it looks for the piece's longest run without
    a byte that is 0 modulo 64 first (a search skips over zeros then), and checks around it."""
    runs = re.findall(rb"[^\x00\x40\x80\xc0]+", piece)
    anchor = max(runs, key=len)
    at = piece.index(anchor)
    i = data.find(anchor, at)
    while i >= 0:
        if data[i - at : i - at + len(piece)] == piece:
            return True
        i = data.find(anchor, i + 1)
    return False


def _memory_holds(
    pid: int, pieces: dict[str, bytes], shared: dict[tuple[str, str], set[str]]
) -> set[str]:
    """Which of ``pieces`` the resident memory of process ``pid`` holds (code and libraries
    left out; shared memory is read once: ``shared`` holds what each mapping held)."""
    found: set[str] = set()
    try:
        with open(f"/proc/{pid}/mem", "rb", 0) as mem:
            for fields, rss in _mappings(pid):
                path = fields[5] if len(fields) > 5 else ""
                if rss == 0 or "r" not in fields[1] or path.endswith(".so") or ".so." in path:
                    continue
                region = (path, fields[2])  # file and offset
                if region in shared:
                    found |= shared[region]
                    continue
                start, end = (int(a, 16) for a in fields[0].split("-"))
                try:
                    mem.seek(start)
                    data = mem.read(end - start)
                except (OSError, OverflowError, ValueError):  # [vvar] and the like
                    continue
                here = {name for name, piece in pieces.items() if _holds(data, piece)}
                if path.startswith("/dev/shm/"):
                    shared[region] = here
                found |= here
    except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
        pass
    return found


def _mappings(pid: int) -> list[tuple[list[str], int]]:
    """Each mapping of ``/proc/PID/smaps`` (its header fields) with its resident kB."""
    out: list[tuple[list[str], int]] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            out.append((fields, 0))
        elif fields[0] == "Rss:" and out:
            out[-1] = (out[-1][0], int(fields[1]))
    return out


def _environ_holds(pid: int, piece: bytes) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return piece in env or piece.hex().encode() in env


def _files_holding(root: Path, piece: bytes) -> list[str]:
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                if path.is_file() and piece in path.read_bytes():
                    found.append(str(path))
            except OSError:  # sockets, files removed meanwhile
                pass
    return found
