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
from hec.runtime.plain_eval import COMMON_SEMANTICS, evaluate_plain

__all__ = ["simulate_batch"]


def _sum(op: Op, x: np.ndarray) -> np.ndarray:
    return np.asarray(sparse_matrix(op) @ x.T).T + op.consts["bias"]


_SEMANTICS = {
    **COMMON_SEMANTICS,
    "weighted_sum": _sum,
    "signed_sum": _sum,
    "mul_norelin": COMMON_SEMANTICS["mul"],  # the product, relinearized later
    "relinearize": lambda op, x: x,  # HE bookkeeping too
}


def simulate_batch(graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run a batch graph on inputs ``[B, *shape]``; returns outputs ``[B, *output shape]``."""
    flat = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in inputs]
    outs = evaluate_plain(graph, _SEMANTICS, flat)
    return [out.reshape(-1, *v.shape) for out, v in zip(outs, graph.outputs, strict=True)]
