"""The IRs of hec: a tensor dialect close to ONNX; slot and batch dialects close to CKKS.

``ir`` imports nothing else from hec but ``hec.errors`` (the parser's ``ParseError``).
Importing it registers every dialect's op kinds.
"""

from hec.ir import batch_ops, linear_ops, norm_ops, slot_ops, tensor_ops  # noqa: F401 (kinds)
from hec.ir.core import Graph, Op, OpDef, Value, VerifyError, op_def, op_kinds, register_op
from hec.ir.interpreter import interpret
from hec.ir.linear_maps import affine_map
from hec.ir.parser import parse_graph
from hec.ir.printer import digest, digest_table, print_graph
from hec.ir.tensor_ops import LINEAR_KINDS, NON_POLYNOMIAL_KINDS, PRUNABLE_KINDS
from hec.ir.types import BatchCipherType, CipherType, Layout, TensorType, Type

__all__ = [
    "Graph",
    "Op",
    "OpDef",
    "Value",
    "VerifyError",
    "op_def",
    "op_kinds",
    "register_op",
    "interpret",
    "affine_map",
    "digest",
    "digest_table",
    "parse_graph",
    "print_graph",
    "LINEAR_KINDS",
    "NON_POLYNOMIAL_KINDS",
    "PRUNABLE_KINDS",
    "BatchCipherType",
    "CipherType",
    "Layout",
    "TensorType",
    "Type",
]
