"""Errors a user can cause. The CLI prints their message on one line and exits non-zero.

Every message names the thing at fault (node, file, pass) and says what to do about it.
Anything that is *not* a ``HecError`` is a bug in hec and keeps its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # hec.ir imports this module
    from hec.ir.core import Graph

__all__ = [
    "HecError",
    "EnvironmentProblem",
    "ModelError",
    "UnsupportedOpError",
    "ShapeError",
    "LayoutError",
    "PassError",
    "ArtifactError",
    "ParseError",
    "InputError",
    "ParameterError",
    "KeysError",
    "CiphertextError",
    "PrecisionError",
    "ResourceError",
    "ServerError",
]


class HecError(Exception):
    """Base class of every error a user can cause; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class EnvironmentProblem(HecError):
    """Wrong interpreter, missing or broken OpenFHE, missing optional extra."""

    exit_code = 3


class ModelError(HecError):
    """The ONNX file cannot be read or is not a valid model."""

    errors: list[ModelError]  # one error for several nodes (the importer's): each node's own


class UnsupportedOpError(ModelError):
    """An ONNX node hec cannot compile (names the node and its op type)."""

    def __init__(self, node: str, op_type: str, hint: str = "") -> None:
        self.node, self.op_type = node, op_type
        msg = f"node '{node}': op {op_type} is not supported"
        super().__init__(f"{msg}; {hint}" if hint else msg)


class ShapeError(ModelError):
    """A shape the compiler cannot handle, or an input of the wrong shape."""


class LayoutError(HecError):
    """A tensor does not fit the slot layout the compiler chose."""


class PassError(HecError):
    """A pass failed; the message names it and the passes that ran before."""

    graph: Graph  # the IR before the failing pass (set by the pass manager)


class ArtifactError(HecError):
    """An artifact directory is missing, incomplete or corrupted."""


class ParseError(HecError):
    """IR text (a dump, a golden file) that ``hec.ir.parser`` cannot read; names the line."""


class InputError(HecError):
    """An input file (``.npy``, ``.npz``) is missing or has the wrong shape."""


class ParameterError(HecError):
    """No CKKS parameter set meets the program's needs at the requested security."""


class KeysError(HecError):
    """A key directory is missing, damaged, made for another artifact, or holds a secret key
    where only evaluation keys may be (the server refuses to start with a secret key)."""


class CiphertextError(HecError):
    """A ciphertext file is damaged, or was made with other keys, for another artifact or for
    another layout; detected before anything is evaluated or decrypted."""


class PrecisionError(CiphertextError):
    """A ciphertext of these keys decrypts to values past what CKKS holds at its scale (OpenFHE:
    "approximation error too high"): a value overflowed, typically because an input lies
    outside the range calibrated for an activation, where its polynomial blows up."""


class ResourceError(HecError):
    """The estimated memory (or disk) for keys and evaluation exceeds what the machine has."""


class ServerError(HecError):
    """The inference server refused a request or could not be reached."""
