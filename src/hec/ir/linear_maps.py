"""The affine map ``y = A x + b`` of a linear tensor op, as a sparse matrix over flat indices.

The matrix is read off the op's own numpy semantics by probing with basis vectors: column ``j``
of ``A`` is ``f(e_j) - f(0)``. One definition of each op thus serves the interpreter and the
lowering, and a lowering bug cannot come from a second, hand-derived index formula. Probing costs
one batched evaluation per ``_CHUNK`` input elements.

A convolution or pooling window is local, so inputs of one channel lying a window's span apart
in every spatial dimension never meet in one output: they are probed together (one probe per
channel and position modulo the span, e.g. 800 probes instead of 6,272 for a 5×5 convolution of
32 channels of 14×14) and told apart by a second probe that weights each with its rank. Only
which input an output came from is decoded; the value is the op's own, exactly. A convolution
is probed one input channel at a time (the convolution by that channel's weights alone), so a
probe carries no other channels' zeros. An op whose
every output reads at most one input (an element-wise scale and shift, a pad, a reshape or a
transpose) is probed the same way with all its inputs in one group: two evaluations however
large the tensor (a ResNet's 16×32×32 scale took 64 dense probes of 256 × 16,384).
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

# Kinds whose every output element reads at most one input element (element-wise or data
# movement): all inputs can be probed at once.
_ONE_SOURCE_KINDS = frozenset({"scale_shift", "pad", "reshape", "transpose"})

# The maps of the ops probed last, by what defines them: a compile lowers the same layers
# several times (each candidate layout, the range check), on clones of one graph. Bounded by
# their bytes, not their number: a ResNet-20 has about 60 linear ops (all its maps: ~0.6 GB),
# and a count small enough for large maps made every lowering probe every op again.
_MEMO: OrderedDict[tuple, tuple[sp.csr_matrix, np.ndarray]] = OrderedDict()
_MEMO_BYTES = 1 << 30


def affine_map(op: Op) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return ``(A, b)`` with ``A`` of shape ``[out.size, in.size]`` (row-major flattening)."""
    if op.kind not in LINEAR_KINDS:
        raise ValueError(f"{op.kind} is not a linear op")
    key = _definition(op)
    if key not in _MEMO:
        _MEMO[key] = _probe(op)
        while len(_MEMO) > 1 and sum(map(_nbytes, _MEMO.values())) > _MEMO_BYTES:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    A, b = _MEMO[key]
    return A.copy(), b.copy()


def _nbytes(entry: tuple[sp.csr_matrix, np.ndarray]) -> int:
    A, b = entry
    return int(A.data.nbytes + A.indices.nbytes + A.indptr.nbytes + b.nbytes)


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
    if op.kind == "conv" and in_shape[0] > 1:
        return _probe_conv_by_channel(op, in_shape, out_size), b
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


def _probe_conv_by_channel(op: Op, in_shape: tuple[int, ...], out_size: int) -> sp.csr_matrix:
    """A convolution's ``A``, one input channel at a time: the columns of channel ``c`` are
    those of the convolution by ``weight[:, c]`` alone, probed in disjoint groups on that
    channel. Each probe then carries one channel, not ``C`` channels of zeros: ``C`` times
    less arithmetic (a ResNet-20's 64-channel layer: 64x), the same values to the last bit."""
    per = int(np.prod(in_shape[1:]))
    one_shape = (1, *in_shape[1:])
    blocks = []
    for c in range(in_shape[0]):
        one = SimpleNamespace(
            kind="conv",
            attrs=op.attrs,
            consts={"weight": op.consts["weight"][:, c : c + 1]},
            origin=op.origin,
            inputs=op.inputs,
            results=op.results,
        )
        groups = _disjoint_groups(cast(Op, one), one_shape)
        assert groups is not None
        blocks.append(_probe_groups(cast(Op, one), groups, one_shape, out_size))
    A = sp.hstack(blocks, format="csr")
    assert A.shape == (out_size, per * in_shape[0])
    return A


def _disjoint_groups(op: Op, in_shape: tuple[int, ...]) -> np.ndarray | None:
    """For a windowed op (conv, avgpool): the input indices in groups no window sees two of,
    as rows of a ``-1``-padded array; for an op whose outputs read one input each, one group
    of all inputs; ``None`` for any other op (probed one input at a time)."""
    if op.kind in _ONE_SOURCE_KINDS:
        return np.arange(int(np.prod(in_shape)))[None, :]
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
    both probes are exactly linear (``f(e_S)`` is then ``A[:, j]`` to the last bit); an op
    whose constant part is not a ``bias`` (a shift, a pad value) has ``f(0)`` subtracted, as
    the one-input probes do."""
    linear = SimpleNamespace(
        kind=op.kind,
        attrs=op.attrs,
        consts={k: v for k, v in op.consts.items() if k != "bias"},
        origin=op.origin,
        inputs=op.inputs,
        results=op.results,
    )
    n = int(np.prod(in_shape))
    zero = evaluate_op(cast(Op, linear), np.zeros((1, *in_shape))).reshape(1, out_size)
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
        if zero.any():
            y1, yr = y1 - zero, yr - zero
        p, r = np.nonzero(y1)
        which = np.rint(yr[p, r] / y1[p, r]).astype(np.int64) - 1
        rows.append(r)
        cols.append(chunk[p, which])
        vals.append(y1[p, r])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(out_size, n),
    )
