"""Run a batch program on numpy arrays: the encrypted program's semantics without encryption.

A value is a ``[B, size]`` array: row ``i`` is input ``i`` of the batch (slot ``i`` of every
element ciphertext), column ``e`` is tensor element ``e``. ``rescale``, ``level_reduce`` and
``relinearize`` only change HE bookkeeping, so they are identities; everything else is exact
arithmetic.
"""

from __future__ import annotations

import numpy as np

from hec.ir import Graph, Op
from hec.ir.batch_ops import sparse_matrix

__all__ = ["simulate_batch"]


def _sum(op: Op, x: np.ndarray) -> np.ndarray:
    return np.asarray(sparse_matrix(op) @ x.T).T + op.consts["bias"]


_SEMANTICS = {
    "weighted_sum": _sum,
    "signed_sum": _sum,
    "add": lambda op, x, y: x + y,
    "mul": lambda op, x, y: x * y,
    "mul_norelin": lambda op, x, y: x * y,
    "relinearize": lambda op, x: x,
    "rescale": lambda op, x: x,
    "level_reduce": lambda op, x: x,
    "poly": lambda op, x: np.polynomial.chebyshev.chebval(x, op.attrs["coeffs"]),
}


def simulate_batch(graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run a batch graph on inputs ``[B, *shape]``; returns outputs ``[B, *output shape]``."""
    env = {
        id(v): np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for v, x in zip(graph.inputs, inputs, strict=True)
    }
    for op in graph.ops:
        env[id(op.result)] = _SEMANTICS[op.kind](op, *(env[id(v)] for v in op.inputs))
    return [env[id(v)].reshape(-1, *v.shape) for v in graph.outputs]
