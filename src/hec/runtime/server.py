"""The model owner's side: evaluates ciphertexts with the evaluation keys only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hec._environment import load_openfhe
from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.execute import OpenFHEExecutor, ProgressFn
from hec.errors import CiphertextError, KeysError
from hec.runtime import ciphertext_file, key_groups, keys
from hec.runtime.key_cache import hold_keys

__all__ = ["EvalKeys", "Server", "answer", "load_eval_keys"]


class Server:
    """Evaluates an artifact's program. ``context`` holds evaluation keys, no secret key.

    In-process (tests, ``hec run``) the client's context is passed directly; a deployed server
    loads ``KEYDIR/public`` with ``Server.from_eval_keys`` and then also knows which key id and
    OpenFHE key tag its ciphertexts must carry.
    """

    def __init__(
        self,
        artifact: Artifact,
        context,
        key_id: str = "",
        key_tag: str = "",
        public_key=None,
        key_files: dict[str, Path] | None = None,
    ) -> None:
        self.artifact = artifact
        hold_keys(self)  # OpenFHE keeps its keys in process-wide maps (key_cache)
        self.context = context
        if artifact.params.bootstrap:  # the client's and a loaded context lack it
            context.EvalBootstrapPrecompute(artifact.params.batch_size)
        self.key_id, self.key_tag = key_id, key_tag
        # OpenFHE computes 3-10x slower on a deserialized ciphertext (measured: additions 0.5 vs
        # 6-9 ms, the bundled model 2.4 vs 7.2 s), and an op's result inherits that from its
        # first operand; a fresh encryption of zero as first operand gives a fast ciphertext
        # with the same value. The public key (in KEYDIR/public anyway) makes that zero.
        self._fresh_zero = None
        if public_key is not None:
            zeros = context.MakeCKKSPackedPlaintext([0.0] * artifact.params.batch_size)
            self._fresh_zero = context.Encrypt(public_key, zeros)
        # a grouped program (params.key_groups) loads its keys a group at a time from files
        self.key_loader = None
        if artifact.params.key_groups:
            if not key_files:
                raise KeysError(
                    "this program loads its rotation keys a group at a time; give the server "
                    "their files (Server.from_eval_keys, or the client's key_files)"
                )
            self.key_loader = key_groups.GroupLoader(context, artifact.params, key_files)
        self._executor = OpenFHEExecutor(
            context,
            artifact.program,
            artifact.params.depth,
            blocks=artifact.params.blocks,
            load_keys=self.key_loader,
        )

    @classmethod
    def from_eval_keys(cls, artifact: Artifact, eval_keys: str | os.PathLike) -> Server:
        """Load the context and evaluation keys of ``eval_keys`` (``KEYDIR/public``).

        Raises:
            KeysError: see ``load_eval_keys``.
        """
        loaded = load_eval_keys(artifact, eval_keys)
        return cls(
            artifact,
            loaded.context,
            loaded.key_id,
            loaded.key_tag,
            loaded.public_key,
            loaded.key_files,
        )

    def prepare(self) -> int:
        """Encode the program's plaintext constants before the first request (within the
        executor's cache budget); returns how many were encoded."""
        return self._executor.encode_constants()

    def evaluate(self, ct, progress: ProgressFn | None = None, layer_seconds: list | None = None):
        """Evaluate one input ciphertext; ``layer_seconds`` receives the time per layer."""
        return self._executor.run([ct], progress, layer_seconds)[0]

    def load_request(self, data: bytes, what: str = "ciphertext") -> tuple[object, int]:
        """Check an input ciphertext file's bytes and deserialize it; (ciphertext, samples).

        Raises:
            CiphertextError: see ``evaluate_bytes``.
        """
        header, payload = ciphertext_file.unpack(data, what)
        samples = ciphertext_file.check_header(header, self.artifact, self.key_id, "input", what)
        level = ciphertext_file.expected_layout(self.artifact, "input")["level"]
        ct = ciphertext_file.deserialize(
            payload, self.context, self.key_tag, level, self.artifact.params, what
        )
        if self._fresh_zero is not None:
            ct = self.context.EvalAdd(self._fresh_zero, ct)
        return ct, samples

    def evaluate_bytes(
        self, data: bytes, progress: ProgressFn | None = None, what: str = "ciphertext"
    ) -> bytes:
        """Check a ciphertext file's bytes, evaluate, and return the result file's bytes.

        Raises:
            CiphertextError: it was made for another artifact, with other keys or for another
                layout, or is not a readable ciphertext; nothing is evaluated then.
        """
        ct, samples = self.load_request(data, what)
        out = self.evaluate(ct, progress)
        result = ciphertext_file.make_header(self.artifact, self.key_id, "output", samples)
        return ciphertext_file.pack(result, ciphertext_file.serialize(out))


