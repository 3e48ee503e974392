"""Filter blocks for batch packing: whole output channels (and single weights), then culling.

In batch packing every tensor element is a ciphertext and a linear layer is a weighted sum of
them with plaintext scalars: a zero weight skips one multiply and one addition per output
position, one for one, but only a whole dead output channel (filter / neuron) removes
ciphertexts. A dead channel's elements are constants (its bias through the activation); the
next layer's weights that read only them are *culled* and what they contributed is folded into
that layer's bias, so no op reads those elements and the batch schedule, which computes only
the ciphertexts an output needs, never computes them (after MOFHEI). Used by ``prune-blocks``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from hec.ir import LINEAR_KINDS, PRUNABLE_KINDS, Graph, Op, affine_map
from hec.passes.culling import constant_inputs, cull_constant_inputs
from hec.passes.diagonal_blocks import tagged_matrix

__all__ = ["prune_filters"]


def prune_filters(
    graph: Graph,
    ops: list[Op],
    scores: dict[int, np.ndarray],
    x: np.ndarray,
    sparsity: float,
    per_layer: bool,
    single_weights: bool,
) -> list[dict]:
    """Remove whole output channels (and, with ``single_weights``, single weights), cheapest
    score per HE multiply removed first, until the sparsity is reached; then cull.

    In batch packing a weight costs one scalar multiply (and one addition) per output position
    it is applied at, so a zero weight inside a kept filter saves operations one for one too;
    only a whole dead channel saves its ciphertexts (and the memory they hold).
    """
    reach = _channel_reach(graph, ops)
    total = sum(op.consts["weight"].size for op in ops)
    dead_w = [np.ascontiguousarray(op.consts["weight"] == 0) for op in ops]  # weight shapes
    zero = [d.copy() for d in dead_w]  # what to zero now (culled weights are folded later)
    n_dead = sum(int(d.sum()) for d in dead_w)
    units = []  # (score per multiply removed, layer index, channel or -1 - flat weight index)
    for li, op in enumerate(ops):
        s, w = scores[id(op)], op.consts["weight"]
        uses = _positions(op)
        if single_weights:
            flat = s.ravel() / uses
            units += [(float(v), li, -1 - i) for i, v in enumerate(flat)]
        if li not in reach:  # the output layer, or nothing reads it linearly: no culling
            continue
        per_channel = s.sum(axis=0) if op.kind == "matmul" else s.reshape(w.shape[0], -1).sum(1)
        nli, culled, _ = reach[li]
        next_uses = _positions(ops[nli])
        for c in range(_n_out(op)):
            removed = (w.size // _n_out(op)) * uses + len(culled[c]) * next_uses
            units.append((per_channel[c] / removed, li, c))
    units.sort()
    was_const = constant_inputs(graph, ops, x)
    dead: dict[int, set[int]] = {li: set() for li in reach}
    layer_dead = [int(d.sum()) for d in dead_w]

    def mark(li: int, idx, into_zero: bool = True) -> None:
        nonlocal n_dead
        flat = dead_w[li].reshape(-1)
        new = int(np.count_nonzero(~flat[idx]))
        flat[idx] = True
        if into_zero:
            zero[li].reshape(-1)[idx] = True
        n_dead += new
        layer_dead[li] += new

    for _, li, c in units:
        op = ops[li]
        if per_layer:
            if layer_dead[li] >= sparsity * op.consts["weight"].size:
                continue
        elif n_dead >= sparsity * total:
            break
        if c < 0:
            mark(li, -1 - c)
            continue
        if c in dead[li] or len(dead[li]) + 1 >= _n_out(op):
            continue  # keep one channel per layer
        dead[li].add(c)
        idx = np.zeros(op.consts["weight"].shape, dtype=bool)
        if op.kind == "matmul":
            idx[:, c] = True
        else:
            idx[c] = True
        mark(li, np.flatnonzero(idx))
        nli, culled, _ = reach[li]
        mark(nli, culled[c], into_zero=False)
    for li, op in enumerate(ops):
        if zero[li].any():
            op.consts = {**op.consts, "weight": np.where(zero[li], 0.0, op.consts["weight"])}
    # cull: next layers' inputs that are now constant (dead channels) fold into their bias
    for li, chans in dead.items():
        nli, _, reads = reach[li]
        for c in chans:
            was_const[id(ops[nli])][reads[c]] = False  # constant because its channel died
    culled_inputs = cull_constant_inputs(graph, ops, x, was_const)
    rows = []
    for li, op in enumerate(ops):
        w = op.consts["weight"]
        n_out = _n_out(op)
        rows.append(
            {
                "name": op.origin,
                "block": "filter",
                "weights": int(w.size),
                "weights_pruned": int((w == 0).sum()),
                "blocks": int(n_out),
                "blocks_kept": int(n_out - len(dead.get(li, ()))),
                "inputs_culled": culled_inputs.get(id(op), 0),
            }
        )
    return rows


def _positions(op: Op) -> int:
    """Output positions each weight of a layer is applied at (1 for a dense layer)."""
    return math.prod(op.result.shape) // _n_out(op)


def _n_out(op: Op) -> int:
    """Output channels (conv) or neurons (matmul) of a layer."""
    w = op.consts["weight"]
    return w.shape[1] if op.kind == "matmul" else w.shape[0]


def _channel_reach(
    graph: Graph, ops: list[Op]
) -> dict[int, tuple[int, list[np.ndarray], list[np.ndarray]]]:
    """Per layer index: the next layer that reads it, and per output channel the (flat) weights
    of that layer that read only this channel (what culling the channel removes) and the
    mask of its input elements that depend on the channel."""
    index = {id(op): i for i, op in enumerate(ops)}
    out = {}
    for li, op in enumerate(ops):
        n_out = (
            op.consts["weight"].shape[1] if op.kind == "matmul" else op.consts["weight"].shape[0]
        )
        size = math.prod(op.result.shape)
        per = size // n_out
        # element e of the output belongs to channel e // per (matmul: e % n_out)
        chan = np.arange(size) % n_out if op.kind == "matmul" else np.arange(size) // per
        dep = sp.csr_matrix((np.ones(size), (np.arange(size), chan)), shape=(size, n_out))
        nxt = _propagate(graph, op, dep, index)
        if nxt is None:
            continue
        nli, ndep = nxt
        nop = ops[nli]
        A, widx = tagged_matrix(nop)
        n_w = nop.consts["weight"].size
        touches = np.bincount(widx, minlength=n_w)
        culled, reads = [], []
        ndep = ndep.tocsc()
        for c in range(n_out):
            cols = np.zeros(ndep.shape[0], dtype=bool)
            cols[ndep[:, c].nonzero()[0]] = True
            inside = np.bincount(widx[cols[A.col]], minlength=n_w)
            culled.append(np.flatnonzero((inside == touches) & (touches > 0)))
            reads.append(cols)
        out[li] = (nli, culled, reads)
    return out


def _propagate(graph: Graph, start: Op, dep: sp.csr_matrix, index: dict[int, int]):
    """Follow which elements depend on each channel of ``start``'s output, through linear and
    element-wise ops, to the first conv/matmul reading them; ``None`` if it reaches an output
    first or branches."""
    deps = {id(start.result): dep}
    for op in graph.ops[graph.ops.index(start) + 1 :]:
        ins = [deps[id(v)] for v in op.inputs if id(v) in deps]
        if not ins:
            continue
        if id(op) in index:
            return index[id(op)], ins[0]
        if op.kind in ("poly", "scale_shift", "mul", "add"):
            d = ins[0]
            for more in ins[1:]:
                d = d + more
            deps[id(op.result)] = d
        elif op.kind in LINEAR_KINDS and op.kind not in PRUNABLE_KINDS:  # data movement, pools
            A, _ = affine_map(op)
            deps[id(op.result)] = (abs(A) @ ins[0]).tocsr()
        else:
            return None
    return None
