"""ONNX in, tensor-dialect graph out."""

from __future__ import annotations

import os

import onnx

from hec.frontend.importer import build_graph
from hec.frontend.load import load_model
from hec.ir import Graph

__all__ = ["import_onnx", "load_model", "build_graph"]


def import_onnx(model: str | os.PathLike | onnx.ModelProto, name: str = "main") -> Graph:
    """Load an ONNX model (file with external data, or proto) and build its tensor graph."""
    return build_graph(load_model(model), name)