def answer(server: Server, data: bytes) -> tuple[str, bytes | str]:
    """Evaluate one request's bytes with ``server`` (a ``Server``): ``("ok", result bytes)``,
    or ``("rejected", why)`` for a ciphertext refused, ``("failed", why)`` for anything else
    (the worker keeps serving either way; ``serving.reply`` turns it into the HTTP outcome)."""
    import traceback

    try:
        return "ok", server.evaluate_bytes(data, what="request")
    except CiphertextError as exc:
        return "rejected", str(exc)
    except MemoryError:
        return "rejected", "request: not a readable ciphertext (allocation refused)"
    except Exception as exc:  # noqa: BLE001  (a bug or OpenFHE failure: keep serving)
        traceback.print_exc()
        return "failed", f"evaluation failed ({type(exc).__name__})"


@dataclass(frozen=True)
class EvalKeys:
    """A context holding an artifact's evaluation keys, with their public key and names."""

    context: Any
    public_key: Any
    key_id: str
    key_tag: str
    key_files: dict[str, Path] = field(default_factory=dict)  # a grouped program's key files


def load_eval_keys(artifact: Artifact, eval_keys: str | os.PathLike) -> EvalKeys:
    """Load the context and evaluation keys of ``eval_keys`` (``KEYDIR/public``) into this
    process, for a slot or batch program; no secret key is ever opened.

    OpenFHE keeps evaluation keys in process-wide maps keyed by the key tag, so the order
    is: context, then the relinearization and rotation keys into those maps; ciphertexts
    come later, one request at a time.

    Raises:
        KeysError: the directory holds a secret key (checked before anything in it is
            opened), was made for another artifact, or lacks keys the program needs.
    """
    eval_keys = Path(eval_keys)
    keys.refuse_secret_material(eval_keys)
    params = artifact.params
    grouped = key_groups.grouped_key_files(params)
    needed = (keys.CONTEXT_FILE, keys.PUBLIC_KEY_FILE, *keys.EVAL_KEY_FILES, *grouped)
    found = keys.read_key_files(eval_keys, "public", artifact, needed)
    openfhe = load_openfhe()
    cc = keys.load_context(found, artifact)
    # OpenFHE refuses to insert relinearization keys for a tag it already holds; that
    # happens only when this process made or loaded this very key pair (tests, hec run).
    if params.needs_relinearization and not _has_mult_key(cc, found.key_tag):
        _load_eval_keys(cc.DeserializeEvalMultKey, found, keys.MULT_KEY_FILE, openfhe)
    for name in grouped:  # loaded a group at a time while evaluating
        if not found.has(name):
            raise KeysError(f"{eval_keys}: {name} is missing; run hec keygen again")
    if params.rotation_indices and not grouped:
        _load_eval_keys(cc.DeserializeEvalAutomorphismKey, found, keys.ROTATION_KEYS_FILE, openfhe)
        have = len(cc.GetExistingEvalAutomorphismKeyIndices(found.key_tag))
        if have < len(params.rotation_indices):
            raise KeysError(
                f"{eval_keys}: {have} rotation keys for this key pair, the program uses "
                f"{len(params.rotation_indices)}; run hec keygen again"
            )
    public_key = keys.deserialize(openfhe.DeserializePublicKey, found.path(keys.PUBLIC_KEY_FILE))
    if public_key.GetKeyTag() != found.key_tag:
        raise KeysError(f"{eval_keys}: the public key's OpenFHE tag does not match keys.json")
    key_files = {name: found.path(name) for name in grouped}
    return EvalKeys(cc, public_key, found.key_id, found.key_tag, key_files)


def _has_mult_key(cc, key_tag: str) -> bool:
    try:
        return len(cc.GetEvalMultKeyVector(key_tag)) > 0
    except RuntimeError:  # OpenFHE's way of saying "no key for this tag"
        return False


def _load_eval_keys(method, found: keys.KeyFiles, name: str, openfhe) -> None:
    if not found.has(name):
        raise KeysError(f"{found.directory}: {name} is missing; run hec keygen again")
    try:
        ok = method(str(found.path(name)), openfhe.BINARY)
    except (RuntimeError, ValueError, MemoryError, TypeError) as exc:
        raise KeysError(
            f"{found.path(name)}: OpenFHE cannot read it ({type(exc).__name__})"
        ) from None
    if not ok:
        raise KeysError(f"{found.path(name)}: OpenFHE cannot read it")
