"""Converters of the non-polynomial ops: activations and max pooling.

They become ``activation`` / ``maxpool`` ops of the tensor dialect; ``replace-activations``
later turns them into calibrated polynomials (and average pooling). Activations with parameters
are written as scalar affine maps around a parameter-free function (Clip and HardSigmoid around
``clip01``, Selu around ``elu``), so the whole element-wise region is one scalar function and
becomes one polynomial. PRelu with a per-channel slope is not a scalar function: it is written
``((1+s)/2)·x + ((1-s)/2)·|x|``, and only ``|x|`` is replaced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hec.frontend.context import Context
from hec.frontend.converters import per_sample_const, spatial_pads
from hec.frontend.registry import converter
from hec.ir import Value
from hec.ir.tensor_ops import pool_output_shape

__all__: list[str] = []


_ACTIVATION_OPS = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softplus": "softplus",
    "Erf": "erf",
    "Elu": "elu",
    "HardSwish": "hard_swish",
    "Mish": "mish",
    "Abs": "abs",
}
_FLOAT_MAX = 3.4e38  # Clip before opset 11: an absent bound is +-FLT_MAX


@converter(*_ACTIVATION_OPS, "Gelu")
def _activation(ctx: Context, node, attrs) -> list:
    """Non-polynomial activations; ``replace-activations`` fits polynomials to them."""
    x = ctx.value(node.input[0])
    if node.op_type == "Gelu":
        approx = attrs.get("approximate", b"none")
        fn = (
            "gelu_tanh"
            if (approx.decode() if isinstance(approx, bytes) else approx) == "tanh"
            else "gelu"
        )
        return [ctx.emit("activation", [x], x.shape, {"fn": fn})]
    a: dict[str, Any] = {"fn": _ACTIVATION_OPS[node.op_type]}
    if node.op_type in ("LeakyRelu", "Elu"):
        a["alpha"] = float(attrs.get("alpha", 0.01 if node.op_type == "LeakyRelu" else 1.0))
    return [ctx.emit("activation", [x], x.shape, a)]


@converter("MaxPool")
def _maxpool(ctx: Context, node, attrs) -> list:
    """Max pooling; ``replace-activations`` turns it into average pooling (approximation)."""
    x = ctx.value(node.input[0])
    if len(node.output) > 1 and node.output[1]:
        raise ctx.unsupported("the indices output is used")
    spatial = x.shape[1:]
    nd = len(spatial)
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", (1,) * nd))
    if any(d != 1 for d in attrs.get("dilations", (1,) * nd)) or attrs.get("ceil_mode", 0):
        raise ctx.unsupported("dilated or ceil_mode max pooling")
    pads = spatial_pads(ctx, attrs, spatial, kernel, strides, (1,) * nd)
    out = pool_output_shape(spatial, kernel, strides, pads)
    a = {"kernel": kernel, "strides": strides, "pads": pads, "count_include_pad": 0}
    return [ctx.emit("maxpool", [x], (x.shape[0], *out), a)]


def _affine(ctx: Context, x: Value, scale, shift, name: str | None = None) -> Value:
    """``scale · x + shift`` (scalars: stays inside an element-wise region)."""
    v = ctx.emit("scale_shift", [x], x.shape, {}, {"scale": scale, "shift": shift})
    if name is not None:
        assert ctx.node is not None  # a converter runs on its node
        v.name = f"{ctx.node.output[0]}/{name}"
    return v


def _apply(ctx: Context, x: Value, fn: str, alpha: float | None = None) -> Value:
    attrs: dict = {"fn": fn} if alpha is None else {"fn": fn, "alpha": alpha}
    return ctx.emit("activation", [x], x.shape, attrs)


def _bound(value) -> float | None:
    """A Clip bound, ``None`` when absent (or the +-FLT_MAX that stood for absent)."""
    if value is None or np.asarray(value).size == 0:
        return None
    v = float(np.asarray(value).reshape(()))
    return None if abs(v) >= _FLOAT_MAX else v


@converter("Clip")
def _clip(ctx: Context, node, attrs) -> list:
    """``min(max(x, lo), hi)``: ``lo + (hi-lo)·clip01((x-lo)/(hi-lo))``; one bound: a shifted
    ReLU. Bounds are inputs from opset 11 on, attributes before; either may be absent."""
    x = ctx.value(node.input[0])
    if ctx.opset >= 11:
        lo, hi = _bound(ctx.optional_const(1)), _bound(ctx.optional_const(2))
    else:
        lo, hi = _bound(attrs.get("min")), _bound(attrs.get("max"))
    if lo is None and hi is None:
        return [x]
    if lo is not None and hi is not None:
        if hi <= lo:
            raise ctx.unsupported(f"min {lo} >= max {hi}: the output does not depend on the input")
        width = hi - lo
        t = _affine(ctx, x, 1.0 / width, -lo / width, "t")
        return [_affine(ctx, _apply(ctx, t, "clip01"), width, lo)]
    if lo is not None:  # max(x, lo) = lo + relu(x - lo)
        t = _affine(ctx, x, 1.0, -lo, "t")
        return [_affine(ctx, _apply(ctx, t, "relu"), 1.0, lo)]
    assert hi is not None  # min(x, hi) = hi - relu(hi - x)
    t = _affine(ctx, x, -1.0, hi, "t")
    return [_affine(ctx, _apply(ctx, t, "relu"), -1.0, hi)]


@converter("HardSigmoid")
def _hard_sigmoid(ctx: Context, node, attrs) -> list:
    """``clip01(alpha·x + beta)``."""
    x = ctx.value(node.input[0])
    t = _affine(ctx, x, float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5)), "t")
    return [_apply(ctx, t, "clip01")]


@converter("Selu")
def _selu(ctx: Context, node, attrs) -> list:
    """``gamma · elu(x, alpha)``."""
    x = ctx.value(node.input[0])
    e = _apply(ctx, x, "elu", float(attrs.get("alpha", 1.67326319217681884765625)))
    return [_affine(ctx, e, float(attrs.get("gamma", 1.05070102214813232421875)), 0.0)]


@converter("PRelu")
def _prelu(ctx: Context, node, attrs) -> list:
    """One slope: LeakyRelu. Per-channel slopes ``s``: ``((1+s)/2)·x + ((1-s)/2)·|x|`` — two
    per-channel scalings (exact) of ``x`` and of ``|x|`` (the only replaced function), added."""
    x = ctx.value(node.input[0])
    s = np.asarray(ctx.const(node.input[1], "slope"), dtype=np.float64)
    full = (1, *x.shape)
    if np.broadcast_shapes(s.shape, full) != full:
        raise ctx.unsupported(f"slope of shape {list(s.shape)} does not broadcast to {full}")
    if s.ndim == len(full):
        s = s[0]
    if np.all(s == s.reshape(-1)[0]):
        return [_apply(ctx, x, "leaky_relu", float(s.reshape(-1)[0]))]
    linear = _affine(ctx, x, (1.0 + s) / 2.0, np.zeros(()), "linear")
    folded = _affine(ctx, _apply(ctx, x, "abs"), (1.0 - s) / 2.0, np.zeros(()), "abs_part")
    return [ctx.emit("add", [linear, folded], x.shape)]


@converter("GlobalMaxPool")
def _global_maxpool(ctx: Context, node, attrs) -> list:
    """Max over the whole spatial extent: a max pool with one window, replaced like MaxPool."""
    x = ctx.value(node.input[0])
    spatial = x.shape[1:]
    nd = len(spatial)
    a = {
        "kernel": tuple(spatial),
        "strides": (1,) * nd,
        "pads": (0,) * (2 * nd),
        "count_include_pad": 0,
    }
    return [ctx.emit("maxpool", [x], (x.shape[0], *(1,) * nd), a)]


@converter("Max", "Min")
def _max_min(ctx: Context, node, attrs) -> list:
    """``max(a, b) = b + relu(a - b)`` and ``min(a, b) = b - relu(b - a)``, folded over the
    encrypted operands (equal shapes) and then the constants' own max/min (broadcast, never
    widening the encrypted tensor): one replaced ReLU per pair, the rest exact."""
    names = [n for n in node.input if n]
    encrypted = [n for n in names if ctx.is_encrypted(n)]
    consts = [np.asarray(ctx.const(n), dtype=np.float64) for n in names if n not in encrypted]
    sign = 1.0 if node.op_type == "Max" else -1.0
    m = ctx.value(encrypted[0])
    for name in encrypted[1:]:
        e = ctx.value(name)
        if e.shape != m.shape:
            raise ctx.unsupported(f"broadcasting {list(m.shape)} against {list(e.shape)}")
        diff = ctx.emit("add", [m, _affine(ctx, e, -1.0, 0.0)], m.shape)  # m - e
        gap = _apply(ctx, _affine(ctx, diff, sign, 0.0), "relu")  # relu(±(m - e))
        m = ctx.emit("add", [e, _affine(ctx, gap, sign, 0.0)], m.shape)
    if consts:
        fold = np.maximum.reduce if sign > 0 else np.minimum.reduce
        c = per_sample_const(ctx, fold(np.broadcast_arrays(*consts)), encrypted[0])
        t = _affine(ctx, m, sign, -sign * c, "t")  # ±(m - c)
        m = _affine(ctx, _apply(ctx, t, "relu"), sign, c)
    return [m]
