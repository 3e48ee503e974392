"""Key directories on disk: what the client keeps, what it hands the server, and how both check it.

::

    KEYDIR/secret/keys.json         sidecar (role "secret")
    KEYDIR/secret/secret_key.bin    the secret key: never leaves the client (mode 0600)
    KEYDIR/public/keys.json         sidecar (role "public")
    KEYDIR/public/context.bin       the crypto context (CKKS parameters)
    KEYDIR/public/public_key.bin    for encryption (client side)
    KEYDIR/public/mult_key.bin      relinearization key, if the program multiplies ciphertexts
    KEYDIR/public/rotation_keys.bin exactly the rotation keys the program uses
    KEYDIR/public/rotation_key.K.bin  instead, for a program whose keys load a group at a time
    KEYDIR/public/bootstrap_keys.bin  (``params.key_groups``, ``key_groups``): the key for
                                      amount K, one file each, and the bootstrapping keys

Every ``.bin`` is OpenFHE's own BINARY serialization. The sidecar binds the keys to one
artifact (its content hash) and names them with a *key id* (the SHA-256 of the serialized
public key) and OpenFHE's key tag (which OpenFHE also writes into every ciphertext and eval key
made with them); it also records each file's size and SHA-256, so a truncated, modified or
swapped file is reported before OpenFHE parses it. CKKS decryption with the wrong key returns
plausible-looking garbage, so these checks are the only protection against mixing up keys.

A server is given ``KEYDIR/public`` and refuses anything that holds a secret key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hec._environment import load_openfhe
from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.params import enable_features
from hec.errors import KeysError

__all__ = [
    "KeyFiles",
    "KEYS_FORMAT",
    "KEYS_FORMAT_VERSION",
    "SECRET_KEY_FILE",
    "file_sha256",
    "read_key_files",
    "refuse_secret_material",
    "write_sidecar",
    "load_context",
    "deserialize",
]

KEYS_FORMAT = "hec-keys"
KEYS_FORMAT_VERSION = 1
SIDECAR = "keys.json"
SECRET_KEY_FILE = "secret_key.bin"
CONTEXT_FILE = "context.bin"
PUBLIC_KEY_FILE = "public_key.bin"
MULT_KEY_FILE = "mult_key.bin"
ROTATION_KEYS_FILE = "rotation_keys.bin"
EVAL_KEY_FILES = (MULT_KEY_FILE, ROTATION_KEYS_FILE)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class KeyFiles:
    """A checked key directory: its sidecar says it belongs to the artifact at hand."""

    directory: Path
    role: str  # "public" or "secret"
    key_id: str
    key_tag: str
    files: dict[str, dict[str, Any]]

    def path(self, name: str) -> Path:
        return self.directory / name

    def has(self, name: str) -> bool:
        return name in self.files


def write_sidecar(
    directory: Path, role: str, artifact: Artifact, key_id: str, key_tag: str
) -> None:
    """Record the files of ``directory`` (size, SHA-256) and what they belong to."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != SIDECAR
    }
    params = artifact.params
    sidecar = {
        "format": KEYS_FORMAT,
        "format_version": KEYS_FORMAT_VERSION,
        "role": role,
        "artifact_hash": artifact.content_hash,
        "key_id": key_id,
        "openfhe_key_tag": key_tag,
        "ring_dim": params.ring_dim,
        "depth": params.depth,
        "rotation_keys": len(params.rotation_indices),
        "files": files,
    }
    (directory / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")


def refuse_secret_material(directory: Path) -> None:
    """Raise if ``directory`` holds (or is the parent of) a secret key: the server's guard.

    Checked by name and by sidecar role, before any file in it is opened by OpenFHE.
    """
    directory = Path(directory)
    hint = "give the server KEYDIR/public, which holds the evaluation keys only"
    if (directory / "secret").exists():
        raise KeysError(f"{directory}: holds a secret/ key directory; refusing to start ({hint})")
    if directory.is_dir():
        for p in directory.iterdir():
            if "secret" in p.name.lower() or "private" in p.name.lower():
                raise KeysError(f"{p}: looks like a secret key; refusing to start ({hint})")
    sidecar = _read_sidecar(directory) if (directory / SIDECAR).is_file() else {}
    if sidecar.get("role") == "secret":
        raise KeysError(f"{directory}: is a secret key directory; refusing to start ({hint})")


def read_key_files(
    directory: Path, role: str, artifact: Artifact, needed: tuple[str, ...]
) -> KeyFiles:
    """Check a key directory's sidecar against ``artifact`` and its ``needed`` files' digests.

    Raises:
        KeysError: missing or damaged directory or file, keys for another artifact, wrong role.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise KeysError(
            f"{directory}: no such key directory; run `hec keygen {artifact.path} --keys DIR` "
            f"and use DIR/{role}"
        )
    if not (directory / SIDECAR).is_file():
        raise KeysError(f"{directory}: not a hec key directory (no {SIDECAR}); run hec keygen")
    sidecar = _read_sidecar(directory)
    if sidecar.get("role") != role:
        raise KeysError(
            f"{directory}: holds {sidecar.get('role')} keys, {role} keys are needed here "
            f"(KEYDIR/{role})"
        )
    made_for = str(sidecar.get("artifact_hash", ""))
    if made_for != artifact.content_hash:
        raise KeysError(
            f"{directory}: keys were made for another artifact (hash {made_for[:16]}, this is "
            f"{artifact.key_binding}); run `hec keygen {artifact.path}` again"
        )
    files = sidecar.get("files")
    if not isinstance(files, dict):
        raise KeysError(f"{directory}/{SIDECAR}: damaged (no file list); run hec keygen again")
    for name in needed:
        if name not in files:
            continue  # optional files (no relinearization or rotation keys) are not listed
        path = directory / name
        entry = files[name]
        if not path.is_file():
            raise KeysError(f"{path}: missing; copy the whole key directory")
        if path.stat().st_size != entry.get("bytes"):
            raise KeysError(
                f"{path}: {path.stat().st_size} bytes, {entry.get('bytes')} were written "
                f"(truncated or replaced); copy it again"
            )
        if file_sha256(path) != entry.get("sha256"):
            raise KeysError(f"{path}: modified since hec keygen wrote it (SHA-256 mismatch)")
    return KeyFiles(directory, role, str(sidecar["key_id"]), str(sidecar["openfhe_key_tag"]), files)


def _read_sidecar(directory: Path) -> dict[str, Any]:
    try:
        sidecar = json.loads((directory / SIDECAR).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeysError(f"{directory}/{SIDECAR}: unreadable ({type(exc).__name__})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != KEYS_FORMAT:
        raise KeysError(f"{directory}/{SIDECAR}: not a hec key sidecar")
    if sidecar.get("format_version") != KEYS_FORMAT_VERSION:
        raise KeysError(
            f"{directory}: key format {sidecar.get('format_version')}, this hec reads "
            f"{KEYS_FORMAT_VERSION}; run hec keygen again"
        )
    for field in ("key_id", "openfhe_key_tag", "artifact_hash"):
        if not isinstance(sidecar.get(field), str):
            raise KeysError(f"{directory}/{SIDECAR}: damaged (no {field})")
    return sidecar


def private_directory(path: Path) -> Path:
    """Create ``path`` readable by its owner only (it is about to hold a secret key)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def load_context(public: KeyFiles, artifact: Artifact):
    """The context from ``context.bin``, checked against the artifact's parameters (without
    the bootstrapping precomputation: ``Server`` makes it)."""
    openfhe = load_openfhe()
    cc = deserialize(openfhe.DeserializeCryptoContext, public.path(CONTEXT_FILE))
    params = artifact.params
    got = (cc.GetRingDimension(), cc.GetBatchSize())
    if got != (params.ring_dim, params.batch_size):
        raise KeysError(
            f"{public.directory}: context has ring dimension {got[0]} and {got[1]} slots, "
            f"the artifact needs {params.ring_dim} and {params.batch_size}"
        )
    # The file records which features were on; the program needs these whatever it says (and
    # bootstrapping's precomputation, which the file does not hold).
    enable_features(cc, params, precompute=False)
    return cc


def deserialize(fn, path: Path):
    """Call an OpenFHE ``Deserialize*(path, BINARY) -> (object, ok)``; errors name the file."""
    openfhe = load_openfhe()
    try:
        obj, ok = fn(str(path), openfhe.BINARY)
    except (RuntimeError, ValueError, MemoryError, TypeError) as exc:
        raise KeysError(f"{path}: OpenFHE cannot read it ({type(exc).__name__})") from None
    if not ok:
        raise KeysError(f"{path}: OpenFHE cannot read it")
    return obj
