"""Memory, disk and time a program's keys and evaluation need, estimated before any key exists.

Key generation at large rings takes minutes and gigabytes, and a machine that runs out half way
kills the process with nothing to show; so the CLI estimates first and warns (or refuses, with
an override) when the estimate exceeds the machine.

Sizes follow OpenFHE's hybrid key switching. With ``L + 1 = depth + 1`` primes of ``Q``,
``dnum`` digits (OpenFHE's default: 3 above depth 3, 2 at depths 1-3) and ``K`` 60-bit primes
of ``P`` (enough bits to cover the largest digit), one relinearization or rotation key holds
``2·dnum`` polynomials over ``L + 1 + K`` primes, ``ring_dim`` 64-bit words each; a fresh
ciphertext holds 2 polynomials over ``L + 1`` primes. ``tests/runtime/test_resources.py``
compares these with the files OpenFHE writes. Times are scaled from operation costs measured
on the 2-core reference machine (``ENVIRONMENT.md``) and are meant as orders of magnitude.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.execute import plaintext_cache_budget
from hec.backend_openfhe.params import (
    CKKSParams,
    bootstrap_key_count,
    bootstrap_precompute_bytes,
    key_switch_digits,
    key_switch_key_bytes,
)
from hec.backend_openfhe.report_schema import Totals
from hec.errors import ResourceError
from hec.ir import CipherType, Graph
from hec.ir.slot_ops import BOOTSTRAP_GROUP

__all__ = [
    "Estimate",
    "estimate",
    "estimate_program",
    "machine_memory",
    "check_keygen",
    "check_server",
    "check_in_process",
]

_PYTHON_BASELINE = 300 << 20  # interpreter, numpy, onnx and the OpenFHE library themselves
# Seconds per unit of key-switching work (digits x primes x ring_dim x log2 ring_dim), fitted on
# the reference machine at ring 2^14 / depth 5, where that is 3 x 8 x 2^14 x 14 (rotation key
# 50 ms, rotation 21 ms, ct x pt 0.6 ms over 6 primes; one thread).
_REFERENCE_UNIT = 3 * 8 * 16384 * 14
_KEYGEN_S = 50e-3 / _REFERENCE_UNIT
_ROTATE_S = 21e-3 / _REFERENCE_UNIT
_PTMUL_S = 0.6e-3 / (6 * 16384)
_LONG_S = 600.0  # key generation beyond this gets a warning (it is not refused)
_KEY_READ_BYTES_S = 0.6e9  # OpenFHE reading key files from the page cache (0.5-0.8 GB/s)


@dataclass(frozen=True)
class Estimate:
    """Estimated sizes (bytes) and times (seconds) for one artifact's keys and evaluation."""

    key_bytes: int  # one rotation (or relinearization) key
    eval_key_bytes: int  # every evaluation key the program needs
    public_key_bytes: int
    ciphertext_bytes: int  # a fresh (level 0) ciphertext
    keygen_memory: int  # client process during key generation and saving
    server_memory: int  # one evaluating process: keys, encoded constants, live ciphertexts
    keygen_seconds: float
    eval_seconds: float
    bootstrap_key_bytes: int = 0  # the part of eval_key_bytes bootstrapping adds
    plaintext_bytes: int = 0  # encoded constants the server keeps (the executor's cache)
    live_bytes: int = 0  # ciphertexts alive at once, and one hoisted decomposition
    # A program with key groups: how many, the largest one, and what reading them costs
    key_groups: int = 0
    largest_group_bytes: int = 0
    key_load_bytes: int = 0  # read from key files in one evaluation
    bootstrap_setup_bytes: int = 0  # OpenFHE's bootstrapping precomputation (server only)
    constant_bytes: int = 0  # the program's constants (sparse rows)

    def breakdown(self, rotation_keys: int) -> str:
        """Where ``server_memory`` goes, e.g. ``rotation keys 3.3 GB, bootstrapping keys
        12.0 GB, plaintexts 2.1 GB, ciphertexts 3.0 GB, ...`` (``rotation_keys``: how many
        ``eval_key_bytes`` holds); a grouped program's keys are those of its largest group or
        the bootstrapping keys, whichever is larger (one is loaded at a time)."""
        relin = self.eval_key_bytes - rotation_keys * self.key_bytes - self.bootstrap_key_bytes
        if self.key_groups:
            boot = self.bootstrap_key_bytes
            which = f"the largest of {self.key_groups} rotation key groups" + (
                f" or the bootstrapping keys, {_fmt(boot)}" if boot else ""
            )
            keys = {f"keys loaded at once ({which})": max(self.largest_group_bytes, boot)}
        else:
            keys = {
                "rotation keys": rotation_keys * self.key_bytes,
                "bootstrapping keys": self.bootstrap_key_bytes,
            }
        parts = {
            **keys,
            "bootstrapping precomputation": self.bootstrap_setup_bytes,
            "plaintexts": self.plaintext_bytes,
            "the program's constants": self.constant_bytes,
            "ciphertexts": self.live_bytes,
            "relinearization key": relin,
            "the interpreter and OpenFHE": _PYTHON_BASELINE,
        }
        return ", ".join(f"{k} {_fmt(v)}" for k, v in parts.items() if v)

    def describe_keygen(self, n_keys: int) -> str:
        return (
            f"{n_keys} evaluation keys of {_fmt(self.key_bytes)} = "
            f"{_fmt(self.eval_key_bytes)}, ~{_fmt(self.keygen_memory)} memory, "
            f"~{_fmt_s(self.keygen_seconds)}"
        )


