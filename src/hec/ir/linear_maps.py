"""The affine map ``y = A x + b`` of a linear tensor op, as a sparse matrix over flat indices.

The matrix is read off the op's own numpy semantics by probing with basis vectors: column ``j``
of ``A`` is ``f(e_j) - f(0)``. One definition of each op thus serves the interpreter and the
lowering, and a lowering bug cannot come from a second, hand-derived index formula. Probing costs
one batched evaluation per ``_CHUNK`` input elements, which is cheap next to key generation.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hec.ir.core import Op
from hec.ir.tensor_ops import LINEAR_KINDS, evaluate_op

__all__ = ["affine_map"]

_CHUNK = 256


def affine_map(op: Op) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return ``(A, b)`` with ``A`` of shape ``[out.size, in.size]`` (row-major flattening)."""
    if op.kind not in LINEAR_KINDS:
        raise ValueError(f"{op.kind} is not a linear op")
    in_shape, out_size = op.inputs[0].shape, int(np.prod(op.result.shape))
    n = int(np.prod(in_shape))
    if op.kind == "select":  # one 1 per read output element: no probing needed
        index = op.consts["index"].reshape(-1).astype(np.int64)
        rows = np.flatnonzero(index >= 0)
        ones = np.ones(len(rows))
        return sp.csr_matrix((ones, (rows, index[rows])), shape=(out_size, n)), np.zeros(out_size)
    b = evaluate_op(op, np.zeros((1, *in_shape))).reshape(out_size)
    blocks = []
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        basis = np.zeros((stop - start, n))
        basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
        cols = evaluate_op(op, basis.reshape(-1, *in_shape)).reshape(stop - start, out_size) - b
        blocks.append(sp.csr_matrix(cols.T))
    return sp.hstack(blocks, format="csr"), b
