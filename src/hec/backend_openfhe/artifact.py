"""The artifact directory: everything the client and the server need to run a program.

::

    OUT/manifest.json         format name and version, hec version, file list
    OUT/program.json          the scheduled slot program (structure)
    OUT/constants.npz         its plaintext constants (diagonals, biases)
    OUT/params.json           CKKS parameters and the rotation indices
    OUT/report.json           operation counts per layer and in total (see report.py)
    OUT/program.txt           the slot program, human-readable
    OUT/tensor_ir.txt         the tensor graph it was lowered from
    OUT/openfhe_program.py    a generated, standalone Python program making the same calls
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hec.backend_openfhe.params import CKKSParams
from hec.errors import ArtifactError
from hec.ir import Graph, Layout
from hec.ir.serialize import graph_from_json, graph_to_json

__all__ = ["Artifact", "write_artifact", "load_artifact", "FORMAT", "FORMAT_VERSION"]

FORMAT = "hec-artifact"
FORMAT_VERSION = 1
_FILES = ("manifest.json", "program.json", "constants.npz", "params.json", "report.json")


@dataclass
class Artifact:
    """A compiled program, loaded (or just written)."""

    path: Path
    program: Graph
    params: CKKSParams
    io: dict[str, Any]
    report: dict[str, Any]

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
        return self.program.inputs[0].type.layout

    @property
    def output_layout(self) -> Layout:
        layout = self.program.outputs[0].type.layout
        return Layout(self.output_shape, layout.slots, layout.kind)


def write_artifact(
    path: Path,
    program: Graph,
    params: CKKSParams,
    io: dict[str, Any],
    report: dict[str, Any],
    tensor_ir: Graph | None = None,
) -> Artifact:
    from hec import __version__
    from hec.backend_openfhe.codegen import generate_program

    path.mkdir(parents=True, exist_ok=True)
    structure, arrays = graph_to_json(program)
    structure["io"] = io
    np.savez_compressed(path / "constants.npz", **arrays)
    (path / "program.json").write_text(json.dumps(structure) + "\n")
    params.save(path / "params.json")
    (path / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (path / "program.txt").write_text(str(program))
    if tensor_ir is not None:
        (path / "tensor_ir.txt").write_text(str(tensor_ir))
    (path / "openfhe_program.py").write_text(generate_program(program, params, io))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hec_version": __version__,
        "files": sorted(p.name for p in path.iterdir() if p.is_file()),
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Artifact(path, program, params, io, report)


def load_artifact(path: str | Path) -> Artifact:
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
        structure = json.loads((path / "program.json").read_text())
        with np.load(path / "constants.npz") as arrays:
            program = graph_from_json(structure, arrays)
        params = CKKSParams.from_json(json.loads((path / "params.json").read_text()))
        report = json.loads((path / "report.json").read_text())
        program.verify()
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(
            f"{path}: corrupted artifact ({type(exc).__name__}: {exc}); compile it again"
        ) from None
    return Artifact(path, program, params, structure["io"], report)
