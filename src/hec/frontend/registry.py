"""The converters by ONNX op type: the converter modules fill the table, the importer reads it.

The table lives apart from the converters so that converter modules and the importer depend on
it, not on one another (which made import cycles); the importer imports every converter module
so that the table is complete before the first node is converted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx

from hec.frontend.context import Context

__all__ = ["BATCH_FREE", "CONVERTERS", "HINTS", "Converter", "converter"]

Converter = Callable[[Context, onnx.NodeProto, dict[str, Any]], list]
CONVERTERS: dict[str, Converter] = {}

# What to do about an op no converter takes (an op with a converter never reads its hint).
HINTS = {
    "Softmax": "inside the network it divides by an encrypted sum, which CKKS cannot; a final "
    "Softmax (on the logits, at the end of the model) runs on the client and is supported",
    "LogSoftmax": "inside the network it needs a logarithm of encrypted data, which CKKS cannot; "
    "a final LogSoftmax (at the end of the model) runs on the client and is supported",
}


# Op types whose converters read ONNX shapes through ``ctx.full`` (or act element by element),
# so they also take tensors that lost the batch axis (fixed-batch models, see Context.flat).
BATCH_FREE = {
    "Identity",
    "Dropout",
    "Shape",
    "Size",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Pow",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "Erf",
    "Elu",
    "Gelu",
}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of ``op_types`` (a later registration
    of the same op type replaces an earlier one)."""

    def wrap(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS[t] = fn
        return fn

    return wrap
