"""Culling: weights that read only inputs pruning made constant fold into the bias.

A pruned-away channel (a filter or neuron with no weight left) outputs a constant, its bias
through the activation; every weight of the next layer that reads only such constants adds
the same number to each output, whatever the input. Culling zeroes those weights and adds
what they contributed to that layer's bias: the function is unchanged on the calibration data
(for a convolution, up to the border of a padded map, where the bias takes the mean), and the
weights cost nothing any more: batch packing never computes the dead ciphertexts (MOFHEI's
culling, ``prune_filters``), slot packing no longer reads their slots (fewer diagonals for the
pruned dense layers that read few inputs). Inputs that were constant before pruning (a blank
border pixel) are left alone: constant on the calibration data is not constant on every input.
"""

from __future__ import annotations

import numpy as np

from hec.ir import Graph, Op, affine_map
from hec.passes.diagonal_blocks import tagged_matrix
from hec.recover import layer_inputs

__all__ = ["constant_inputs", "cull_constant_inputs"]


def constant_inputs(graph: Graph, ops: list[Op], x: np.ndarray) -> dict[int, np.ndarray]:
    """Per layer: which of its input elements are constant over the calibration data."""
    n = min(len(x), 256)
    inputs = layer_inputs(graph, x[:n], ops)  # one pass over the graph for every layer
    return {id(op): _constant(inputs[id(op)].reshape(n, -1)) for op in ops}


def _inputs(graph: Graph, op: Op, x: np.ndarray) -> np.ndarray:
    """``op``'s input on (up to 256 of) the calibration inputs, one row each (again per layer
    while culling: each cull changes what the layers after it read)."""
    return layer_inputs(graph, x[:256], [op])[id(op)].reshape(min(len(x), 256), -1)


def _constant(xin: np.ndarray) -> np.ndarray:
    return np.ptp(xin, axis=0) <= 1e-9 * max(1.0, float(np.abs(xin).max()))


def cull_constant_inputs(
    graph: Graph, ops: list[Op], x: np.ndarray, was_const: dict[int, np.ndarray]
) -> dict[int, int]:
    """Zero the weights reading only inputs that pruning made constant (dead channels) and
    fold what they contributed into the bias; returns per layer the input elements culled.
    Inputs constant before pruning (a blank border pixel) are left alone: constant on the
    calibration data is not constant on every input."""
    culled = {}
    for op in ops:
        xin = _inputs(graph, op, x)
        const = _constant(xin) & ~was_const[id(op)]
        if not const.any():
            continue
        A, widx = tagged_matrix(op)
        n_w = op.consts["weight"].size
        touches = np.bincount(widx, minlength=n_w)
        inside = np.bincount(widx[const[A.col]], minlength=n_w)
        dead = ((inside == touches) & (touches > 0)).reshape(op.consts["weight"].shape)
        dead &= op.consts["weight"] != 0
        if not dead.any():
            continue
        # contribution of the constant inputs through the weights about to be zeroed
        full, _ = affine_map(op)
        w0 = op.consts["weight"]
        op.consts = {**op.consts, "weight": np.where(dead, 0.0, w0)}
        kept, _ = affine_map(op)
        xc = np.where(const, xin[0], 0.0)
        delta = (full - kept) @ xc
        n_out = w0.shape[1] if op.kind == "matmul" else w0.shape[0]
        per_channel = delta.reshape(n_out, -1).mean(1) if op.kind == "conv" else delta
        bias = op.consts.get("bias", np.zeros(n_out))
        op.consts = {**op.consts, "bias": np.asarray(bias, dtype=np.float64) + per_channel}
        culled[id(op)] = int(const.sum())
    return culled
