"""A Ray cluster of several nodes on this machine's loopback, started with ``ray start`` as on
real machines, for the cluster tests and ``benchmarks/ray_throughput.py``.

Each node gets its own ports (free ones, so that another cluster on the machine is no
obstacle) and the cluster its own temporary directory. Each ``ray start`` runs in a session
of its own, which the daemons it leaves behind and the workers they start keep (a worker gets
a process group of its own, not a session): ``stop`` ends the processes of those sessions and
nothing else (``ray stop`` would end every Ray process of the machine).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class LoopbackCluster:
    """``with LoopbackCluster.started(nodes=2) as c: ... c.address ...``: a head and
    ``nodes - 1`` more nodes, ``cpus`` cores each."""

    def __init__(self, nodes: int = 2, cpus: int = 1, timeout: float = 120.0) -> None:
        self.nodes, self.cpus, self.timeout = nodes, cpus, timeout
        # short: Ray's socket paths under it must stay within 107 characters
        self.root = Path(tempfile.mkdtemp(prefix="hecray-", dir="/tmp"))
        self.address = ""
        self._sessions: list[int] = []
        self._auth_mode = os.environ.get("RAY_AUTH_MODE")  # restored by stop
        # the workers' temporary files too (tempfile): everything the cluster writes is here
        (self.root / "tmp").mkdir()
        self.env = {
            **os.environ,
            "RAY_TMPDIR": str(self.root),
            "TMPDIR": str(self.root / "tmp"),
            "OMP_NUM_THREADS": "1",
            # whatever token ~/.ray holds: a private cluster on loopback needs none
            "RAY_AUTH_MODE": "disabled",
        }

    def _start(self, args: list[str]) -> None:
        ports = _free_ports(8)
        # below the ephemeral ports _free_ports gives, so that no other port of the node falls
        # in the range (Ray refuses that); a worker takes a free one of the range
        workers = random.randrange(20000, 32000 - 400)
        args = [
            RAY,
            "start",
            *args,
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus}",
            "--disable-usage-stats",
            f"--node-manager-port={ports[0]}",
            f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}",
            f"--dashboard-agent-grpc-port={ports[3]}",
            f"--metrics-export-port={ports[4]}",
            f"--runtime-env-agent-port={ports[5]}",
            f"--min-worker-port={workers}",
            f"--max-worker-port={workers + 400}",
            "--object-store-memory=400000000",
        ]
        proc = subprocess.Popen(
            args,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its daemons and their workers stay in this session
        )
        self._sessions.append(proc.pid)
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"ray start took over {self.timeout:.0f} s") from None
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{out[-3000:]}")

    def start(self) -> LoopbackCluster:
        """Start the nodes; this process's Ray connections then use no token either (as the
        cluster: ``RAY_AUTH_MODE``, set here until ``stop``)."""
        os.environ["RAY_AUTH_MODE"] = "disabled"
        port = _free_ports(1)[0]
        self._start(
            [
                "--head",
                f"--port={port}",
                f"--temp-dir={self.root}",
                "--include-dashboard=false",
            ]
        )
        self.address = f"127.0.0.1:{port}"
        for _ in range(self.nodes - 1):
            self._start([f"--address={self.address}"])
        return self

    def processes(self) -> list[int]:
        """Process ids of the cluster's processes (daemons and workers)."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    state, _, _, sid = stat.rsplit(")", 1)[1].split()[:4]
                except OSError:
                    continue
                if state != "Z" and int(sid) in self._sessions:  # zombies are gone already
                    out.append(int(entry.name))
        return out

    def stop(self) -> None:
        """End the cluster's processes (its sessions only) and remove its directory."""
        if self._auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = self._auth_mode
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:  # a daemon may start a worker
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)  # as `ray stop --force`
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    def started(cls, nodes: int = 2, cpus: int = 1, attempts: int = 3) -> LoopbackCluster:
        """A started cluster; a start that fails (a port taken meanwhile, a slow machine) is
        stopped and tried again with other ports, ``attempts`` times in all."""
        for attempt in range(attempts):
            cluster = cls(nodes, cpus)
            try:
                return cluster.start()
            except RuntimeError:
                cluster.stop()
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def __enter__(self) -> LoopbackCluster:
        return self if self.address else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
