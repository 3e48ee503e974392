"""Converters of the normalization layers (LayerNormalization, InstanceNormalization,
GroupNormalization).

Each becomes ``reshape → normalize → reshape``: the ``normalize`` kind (ir/norm_ops.py) holds the
statistics' groups on its first axis and the normalised elements on its second, with the op's
scale and bias spread to that shape. ``replace-norms`` later replaces the division by each
sample's standard deviation with calibrated constants, or refuses the model.
"""

from __future__ import annotations

import math

import numpy as np

from hec.frontend.context import Context
from hec.frontend.registry import converter
from hec.ir import Value

__all__: list[str] = []


def _normalized(
    ctx: Context, x: Value, groups: int, scale: np.ndarray, shift: np.ndarray, epsilon: float
) -> Value:
    """``x`` as ``[groups, n]``, normalised per row, scaled and shifted, in ``x``'s shape."""
    rows = (groups, math.prod(x.shape) // groups)
    flat = x if x.shape == rows else ctx.emit("reshape", [x], rows, {"shape": rows})
    assert ctx.node is not None  # a converter runs on its node
    attrs = {"epsilon": float(epsilon), "source": ctx.node.op_type}
    consts = {"scale": np.asarray(scale, np.float64), "shift": np.asarray(shift, np.float64)}
    y = ctx.emit("normalize", [flat], rows, attrs, consts)
    return y if x.shape == rows else ctx.emit("reshape", [y], x.shape, {"shape": x.shape})


def _unused_extra_outputs(ctx: Context, node) -> None:
    if any(node.output[1:]):
        raise ctx.unsupported(
            "its Mean / InvStdDev outputs are requested; only Y is computed (export without them)"
        )


@converter("LayerNormalization")
def _layer_norm(ctx: Context, node, attrs) -> list:
    """Statistics over the axes from ``axis`` on: one row per index of the axes before it."""
    _unused_extra_outputs(ctx, node)
    x = ctx.value(node.input[0])
    rank = len(x.shape) + 1
    axis = int(attrs.get("axis", -1))
    if not -rank <= axis < rank or axis % rank == 0:
        raise ctx.unsupported(f"axis={axis} normalises over the batch axis")
    normed = x.shape[axis % rank - 1 :]
    n = math.prod(normed)
    scale = np.broadcast_to(ctx.const(node.input[1], "scale"), normed).reshape(1, n)
    bias = ctx.optional_const(2)
    shift = np.zeros((1, n)) if bias is None else np.broadcast_to(bias, normed).reshape(1, n)
    groups = math.prod(x.shape) // n
    return [_normalized(ctx, x, groups, scale, shift, attrs.get("epsilon", 1e-5))]


@converter("InstanceNormalization")
def _instance_norm(ctx: Context, node, attrs) -> list:
    """Statistics per channel over the spatial axes."""
    x = ctx.value(node.input[0])
    c = x.shape[0]
    scale = np.asarray(ctx.const(node.input[1], "scale")).reshape(c, 1)
    shift = np.asarray(ctx.const(node.input[2], "bias")).reshape(c, 1)
    return [_normalized(ctx, x, c, scale, shift, attrs.get("epsilon", 1e-5))]


@converter("GroupNormalization")
def _group_norm(ctx: Context, node, attrs) -> list:
    """Statistics per group of channels; scale and bias per channel (opset 21; the per-group
    form of opset 18 is deprecated and refused by ONNX's checker when the model is loaded)."""
    _unused_extra_outputs(ctx, node)
    x = ctx.value(node.input[0])
    c, spatial = x.shape[0], math.prod(x.shape[1:])
    groups = int(attrs["num_groups"])
    if groups < 1 or c % groups:
        raise ctx.unsupported(f"num_groups={groups} does not divide the {c} channels")
    per = c // groups

    def spread(name: str, index: int) -> np.ndarray:
        v = np.asarray(ctx.const(node.input[index], name), np.float64).reshape(groups, per, 1)
        return np.broadcast_to(v, (groups, per, spatial)).reshape(groups, per * spatial)

    eps = attrs.get("epsilon", 1e-5)
    return [_normalized(ctx, x, groups, spread("scale", 1), spread("bias", 2), eps)]
