"""The affine map ``y = A x + b`` of a linear tensor op, as a sparse matrix over flat indices.

The matrix is read off the op's own numpy semantics by probing with basis vectors: column ``j``
of ``A`` is ``f(e_j) - f(0)``. One definition of each op thus serves the interpreter and the
lowering, and a lowering bug cannot come from a second, hand-derived index formula. Probing costs
one batched evaluation per ``_CHUNK`` input elements.

A convolution or pooling window is local, so inputs of one channel lying a window's span apart
in every spatial dimension never meet in one output: they are probed together (one probe per
channel and position modulo the span, e.g. 800 probes instead of 6,272 for a 5×5 convolution of
32 channels of 14×14) and told apart by a second probe that weights each with its rank. Only
which input an output came from is decoded; the value is the op's own, exactly.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from hec.ir.core import Op
from hec.ir.tensor_ops import LINEAR_KINDS, evaluate_op

__all__ = ["affine_map"]

_CHUNK = 256


# The maps of the last few ops probed, by what defines them: a compile lowers the same layers
# several times (each candidate layout, the range check), on clones of one graph.
_MEMO: OrderedDict[tuple, tuple[sp.csr_matrix, np.ndarray]] = OrderedDict()
_MEMO_SIZE = 8


def affine_map(op: Op) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return ``(A, b)`` with ``A`` of shape ``[out.size, in.size]`` (row-major flattening)."""
    if op.kind not in LINEAR_KINDS:
        raise ValueError(f"{op.kind} is not a linear op")
    key = _definition(op)
    if key not in _MEMO:
        _MEMO[key] = _probe(op)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    A, b = _MEMO[key]
    return A.copy(), b.copy()


def _definition(op: Op) -> tuple:
    """Everything the op's map depends on: kind, attributes, input shape and constants."""
    consts = tuple(
        (k, v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())
        for k, v in sorted(op.consts.items())
    )
    return op.kind, repr(sorted(op.attrs.items())), tuple(op.inputs[0].shape), consts


def _probe(op: Op) -> tuple[sp.csr_matrix, np.ndarray]:
    in_shape, out_size = op.inputs[0].shape, int(np.prod(op.result.shape))
    n = int(np.prod(in_shape))
    if op.kind == "select":  # one 1 per read output element: no probing needed
        index = op.consts["index"].reshape(-1).astype(np.int64)
        rows = np.flatnonzero(index >= 0)
        ones = np.ones(len(rows))
        return sp.csr_matrix((ones, (rows, index[rows])), shape=(out_size, n)), np.zeros(out_size)
    b = evaluate_op(op, np.zeros((1, *in_shape))).reshape(out_size)
    groups = _disjoint_groups(op, in_shape)
    if groups is not None:
        return _probe_groups(op, groups, in_shape, out_size), b
    blocks = []
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        basis = np.zeros((stop - start, n))
        basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
        cols = evaluate_op(op, basis.reshape(-1, *in_shape)).reshape(stop - start, out_size) - b
        blocks.append(sp.csr_matrix(cols.T))
    return sp.hstack(blocks, format="csr"), b


def _disjoint_groups(op: Op, in_shape: tuple[int, ...]) -> np.ndarray | None:
    """For a windowed op (conv, avgpool): the input indices in groups no window sees two of,
    as rows of a ``-1``-padded array; ``None`` for any other op (probed one input at a time)."""
    if op.kind == "conv":
        kernel, dilations = op.consts["weight"].shape[2:], op.attrs["dilations"]
    elif op.kind == "avgpool":
        kernel = op.attrs["kernel"]
        dilations = (1,) * len(kernel)
    else:
        return None
    # a window covers (k - 1)·d + 1 consecutive positions of a dimension: two inputs at least
    # that far apart in one dimension never share a window
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    index = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    lattice: list[
        tuple[Any, ...]
    ] = [  # channel c, positions r, r + p, ... in every spatial dimension
        (c, *(slice(r, None, p) for r, p in zip(rest, span, strict=True)))
        for c in range(in_shape[0])
        for rest in itertools.product(
            *(range(min(p, n)) for p, n in zip(span, in_shape[1:], strict=True))
        )
    ]
    groups = [index[key].ravel() for key in lattice]
    out = np.full((len(groups), max(len(g) for g in groups)), -1, dtype=np.int64)
    for i, g in enumerate(groups):
        out[i, : len(g)] = g
    return out


def _probe_groups(
    op: Op, groups: np.ndarray, in_shape: tuple[int, ...], out_size: int
) -> sp.csr_matrix:
    """``A`` from one probe per group (its inputs at 1) and one with input ``i`` of the group at
    ``i + 1``: an output's ratio of the two names its one input. The bias is left out so that
    both probes are exactly linear (``f(e_S)`` is then ``A[:, j]`` to the last bit)."""
    linear = SimpleNamespace(
        kind=op.kind,
        attrs=op.attrs,
        consts={k: v for k, v in op.consts.items() if k != "bias"},
        origin=op.origin,
        inputs=op.inputs,
        results=op.results,
    )
    n = int(np.prod(in_shape))
    rank = np.arange(1, groups.shape[1] + 1, dtype=np.float64)
    rows, cols, vals = [], [], []
    step = max(1, _CHUNK * 8 // groups.shape[1])
    for start in range(0, len(groups), step):
        chunk = groups[start : start + step]
        probe, member = np.nonzero(chunk >= 0)
        ones = np.zeros((len(chunk), n))
        ranks = np.zeros((len(chunk), n))
        ones[probe, chunk[probe, member]] = 1.0
        ranks[probe, chunk[probe, member]] = rank[member]
        y1 = evaluate_op(cast(Op, linear), ones.reshape(-1, *in_shape)).reshape(
            len(chunk), out_size
        )
        yr = evaluate_op(cast(Op, linear), ranks.reshape(-1, *in_shape)).reshape(
            len(chunk), out_size
        )
        p, r = np.nonzero(y1)
        which = np.rint(yr[p, r] / y1[p, r]).astype(np.int64) - 1
        rows.append(r)
        cols.append(chunk[p, which])
        vals.append(y1[p, r])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(out_size, n),
    )
