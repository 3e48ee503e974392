"""The data owner's side: crypto context, keys, encryption into the program's layout, decryption.

Only the client ever holds the secret key. It hands the server the context with the evaluation
keys (relinearization and exactly the rotation keys the program uses), never the secret key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hec._environment import load_openfhe
from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.params import make_context

__all__ = ["Client", "Decrypted"]

_KEY_CHUNK = 8  # rotation keys generated per call, so long key generation shows progress


@dataclass(frozen=True)
class Decrypted:
    """A decrypted output and OpenFHE's estimate of its precision (bits after the point)."""

    values: np.ndarray
    precision_bits: float


class Client:
    """Makes the keys for an artifact's program and encrypts/decrypts its inputs and outputs."""

    def __init__(
        self, artifact: Artifact, progress: Callable[[int, int], None] | None = None
    ) -> None:
        self.artifact = artifact
        params = artifact.params
        self.context = make_context(params)
        keys = self.context.KeyGen()
        self._secret_key = keys.secretKey
        self.public_key = keys.publicKey
        if params.needs_relinearization:
            self.context.EvalMultKeyGen(self._secret_key)
        indices = list(params.rotation_indices)
        for start in range(0, len(indices), _KEY_CHUNK):
            self.context.EvalRotateKeyGen(self._secret_key, indices[start : start + _KEY_CHUNK])
            if progress is not None:
                progress(min(start + _KEY_CHUNK, len(indices)), len(indices))

    def export_public(self, directory: Path) -> dict[str, int]:
        """Write what a server needs (context, public and evaluation keys); returns bytes per file.

        The secret key is never written here.
        """
        openfhe = load_openfhe()
        directory.mkdir(parents=True, exist_ok=True)
        files = {"context.bin": lambda p: openfhe.SerializeToFile(p, self.context, openfhe.BINARY),
                 "public_key.bin": lambda p: openfhe.SerializeToFile(p, self.public_key,
                                                                     openfhe.BINARY)}
        if self.artifact.params.needs_relinearization:
            files["mult_key.bin"] = lambda p: self.context.SerializeEvalMultKey(p, openfhe.BINARY)
        if self.artifact.params.rotation_indices:
            files["rotation_keys.bin"] = lambda p: self.context.SerializeEvalAutomorphismKey(
                p, openfhe.BINARY)
        sizes = {}
        for name, write in files.items():
            path = directory / name
            if not write(str(path)):
                raise OSError(f"OpenFHE could not write {path}")
            sizes[name] = path.stat().st_size
        return sizes

    def encrypt(self, x: np.ndarray):
        """Encrypt one sample (shape = the model's input shape without batch axis)."""
        vec = self.artifact.input_layout.pack(np.asarray(x, dtype=np.float64)[None])[0]
        pt = self.context.MakeCKKSPackedPlaintext(vec.tolist())
        return self.context.Encrypt(self.public_key, pt)

    def decrypt(self, ct) -> Decrypted:
        pt = self.context.Decrypt(self._secret_key, ct)
        pt.SetLength(self.artifact.params.slots)
        vec = np.asarray(pt.GetRealPackedValue())[None]
        return Decrypted(self.artifact.output_layout.unpack(vec)[0], pt.GetLogPrecision())
