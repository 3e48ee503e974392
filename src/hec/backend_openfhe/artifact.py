"""The artifact directory: everything the client and the server need to run a program.

::

    OUT/manifest.json         format name and version, hec version, SHA-256 of every other
                              file and the artifact's content hash (which keys bind to)
    OUT/program.json          the scheduled slot program (structure)
    OUT/constants.npz         its plaintext constants (diagonals, biases)
    OUT/params.json           CKKS parameters and the rotation indices
    OUT/report.json           operation counts per layer and in total (see report_schema.py)
    OUT/program.txt           the slot program, human-readable
    OUT/tensor_ir.txt         the tensor graph it was lowered from
    OUT/openfhe_program.py    a generated, standalone Python program making the same calls
    OUT/tail.onnx             optional: the model's last steps after the logits (Softmax,
                              labels, ...), run by the client on the decrypted logits
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hec.backend_openfhe.codegen import generate_program
from hec.backend_openfhe.constants_file import VectorStore, pack_vectors
from hec.backend_openfhe.params import CKKSParams
from hec.backend_openfhe.report_schema import ProgramReport
from hec.errors import ArtifactError
from hec.ir import Graph, Layout
from hec.ir.serialize import graph_from_json, graph_to_json
from hec.ir.types import layout_of

__all__ = [
    "Artifact",
    "write_artifact",
    "load_artifact",
    "content_hash",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "hec-artifact"
# 2: manifest.json holds per-file SHA-256 digests and the content hash.
FORMAT_VERSION = 2
_FILES = ("manifest.json", "program.json", "constants.npz", "params.json", "report.json")
_TAIL = "tail.onnx"


@dataclass
class Artifact:
    """A compiled program, loaded (or just written)."""

    path: Path
    program: Graph
    params: CKKSParams
    io: dict[str, Any]
    report: ProgramReport
    content_hash: str = ""
    tail: bytes | None = None  # tail.onnx: what the client runs after decryption

    @property
    def client_tail(self) -> list[str]:
        """Op types the client applies to the decrypted logits (empty: none)."""
        return list(self.io.get("client_tail", []))

    @property
    def output_kinds(self) -> dict[str, str]:
        """Each model output's kind: ``logits``, ``probability``, ``log_probability`` or
        ``labels``. The program's own output (before the tail) is always the logits."""
        outs = self.io.get("outputs") or [{"name": "output", "kind": "logits"}]
        return {o["name"]: o["kind"] for o in outs}

    @property
    def output_kind(self) -> str:
        """The kind of the model's first output, as ``hec.run``'s ``outputs`` hold it."""
        return next(iter(self.output_kinds.values()))

    @property
    def key_binding(self) -> str:
        """The short form of ``content_hash`` shown in messages (16 hex digits)."""
        return self.content_hash[:16]

    @property
    def input_name(self) -> str:
        return self.io["input_name"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.io["input_shape"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.io["output_shape"])

    @property
    def input_layout(self) -> Layout:
        return layout_of(self.program.inputs[0].type)

    @property
    def output_layout(self) -> Layout:
        layout = layout_of(self.program.outputs[0].type)
        return Layout(self.output_shape, layout.slots, layout.kind, layout.source)


def write_artifact(
    path: Path,
    program: Graph,
    params: CKKSParams,
    io: dict[str, Any],
    report: ProgramReport,
    tensor_ir: Graph | None = None,
    tail: bytes | None = None,
) -> Artifact:
    from hec import __version__

    path.mkdir(parents=True, exist_ok=True)
    structure, arrays = graph_to_json(program)
    structure["io"] = io
    # typed Any: mypy matches a **dict against every keyword of savez (allow_pickle: bool too)
    stored: dict[str, Any] = pack_vectors(arrays)
    np.savez_compressed(path / "constants.npz", **stored)
    (path / "program.json").write_text(json.dumps(structure) + "\n")
    params.save(path / "params.json")
    report.write(path / "report.json")
    (path / "program.txt").write_text(str(program))
    written = ["constants.npz", "program.json", "params.json", "report.json", "program.txt"]
    if tensor_ir is not None:
        (path / "tensor_ir.txt").write_text(str(tensor_ir))
        written.append("tensor_ir.txt")
    (path / "openfhe_program.py").write_text(generate_program(program, params, io))
    written.append("openfhe_program.py")
    if tail is not None:
        (path / _TAIL).write_bytes(tail)
        written.append(_TAIL)
    # Only the files written here are listed and hashed: stale files from an earlier compile
    # into the same directory are not part of this artifact.
    digests = {name: _file_digest(path / name) for name in sorted(written)}
    digest = content_hash(digests)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hec_version": __version__,
        "files": digests,
        "content_hash": digest,
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Artifact(path, program, params, io, report, digest, tail)


def content_hash(digests: dict[str, str]) -> str:
    """SHA-256 over the sorted (file name, file SHA-256) pairs: the artifact's identity.

    Keys and ciphertexts record it, so material made for one artifact is refused by another.
    """
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}\0{digests[name]}\n".encode())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_integrity(path: Path, manifest: dict[str, Any]) -> str:
    """Recompute every listed file's digest; return the content hash or say what changed."""
    digests = manifest.get("files")
    if not isinstance(digests, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in digests.items()
    ):
        raise ArtifactError(f"{path}: corrupted artifact (manifest.json has no file digests)")
    for name, want in sorted(digests.items()):
        file = path / name
        if "/" in name or name.startswith(".") or not file.is_file():
            raise ArtifactError(f"{path}: incomplete artifact (missing {name}); compile it again")
        if _file_digest(file) != want:
            raise ArtifactError(
                f"{path}: corrupted or modified artifact ({name} changed since it was "
                f"compiled: SHA-256 mismatch); compile it again"
            )
    missing = [f for f in _FILES if f != "manifest.json" and f not in digests]
    if missing:
        raise ArtifactError(f"{path}: corrupted artifact (manifest omits {', '.join(missing)})")
    got = content_hash(digests)
    if manifest.get("content_hash") != got:
        raise ArtifactError(
            f"{path}: corrupted or modified artifact (manifest content hash does not match "
            f"its files); compile it again"
        )
    return got


def load_artifact(path: str | os.PathLike) -> Artifact:
    """Read an artifact directory written by ``hec compile``."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(
            f"{path}: no such artifact directory; run `hec compile MODEL.onnx -o {path}` first"
        )
    missing = [f for f in _FILES if not (path / f).is_file()]
    if missing:
        raise ArtifactError(
            f"{path}: incomplete artifact (missing {', '.join(missing)}); compile it again"
        )
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("format") != FORMAT:
            raise ArtifactError(f"{path}: not a hec artifact")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{path}: artifact format {manifest.get('format_version')} but "
                f"this hec reads format {FORMAT_VERSION}; compile it again"
            )
        # Before anything is parsed: a modified file is reported as such, not as whatever
        # parse error it happens to cause.
        digest = _check_integrity(path, manifest)
        structure = json.loads((path / "program.json").read_text())
        with np.load(path / "constants.npz") as stored:
            # rows made dense when read: a ResNet's are gigabytes dense
            program = graph_from_json(structure, VectorStore(stored), lazy=True)
        params = CKKSParams.from_json(json.loads((path / "params.json").read_text()))
        report = ProgramReport.read(path / "report.json")
        tail = (path / _TAIL).read_bytes() if _TAIL in manifest["files"] else None
        program.verify()
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(
            f"{path}: corrupted artifact ({type(exc).__name__}: {exc}); compile it again"
        ) from None
    return Artifact(path, program, params, structure["io"], report, digest, tail)
