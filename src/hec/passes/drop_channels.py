"""drop-dead-channels: channels that no later layer reads leave the tensors.

Block pruning leaves channels (a convolution's filters, a dense layer's neurons) that are

- *constant*: every weight of the filter is zero, so the channel holds its bias through the
  activation, whatever the input. What the next layer's weights add from it is then a fixed
  amount, which moves into that layer's bias where it is the same at every output position
  (always for a dense layer; for a convolution when its window never meets a padded border
  of a non-zero constant), and those weights become zero;
- *unread*: every weight of the next layer that reads the channel is zero.

An unread channel is removed from its producer (filter or neuron, and bias), from the
element-wise polynomials, pools, pads and flattening between the two layers, and from the next
layer's weights. The tensors shrink and the function does not change, so slot packing lays out
only what is read: a smaller ring, or room for one copy of the network per class
(``lower-to-slots``'s ``readout="copies"``, whose pipeline runs this pass first). Batch
packing culls the same channels itself (``prune_filters``).

Preserves: the function, exactly (to float rounding). Requires: a tensor graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hec.ir import Graph, Op, Value
from hec.ir.core import op_def
from hec.ir.tensor_ops import evaluate_op

__all__ = ["DropDeadChannels"]

# ops between two layers that act on each channel alone
_PER_CHANNEL = frozenset({"poly", "avgpool", "pad", "scale_shift", "reshape"})


@dataclass
class _Path:
    """Producer ``op`` → per-channel ops ``between`` → ``reader`` (conv or matmul).

    Channel ``c`` of the producer reaches the reader as input channel ``c`` (a conv reader)
    or as its input elements ``c·group .. (c+1)·group - 1`` (a matmul reader)."""

    op: Op
    between: list[Op]
    reader: Op
    group: int

    def reads(self, c: int) -> tuple:
        """Index of the reader's weights that read channel ``c``."""
        if self.reader.kind == "conv":
            return (slice(None), c)
        return (slice(c * self.group, (c + 1) * self.group),)


@dataclass(frozen=True)
class DropDeadChannels:
    """Fold constant channels into the next layer's bias, then remove the unread ones."""

    name: ClassVar[str] = "drop-dead-channels"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in list(graph.ops):
            if op.kind not in ("conv", "matmul"):
                continue
            path = _path(graph, op)
            if path is None:
                continue
            changed |= _fold_constants(graph, path)
            changed |= _drop_unread(path)
        return changed


def _channels(op: Op) -> int:
    w = op.consts["weight"]
    return w.shape[0] if op.kind == "conv" else w.shape[1]


def _path(graph: Graph, op: Op) -> _Path | None:
    """The single chain from ``op`` to the next conv/matmul, if its ops keep channels apart."""
    if op.kind == "matmul" and len(op.result.shape) != 1:
        return None
    outputs = {id(v) for v in graph.outputs}
    v, group = op.result, 1
    between: list[Op] = []
    while True:
        if id(v) in outputs or len(v.uses) != 1:
            return None
        user = v.uses[0]
        if user.kind in ("conv", "matmul"):
            if user.kind == "conv" and (op.kind != "conv" or len(v.shape) < 2):
                return None
            return _Path(op, between, user, group)
        if user.kind not in _PER_CHANNEL or not _keeps_channels(user, v, op.kind):
            return None
        if user.kind == "reshape":
            if op.kind != "conv" or len(user.result.shape) != 1 or group != 1:
                return None
            group = math.prod(v.shape) // v.shape[0]
        between.append(user)
        v = user.result


def _keeps_channels(op: Op, v: Value, producer: str) -> bool:
    if op.kind == "scale_shift":
        return all(op.consts[k].size == 1 for k in ("scale", "shift"))
    if op.kind == "pad":
        n = len(v.shape)
        return op.attrs["pads"][0] == 0 and op.attrs["pads"][n] == 0
    if op.kind == "avgpool":
        return producer == "conv"
    return True


