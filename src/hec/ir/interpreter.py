"""Numpy reference interpreter of the tensor dialect."""

from __future__ import annotations

import numpy as np

from hec.ir.core import Graph
from hec.ir.tensor_ops import evaluate_op

__all__ = ["interpret"]


def interpret(graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run a tensor graph on batched inputs (``[B, *shape]`` each); returns batched outputs."""
    env: dict[int, np.ndarray] = {}
    for v, x in zip(graph.inputs, inputs, strict=True):
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1:] != v.shape:
            raise ValueError(f"input {v.name}: expected [B, {v.shape}], got {x.shape}")
        env[id(v)] = x
    for op in graph.ops:
        out = evaluate_op(op, *(env[id(v)] for v in op.inputs))
        env[id(op.result)] = out
    return [env[id(v)] for v in graph.outputs]
