"""Rotation keys made, written and loaded a group at a time (programs with ``key_groups``).

``group-keys`` cuts a program's rotation keys into groups of consecutive ops. The client makes
one group's keys, writes them to ``rotation_keys.G.bin`` and clears OpenFHE's map before the
next group, so key generation never holds more than one group either; the bootstrapping keys
go to ``bootstrap_keys.bin``. The server's executor asks a ``GroupLoader`` for a group before
the first op that needs it: the map is cleared (the memory is reused by the next group) and
the group's file read. Measured on the reference machine: OpenFHE reads key files at 0.5-0.8
GB/s once they are in the page cache.

OpenFHE clears the rotation keys of every key pair in the process at once
(``ClearEvalAutomorphismKeys`` takes no key tag), so a process that runs a grouped program
should not hold another program's rotation keys at the same time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hec._environment import load_openfhe
from hec.backend_openfhe.params import CKKSParams
from hec.errors import KeysError
from hec.ir.slot_ops import BOOTSTRAP_GROUP

__all__ = ["BOOTSTRAP_KEYS_FILE", "GroupLoader", "group_file", "group_files", "write_groups"]

BOOTSTRAP_KEYS_FILE = "bootstrap_keys.bin"
_CHUNK = 8  # keys generated per call, so long key generation shows progress


def group_file(group: int) -> str:
    """The key file of ``group`` (``BOOTSTRAP_GROUP``: the bootstrapping keys)."""
    return BOOTSTRAP_KEYS_FILE if group == BOOTSTRAP_GROUP else f"rotation_keys.{group}.bin"


def group_files(params: CKKSParams) -> dict[int, str]:
    """Group -> file name for a grouped program's keys (empty for a program without groups)."""
    if not params.key_groups:
        return {}
    files = {g: group_file(g) for g in range(len(params.key_groups))}
    if params.bootstrap:
        files[BOOTSTRAP_GROUP] = BOOTSTRAP_KEYS_FILE
    return files


def write_groups(
    cc,
    secret_key,
    params: CKKSParams,
    directory: Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, Path]:
    """Make each group's keys, write them to ``directory`` and clear them from memory."""
    openfhe = load_openfhe()
    tag = secret_key.GetKeyTag()
    total, done = sum(len(g) for g in params.key_groups), 0
    paths = {}
    for group, name in group_files(params).items():
        if group == BOOTSTRAP_GROUP:
            cc.EvalBootstrapKeyGen(secret_key, params.batch_size)
        else:
            indices = list(params.key_groups[group])
            for start in range(0, len(indices), _CHUNK):
                cc.EvalRotateKeyGen(secret_key, indices[start : start + _CHUNK])
                done += len(indices[start : start + _CHUNK])
                if progress is not None:
                    progress(done, total)
        path = directory / name
        if not cc.SerializeEvalAutomorphismKey(str(path), openfhe.BINARY, tag):
            raise OSError(f"OpenFHE could not write {path}")
        cc.ClearEvalAutomorphismKeys()
        paths[group] = path
    return paths


class GroupLoader:
    """Loads one key group into ``cc`` at a time (the executor's ``load_keys``); ``seconds``
    accumulates the time spent reading keys, ``loads`` counts the loads."""

    def __init__(self, cc, paths: dict[int, Path]) -> None:
        self.cc = cc
        self.paths = paths
        self.seconds = 0.0
        self.loads = 0

    def __call__(self, group: int) -> None:
        openfhe = load_openfhe()
        path = self.paths.get(group)
        if path is None:
            raise KeysError(f"no key file for key group {group}; run hec keygen again")
        t = time.perf_counter()
        self.cc.ClearEvalAutomorphismKeys()
        try:
            ok = self.cc.DeserializeEvalAutomorphismKey(str(path), openfhe.BINARY)
        except (RuntimeError, ValueError, MemoryError, TypeError) as exc:
            raise KeysError(f"{path}: OpenFHE cannot read it ({type(exc).__name__})") from None
        if not ok:
            raise KeysError(f"{path}: OpenFHE cannot read it")
        self.seconds += time.perf_counter() - t
        self.loads += 1
