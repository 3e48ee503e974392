"""The data owner's side: crypto context, keys, encryption into the program's layout, decryption.

Only the client ever holds the secret key. It hands the server the context with the evaluation
keys (relinearization and exactly the rotation keys the program uses), never the secret key.
A client either makes fresh keys (``Client(artifact)``) or loads the ones ``hec keygen`` wrote
(``Client.from_keys``); ``save_keys`` writes them (see ``hec.runtime.keys`` for the layout).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hec._environment import load_openfhe
from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.params import make_context
from hec.errors import CiphertextError, InputError, KeysError, PrecisionError
from hec.runtime import ciphertext_file, key_groups, keys
from hec.runtime.inputs import as_batch
from hec.runtime.key_cache import hold_keys
from hec.runtime.tail import apply_tail

__all__ = ["Client", "Decrypted", "ElementEncryptor"]

_KEY_CHUNK = 8  # rotation keys generated per call, so long key generation shows progress


def _link_or_copy(source: Path, target: str) -> bool:
    """Put ``source`` at ``target``: a hard link where both are on one file system (a grouped
    program's keys are gigabytes), else a copy."""
    Path(target).unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return True


@dataclass(frozen=True)
class Decrypted:
    """A decrypted output and OpenFHE's estimate of its precision (bits after the point).

    ``values`` is one sample's output, or ``[samples, ...]`` when several were asked for: the
    program's output (the logits). ``outputs`` is what the ONNX model returns, by name (the
    artifact's client tail applied to the logits; batch axis first, one row for one sample).
    """

    values: np.ndarray
    precision_bits: float
    outputs: dict[str, Any] = field(default_factory=dict)


class Client:
    """Makes (or loads) the keys for an artifact's program; encrypts inputs, decrypts outputs."""

    def __init__(
        self, artifact: Artifact, progress: Callable[[int, int], None] | None = None
    ) -> None:
        openfhe = load_openfhe()
        self.artifact = artifact
        hold_keys(self)  # OpenFHE keeps its keys in process-wide maps (key_cache)
        params = artifact.params
        self.context = make_context(params, precompute=False)  # only a server bootstraps
        pair = self.context.KeyGen()
        self._secret_key = pair.secretKey
        self.public_key = pair.publicKey
        if params.needs_relinearization:
            self.context.EvalMultKeyGen(self._secret_key)
        # A grouped program's rotation keys go to files one key at a time (key_groups),
        # here until save_keys/export_public links them into a key directory.
        self.key_files: dict[str, Path] = {}
        if params.key_groups:
            self._key_dir = tempfile.TemporaryDirectory(prefix="hec-keys-")
            self.key_files = key_groups.write_keys(
                self.context, self._secret_key, params, Path(self._key_dir.name), progress
            )
        else:
            indices = list(params.rotation_indices)
            for start in range(0, len(indices), _KEY_CHUNK):
                chunk = indices[start : start + _KEY_CHUNK]
                self.context.EvalRotateKeyGen(self._secret_key, chunk)
                if progress is not None:
                    progress(min(start + _KEY_CHUNK, len(indices)), len(indices))
            if params.bootstrap:  # its rotation keys join the rotation keys' file
                self.context.EvalBootstrapKeyGen(self._secret_key, params.batch_size)
        self.key_tag = self.public_key.GetKeyTag()
        self.key_id = hashlib.sha256(openfhe.Serialize(self.public_key, openfhe.BINARY)).hexdigest()

    @classmethod
    def from_keys(cls, artifact: Artifact, keydir: str | os.PathLike, secret: bool) -> Client:
        """Load the keys ``hec keygen`` wrote to ``keydir`` (checked against ``artifact``).

        Args:
            secret: also load the secret key (decryption); encryption needs the public key only.
        """
        openfhe = load_openfhe()
        keydir = Path(keydir)
        public = keys.read_key_files(
            keydir / "public", "public", artifact, (keys.CONTEXT_FILE, keys.PUBLIC_KEY_FILE)
        )
        self = cls.__new__(cls)
        self.artifact = artifact
        hold_keys(self)  # OpenFHE keeps its keys in process-wide maps (key_cache)
        self.context = keys.load_context(public, artifact)
        self.public_key = keys.deserialize(
            openfhe.DeserializePublicKey, public.path(keys.PUBLIC_KEY_FILE)
        )
        self._secret_key = None
        self.key_files = {}
        if secret:
            private = keys.read_key_files(
                keydir / "secret", "secret", artifact, (keys.SECRET_KEY_FILE,)
            )
            if private.key_id != public.key_id:
                raise KeysError(
                    f"{keydir}: secret/ and public/ come from different keygen runs; "
                    f"run hec keygen again"
                )
            self._secret_key = keys.deserialize(
                openfhe.DeserializePrivateKey, private.path(keys.SECRET_KEY_FILE)
            )
        self.key_tag, self.key_id = public.key_tag, public.key_id
        if self.public_key.GetKeyTag() != self.key_tag:
            raise KeysError(f"{keydir}: the public key's OpenFHE tag does not match keys.json")
        return self

    # -- keys on disk -----------------------------------------------------------------------
    def save_keys(self, keydir: str | os.PathLike) -> dict[str, int]:
        """Write ``keydir/secret`` and ``keydir/public``; returns bytes per file (public/...)."""
        openfhe = load_openfhe()
        keydir = Path(keydir)
        sizes = {f"public/{k}": v for k, v in self.export_public(keydir / "public").items()}
        secret_dir = keys.private_directory(keydir / "secret")
        path = secret_dir / keys.SECRET_KEY_FILE
        # Created 0600 before OpenFHE writes into it, so the key is never world-readable.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        if not openfhe.SerializeToFile(str(path), self._require_secret(), openfhe.BINARY):
            raise OSError(f"OpenFHE could not write {path}")
        keys.write_sidecar(secret_dir, "secret", self.artifact, self.key_id, self.key_tag)
        sizes[f"secret/{keys.SECRET_KEY_FILE}"] = path.stat().st_size
        return sizes

    def export_public(self, directory: Path) -> dict[str, int]:
        """Write what a server needs (context, public and evaluation keys); returns bytes per file.

        The secret key is never written here.
        """
        openfhe = load_openfhe()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            keys.CONTEXT_FILE: lambda p: openfhe.SerializeToFile(p, self.context, openfhe.BINARY),
            keys.PUBLIC_KEY_FILE: lambda p: openfhe.SerializeToFile(
                p, self.public_key, openfhe.BINARY
            ),
        }
        # Only this key pair's eval keys: OpenFHE keeps every key pair's in one process-wide
        # map, and an empty tag would serialize all of them.
        if self.artifact.params.needs_relinearization:
            files[keys.MULT_KEY_FILE] = lambda p: self.context.SerializeEvalMultKey(
                p, openfhe.BINARY, self.key_tag
            )
        if self.artifact.params.key_groups:
            if not self.key_files:
                raise KeysError(
                    "these keys were loaded from a key directory; copy its public/ instead"
                )
            for name, path in self.key_files.items():
                files[name] = partial(_link_or_copy, path)
        elif self.artifact.params.rotation_indices:
            files[keys.ROTATION_KEYS_FILE] = lambda p: self.context.SerializeEvalAutomorphismKey(
                p, openfhe.BINARY, self.key_tag
            )
        sizes = {}
        for name, write in files.items():
            path = directory / name
            if not write(str(path)):
                raise OSError(f"OpenFHE could not write {path}")
            sizes[name] = path.stat().st_size
        keys.write_sidecar(directory, "public", self.artifact, self.key_id, self.key_tag)
        return sizes

    # -- encryption -------------------------------------------------------------------------
    def encrypt(self, x: np.ndarray):
        """Encrypt one sample (shape = the model's input shape without batch axis)."""
        return self.encrypt_batch(np.asarray(x)[None])

    def encrypt_batch(self, xs: np.ndarray):
        """Encrypt up to ``params.blocks`` samples ``[n, ...]`` into one ciphertext."""
        params = self.artifact.params
        xs = as_batch(xs, self.artifact.input_shape)
        if len(xs) > params.blocks:
            raise InputError(
                f"{len(xs)} samples do not fit one ciphertext of this program (at most "
                f"{params.blocks}); split the input"
            )
        vec = np.zeros((params.blocks, params.slots))
        vec[: len(xs)] = self.artifact.input_layout.pack(xs)
        pt = self.context.MakeCKKSPackedPlaintext(vec.reshape(-1).tolist())
        return self.context.Encrypt(self.public_key, pt)

    def encrypt_to_bytes(self, xs: np.ndarray) -> bytes:
        """Encrypt one sample or ``[n, ...]`` samples into a ciphertext file's bytes."""
        xs = as_batch(xs, self.artifact.input_shape)
        ct = self.encrypt_batch(xs)
        header = ciphertext_file.make_header(self.artifact, self.key_id, "input", len(xs))
        return ciphertext_file.pack(header, ciphertext_file.serialize(ct))

    # -- decryption -------------------------------------------------------------------------
    def decrypt(self, ct, samples: int | None = None, what: str = "ciphertext") -> Decrypted:
        """Decrypt an output; ``samples=None``: one sample's values, else ``[samples, ...]``."""
        params = self.artifact.params
        try:
            pt = self.context.Decrypt(self._require_secret(), ct)
            pt.SetLength(params.batch_size)
            vec = np.asarray(pt.GetRealPackedValue()).reshape(params.blocks, params.slots)
        except RuntimeError:  # OpenFHE: "the approximation error is too high"
            raise self._decryption_failure(ct, what) from None
        values = self.artifact.output_layout.unpack(vec[: samples or 1])
        outputs = apply_tail(self.artifact, values)  # in the clear, on the client only
        return Decrypted(values[0] if samples is None else values, pt.GetLogPrecision(), outputs)

    def decrypt_bytes(self, data: bytes, what: str = "ciphertext") -> Decrypted:
        """Check and decrypt a ciphertext file's bytes written by the server; ``[n, ...]``."""
        header, payload = ciphertext_file.unpack(data, what)
        samples = ciphertext_file.check_header(header, self.artifact, self.key_id, "output", what)
        ct = self.load_ciphertext(payload, "output", what)
        return self.decrypt(ct, samples, what)

    def load_ciphertext(self, payload: bytes, kind: str, what: str):
        level = ciphertext_file.expected_layout(self.artifact, kind)["level"]
        return ciphertext_file.deserialize(
            payload, self.context, self.key_tag, level, self.artifact.params, what
        )

    # -- batch packing: one ciphertext per tensor element, one sample per slot -------------
    def encrypt_elements(self, x: np.ndarray) -> list:
        """Encrypt up to ``slots`` samples ``[B, *input_shape]`` for a batch-packed program.

        Returns one ciphertext per input element: slot ``i`` of the ciphertext of element
        ``e`` holds element ``e`` of sample ``i``; slots past ``B`` hold zeros.
        """
        source = self.element_encryptor(x)
        return [source[e] for e in range(len(source))]

    def element_encryptor(self, x: np.ndarray) -> ElementEncryptor:
        """``encrypt_elements`` on demand: ``source[e]`` encrypts element ``e`` when asked.

        What a batch evaluator is given in one process, so that each input ciphertext exists
        only from its first reader to its last (``batch_schedule``), not for the whole run.
        """
        return ElementEncryptor(self, x)

    def decrypt_elements(self, cts: list, samples: int) -> Decrypted:
        """Decrypt a batch-packed program's outputs into ``[samples, *output_shape]``.

        ``precision_bits`` is the lowest of OpenFHE's estimates over the ciphertexts.
        """
        columns, precision = [], []
        for e, ct in enumerate(cts):
            try:
                pt = self.context.Decrypt(self._require_secret(), ct)
                pt.SetLength(self.artifact.params.slots)
            except RuntimeError:  # OpenFHE: "the approximation error is too high"
                raise self._decryption_failure(ct, f"output ciphertext {e}") from None
            columns.append(np.asarray(pt.GetRealPackedValue())[:samples])
            precision.append(pt.GetLogPrecision())
        values = np.stack(columns, axis=1).reshape(samples, *self.artifact.output_shape)
        return Decrypted(values, float(min(precision)), apply_tail(self.artifact, values))

    def _decryption_failure(self, ct, what: str) -> CiphertextError:
        """Why OpenFHE refused to decrypt ``ct``: other keys, or a result CKKS cannot hold.

        OpenFHE raises the same "approximation error is too high" in both cases (decrypting
        with the wrong secret key gives noise, an overflowed value gives noise); the key tag
        the ciphertext carries from its encryption tells them apart.
        """
        tag = ct.GetKeyTag()
        if tag != self._require_secret().GetKeyTag():
            return CiphertextError(
                f"{what}: decryption failed: the ciphertext was not made with these keys "
                f"(key tag {tag[:16]}, these keys {self.key_tag[:16]}); decrypt with the keys "
                f"it was encrypted with"
            )
        return PrecisionError(
            f"{what}: precision/overflow failure: the result exceeds what CKKS holds at this "
            f"scale (OpenFHE finds the approximation error too high); likely cause: an input "
            f"outside the calibrated range, where an activation's polynomial blows up "
            f"(or the ciphertext was altered)"
        )

    def _require_secret(self):
        if self._secret_key is None:
            raise KeysError("this client was loaded without its secret key (public keys only)")
        return self._secret_key


class ElementEncryptor:
    """The input ciphertexts of a batch-packed program, each encrypted when first asked for.

    ``source[e]`` encrypts element ``e`` of the samples (one per slot); ``seconds`` is the
    time spent encrypting so far. Entries set (the evaluator sets ``None`` once it holds
    one) are remembered, so an element is never encrypted twice by mistake.
    """

    def __init__(self, client: Client, x: np.ndarray) -> None:
        slots = client.artifact.params.slots
        self._flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if len(self._flat) > slots:
            raise ValueError(f"{len(self._flat)} samples do not fit in {slots} slots")
        self._client = client
        self._column = np.zeros(slots)
        self._set: dict[int, object] = {}
        self.seconds = 0.0

    def __len__(self) -> int:
        return self._flat.shape[1]

    def __getitem__(self, e: int) -> object:
        if e in self._set:
            return self._set[e]
        t = time.perf_counter()
        self._column[: len(self._flat)] = self._flat[:, e]
        cc = self._client.context
        ct = cc.Encrypt(self._client.public_key, cc.MakeCKKSPackedPlaintext(self._column.tolist()))
        self.seconds += time.perf_counter() - t
        return ct

    def __setitem__(self, e: int, value: object) -> None:
        self._set[e] = value