def _fold_constants(graph: Graph, path: _Path) -> bool:
    """Constant channels: what the reader adds from them goes into its bias (where it is the
    same at every output position); their weights in the reader become zero."""
    w = path.op.consts["weight"]
    flat = w.reshape(w.shape[0], -1) if path.op.kind == "conv" else w.T
    reader = path.reader
    rw = reader.consts["weight"]
    constant = [
        c for c in range(_channels(path.op)) if not flat[c].any() and rw[path.reads(c)].any()
    ]
    if not constant:
        return False
    x0 = _value_at(graph, reader.inputs[0])  # input-independent on constant channels
    folded = False
    bias = np.asarray(reader.consts.get("bias", np.zeros(_channels(reader))), dtype=np.float64)
    for c in constant:
        only = np.zeros_like(rw)
        only[path.reads(c)] = rw[path.reads(c)]
        part = evaluate_op(_with_weight(reader, only), x0)[0]  # no bias: the channel's share
        if reader.kind == "matmul":
            add = part
        else:
            per = part.reshape(part.shape[0], -1)
            if np.ptp(per, axis=1).max() > 1e-12 * max(1.0, float(np.abs(per).max())):
                continue  # differs at a padded border: not a bias
            add = per[:, 0]
        bias = bias + add
        rw = np.where(only != 0, 0.0, rw)
        folded = True
    if folded:
        reader.consts = {**reader.consts, "weight": rw, "bias": bias}
    return folded


def _with_weight(op: Op, weight: np.ndarray) -> Op:
    """A detached copy of ``op`` (no inputs, no results) with ``weight`` and no bias, for
    ``evaluate_op``."""
    consts = {k: v for k, v in op.consts.items() if k != "bias"}
    return Op(op.kind, [], [], op.attrs, {**consts, "weight": weight}, op.origin)


def _value_at(graph: Graph, target: Value) -> np.ndarray:
    """``target`` for an all-zero input (one sample)."""
    env = {id(v): np.zeros((1, *v.shape)) for v in graph.inputs}
    for op in graph.ops:
        env[id(op.result)] = evaluate_op(op, *(env[id(v)] for v in op.inputs))
        if op.result is target:
            break
    return env[id(target)]


def _drop_unread(path: _Path) -> bool:
    """Remove the channels the reader reads with zero weights only (one is always kept)."""
    rw = path.reader.consts["weight"]
    n = _channels(path.op)
    keep = [c for c in range(n) if rw[path.reads(c)].any()] or [0]
    if len(keep) == n:
        return False
    op = path.op
    w, b = op.consts["weight"], op.consts.get("bias")
    consts = dict(op.consts)
    consts["weight"] = w[keep] if op.kind == "conv" else w[:, keep]
    if b is not None:
        consts["bias"] = np.asarray(b)[keep]
    op.consts = consts
    _forget_groups(op)
    _reinfer(op)
    for mid in path.between:
        if mid.kind == "reshape":
            mid.attrs = {**mid.attrs, "shape": [len(keep) * path.group]}
        _reinfer(mid)
    rows = np.concatenate([np.arange(c * path.group, (c + 1) * path.group) for c in keep])
    reader = path.reader
    reader.consts = {
        **reader.consts,
        "weight": rw[:, keep] if reader.kind == "conv" else rw[rows],
    }
    _forget_groups(reader)
    _reinfer(reader)
    return True


def _forget_groups(op: Op) -> None:
    """A conv's ``group`` (informational: its weight is the block-diagonal group-1 form) no
    longer describes a weight with channels removed."""
    if "group" in op.attrs:
        op.attrs = {k: v for k, v in op.attrs.items() if k != "group"}


def _reinfer(op: Op) -> None:
    for r, t in zip(op.results, op_def("tensor", op.kind).infer(op), strict=True):
        r.type = t
