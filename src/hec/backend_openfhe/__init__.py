"""CKKS on OpenFHE: parameters, the artifact directory, code generation and execution.

Importing this package does not import openfhe; the functions that need it do so lazily.
"""

from hec.backend_openfhe.artifact import Artifact, load_artifact, write_artifact
from hec.backend_openfhe.params import CKKSParams, choose_params, make_context
from hec.backend_openfhe.report import program_report

__all__ = [
    "Artifact",
    "load_artifact",
    "write_artifact",
    "CKKSParams",
    "choose_params",
    "make_context",
    "program_report",
]