def estimate(artifact: Artifact) -> Estimate:
    """Estimate what ``artifact`` needs (from its parameters and report; no OpenFHE call)."""
    return estimate_program(artifact.params, artifact.program, artifact.report.totals)


def estimate_program(p: CKKSParams, program: Graph, totals: Totals) -> Estimate:
    """What a program with parameters ``p`` and report totals ``totals`` needs (before it is
    written: ``hec.api.compile`` plans a slot program's memory with it)."""
    towers = p.depth + 1
    dnum, aux = key_switch_digits(p)
    word = 8
    key = key_switch_key_bytes(p)
    relin = int(p.needs_relinearization) * key
    boot = bootstrap_key_count(p) * key
    if p.key_groups:  # one group (or the bootstrapping keys) at a time; all on disk
        largest = max(len(g) for g in p.key_groups) * key
        resident = relin + max(largest, boot)
        eval_keys = relin + len(set().union(*p.key_groups)) * key + boot  # each key once
    else:
        largest = 0
        eval_keys = resident = (len(p.rotation_indices) + int(p.needs_relinearization)) * key + boot
    ct = 2 * p.ring_dim * towers * word
    public = ct
    n_plain = totals.plaintext_multiplies + totals.plaintext_additions
    plain = min(plaintext_cache_budget(program), n_plain * p.ring_dim * towers * word)
    # Live ciphertexts at once (at their levels), plus two hoisted decompositions (each at
    # most as large as a key); both are bounded by the program's liveness.
    live = _max_live_bytes(program, p) + 2 * key
    keygen_memory = _PYTHON_BASELINE + resident + public + ct + key
    setup = bootstrap_precompute_bytes(p)
    consts = _constant_bytes(program)
    server_memory = _PYTHON_BASELINE + resident + plain + live + setup + consts
    unit = (towers + aux) * dnum * p.ring_dim * math.log2(p.ring_dim)
    rotations = totals.rotations
    ct_muls = totals.ciphertext_multiplies + 4 * totals.polynomials
    eval_s = (rotations + ct_muls) * _ROTATE_S * unit + n_plain * _PTMUL_S * towers * p.ring_dim
    loaded = _key_load_bytes(p, program, key, boot)
    eval_s += loaded / _KEY_READ_BYTES_S
    n_keys = eval_keys // key
    return Estimate(
        key_bytes=key,
        eval_key_bytes=eval_keys,
        public_key_bytes=public,
        ciphertext_bytes=ct,
        keygen_memory=keygen_memory,
        server_memory=server_memory,
        keygen_seconds=n_keys * _KEYGEN_S * unit,
        eval_seconds=eval_s,
        bootstrap_key_bytes=boot,
        plaintext_bytes=plain,
        live_bytes=live,
        key_groups=len(p.key_groups),
        largest_group_bytes=largest,
        key_load_bytes=loaded,
        bootstrap_setup_bytes=setup,
        constant_bytes=consts,
    )


def _constant_bytes(program: Graph) -> int:
    """The program's constants as a loaded artifact holds them: vectors as their sparse rows
    (``constants_file.VectorStore``: a value and an index a non-zero), the rest dense."""
    total = 0
    for op in program.ops:
        for a in op.consts.values():
            a = np.asarray(a)
            vector = a.ndim == 1 and a.dtype.kind == "f"
            total += 12 * int(np.count_nonzero(a)) if vector else a.nbytes
    return total


