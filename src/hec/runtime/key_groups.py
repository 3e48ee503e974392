"""Rotation keys made, written and loaded a group at a time (programs with ``key_groups``).

``group-keys`` cuts a program's rotation keys into groups of consecutive ops. The client makes
each key once, writes it to ``rotation_key.K.bin`` (K: the rotation amount) and clears OpenFHE's
map before the next, so key generation holds one key at a time; the bootstrapping keys go to
``bootstrap_keys.bin``. The server's executor asks a ``GroupLoader`` for a group before the
first op that needs it: the map is cleared (the memory is reused by the next group) and the
group's files read (deserializing adds to OpenFHE's map). A key several groups use is made
and stored once. Measured on the reference machine: OpenFHE reads key files at 0.5-0.8
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

__all__ = ["BOOTSTRAP_KEYS_FILE", "GroupLoader", "key_file", "grouped_key_files", "write_keys"]

BOOTSTRAP_KEYS_FILE = "bootstrap_keys.bin"


def key_file(amount: int) -> str:
    """The file of the rotation key for ``amount`` slots."""
    return f"rotation_key.{amount}.bin"


def grouped_key_files(params: CKKSParams) -> list[str]:
    """The key files of a grouped program (empty for a program without groups): one per
    rotation amount, however many groups use it, and the bootstrapping keys."""
    if not params.key_groups:
        return []
    amounts = sorted(set().union(*params.key_groups))
    return [key_file(k) for k in amounts] + ([BOOTSTRAP_KEYS_FILE] if params.bootstrap else [])


def write_keys(
    cc,
    secret_key,
    params: CKKSParams,
    directory: Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Make each key of a grouped program, write it to its file in ``directory`` and clear it
    from memory (OpenFHE reads a group back from several files: loading adds to its map)."""
    openfhe = load_openfhe()
    tag = secret_key.GetKeyTag()
    amounts = sorted(set().union(*params.key_groups))
    paths = {}

    def write(name: str) -> None:
        path = directory / name
        if not cc.SerializeEvalAutomorphismKey(str(path), openfhe.BINARY, tag):
            raise OSError(f"OpenFHE could not write {path}")
        cc.ClearEvalAutomorphismKeys()
        paths[name] = path

    for done, amount in enumerate(amounts, 1):
        cc.EvalRotateKeyGen(secret_key, [amount])
        write(key_file(amount))
        if progress is not None:
            progress(done, len(amounts))
    if params.bootstrap:
        cc.EvalBootstrapKeyGen(secret_key, params.batch_size)
        write(BOOTSTRAP_KEYS_FILE)
    return paths


class GroupLoader:
    """Loads one key group into ``cc`` at a time (the executor's ``load_keys``): clears
    OpenFHE's rotation keys, then reads the group's files. ``seconds`` accumulates the time
    spent reading keys, ``loads`` counts the groups loaded."""

    def __init__(self, cc, params: CKKSParams, paths: dict[str, Path]) -> None:
        self.cc = cc
        self.params = params
        self.paths = paths
        self.seconds = 0.0
        self.loads = 0

    def __call__(self, group: int) -> None:
        if group == BOOTSTRAP_GROUP:
            names = [BOOTSTRAP_KEYS_FILE]
        else:
            names = [key_file(k) for k in self.params.key_groups[group]]
        t = time.perf_counter()
        self.cc.ClearEvalAutomorphismKeys()
        for name in names:
            self._read(name)
        self.seconds += time.perf_counter() - t
        self.loads += 1

    def _read(self, name: str) -> None:
        openfhe = load_openfhe()
        path = self.paths.get(name)
        if path is None:
            raise KeysError(f"{name}: no such key file; run hec keygen again")
        try:
            ok = self.cc.DeserializeEvalAutomorphismKey(str(path), openfhe.BINARY)
        except (RuntimeError, ValueError, MemoryError, TypeError) as exc:
            raise KeysError(f"{path}: OpenFHE cannot read it ({type(exc).__name__})") from None
        if not ok:
            raise KeysError(f"{path}: OpenFHE cannot read it")