def _key_load_bytes(p: CKKSParams, program: Graph, key: int, boot: int) -> int:
    """Bytes a grouped program reads from its key files in one evaluation: a group each time
    an op needs another group than the one loaded (``OpenFHEExecutor``)."""
    if not p.key_groups:
        return 0
    loaded, total = None, 0
    for op in program.ops:
        group = op.attrs.get("key_group")
        if group is not None and group != loaded:
            total += boot if group == BOOTSTRAP_GROUP else len(p.key_groups[group]) * key
            loaded = group
    return total


def _max_live_bytes(graph: Graph, p: CKKSParams) -> int:
    """The most ciphertext bytes alive at once when ops run in order and die after their last
    use; a ciphertext at level ``l`` holds 2 polynomials over ``depth + 1 - l`` primes."""
    last = {}
    for i, op in enumerate(graph.ops):
        for v in op.inputs:
            last[id(v)] = i

    def size(v) -> int:
        level = v.type.level if isinstance(v.type, CipherType) else 0
        return 2 * p.ring_dim * max(p.depth + 1 - level, 1) * 8

    alive = {id(v): size(v) for v in graph.inputs}
    peak = now = sum(alive.values())
    for i, op in enumerate(graph.ops):
        if isinstance(op.result.type, CipherType):
            alive[id(op.result)] = size(op.result)
            now += alive[id(op.result)]
        peak = max(peak, now)
        for v in op.inputs:
            if last.get(id(v)) == i and id(v) in alive:
                now -= alive.pop(id(v))
    return peak


def machine_memory() -> tuple[int, int]:
    """(total, available) bytes of memory on this machine (``/proc/meminfo`` where it exists)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * page
    return total, available


def _check_memory(need: int, what: str, ignore: bool, flag: str) -> None:
    total, available = machine_memory()
    if need > total:
        msg = (
            f"{what} needs ~{_fmt(need)} of memory (estimated), more than this machine's "
            f"{_fmt(total)}"
        )
        if not ignore:
            raise ResourceError(f"{msg}; use a larger machine, or pass {flag} to try anyway")
        _warn(msg)
    elif need > available:
        _warn(
            f"{what} needs ~{_fmt(need)} of memory (estimated) and only {_fmt(available)} is "
            f"free; it may swap or be killed"
        )


def check_keygen(artifact: Artifact, keydir: Path, ignore: bool = False) -> Estimate:
    """Print the key generation estimate; refuse (unless ``ignore``) what cannot fit."""
    est = estimate(artifact)
    n_keys = len(artifact.params.rotation_indices) + int(artifact.params.needs_relinearization)
    flag = "--ignore-resource-check"
    _check_memory(est.keygen_memory, "key generation", ignore, flag)
    existing = (
        keydir if keydir.exists() else next((p for p in keydir.parents if p.exists()), Path("."))
    )
    free = shutil.disk_usage(existing).free
    files = est.eval_key_bytes + 2 * est.public_key_bytes
    if files > free:
        msg = f"the keys need ~{_fmt(files)} on disk and {existing} has {_fmt(free)} free"
        if not ignore:
            raise ResourceError(f"{msg}; free some space, or pass {flag} to try anyway")
        _warn(msg)
    # After the checks, so that a refusal stays the one line the CLI prints.
    _info(f"keygen: {est.describe_keygen(n_keys)} (estimated)")
    if est.keygen_seconds > _LONG_S:
        _warn(
            f"key generation will take ~{_fmt_s(est.keygen_seconds)} on a machine like the "
            f"reference one; it shows progress"
        )
    return est


def check_server(artifact: Artifact, workers: int, ignore: bool = False) -> Estimate:
    """Check that ``workers`` evaluating processes fit in memory (warn or refuse)."""
    est = estimate(artifact)
    what = "evaluation" if workers == 1 else f"{workers} evaluation workers"
    _check_memory(est.server_memory * workers, what, ignore, "--ignore-resource-check")
    return est


def check_in_process(artifact: Artifact, ignore: bool = False) -> Estimate:
    """``hec run``: keys, client and server in one process."""
    est = estimate(artifact)
    _check_memory(
        est.server_memory + est.public_key_bytes * 2,
        "encrypted run",
        ignore,
        "--ignore-resource-check",
    )
    return est


def _fmt(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def _info(msg: str) -> None:
    print(msg, file=sys.stderr)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)
