"""One converter per ONNX op type that may touch the encrypted input.

A converter gets the import context, the node and its attributes, and returns the node's outputs
(IR values, or numpy constants for shape queries). ONNX shapes carry the batch axis in front;
IR shapes do not, so ``full = (1, *value.shape)``.
"""

from __future__ import annotations

import math

import numpy as np

from hec.frontend.context import Context
from hec.frontend.movement import convert_movement
from hec.frontend.registry import converter
from hec.ir import Value
from hec.ir.tensor_ops import conv_output_shape, pool_output_shape

__all__ = ["per_sample_const", "spatial_pads", "power_to_chebyshev"]


def power_to_chebyshev(n: int) -> tuple[float, ...]:
    """Chebyshev coefficients of ``x**n`` (the IR's ``poly`` uses the Chebyshev basis)."""
    return tuple(float(c) for c in np.polynomial.chebyshev.poly2cheb([0.0] * n + [1.0]))


def per_sample_const(ctx: Context, c: np.ndarray, name: str) -> np.ndarray:
    """A constant broadcast against the encrypted tensor ``name``, without the batch axis."""
    c = np.asarray(c, dtype=np.float64)
    full = ctx.full(name)
    if np.broadcast_shapes(c.shape, full) != full:
        raise ctx.unsupported(
            f"constant of shape {list(c.shape)} would widen the encrypted "
            f"tensor of shape {list(full)}"
        )
    if c.ndim == len(full) and name not in ctx.flat:
        c = c[0]
    return c


def spatial_pads(ctx: Context, attrs: dict, spatial, kernel, strides, dilations):
    """Explicit ``pads`` from ``auto_pad`` (SAME_UPPER puts the extra padding at the end)."""
    nd = len(spatial)
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return tuple(attrs.get("pads", (0,) * (2 * nd)))
    if auto == "VALID":
        return (0,) * (2 * nd)
    begin, end = [], []
    for i in range(nd):
        out = math.ceil(spatial[i] / strides[i])
        total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - spatial[i])
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return tuple(begin + end)


@converter("Identity", "Dropout")
def _identity(ctx: Context, node, attrs) -> list:
    """Identity, and Dropout at inference (``training_mode`` false or absent)."""
    if len(node.output) > 1 and node.output[1]:
        raise ctx.unsupported("the dropout mask output is used")
    if node.op_type == "Dropout":
        training = ctx.optional_const(2)
        given = ctx.optional_const(1)
        ratio = 0.5 if given is None else float(np.asarray(given).reshape(-1)[0])
        if training is not None and bool(np.asarray(training).reshape(-1)[0]) and ratio:
            raise ctx.unsupported("training_mode=True drops random elements; export in eval mode")
    return [ctx.value(node.input[0], "data")]


@converter("Shape")
def _shape(ctx: Context, node, attrs) -> list:
    full = np.array(ctx.full(node.input[0]), dtype=np.int64)
    return [full[attrs.get("start", 0) : attrs.get("end", len(full))]]


@converter("Size")
def _size(ctx: Context, node, attrs) -> list:
    return [np.array(math.prod(ctx.full(node.input[0])), dtype=np.int64)]


@converter("Conv")
def _conv(ctx: Context, node, attrs) -> list:
    x = ctx.value(node.input[0], "data")
    w = ctx.const(node.input[1], "weight")
    group = int(attrs.get("group", 1))
    if group != 1:
        w = _block_diagonal(ctx, w, group, x.shape[0])
    nd = w.ndim - 2
    strides = tuple(attrs.get("strides", (1,) * nd))
    dil = tuple(attrs.get("dilations", (1,) * nd))
    pads = spatial_pads(ctx, attrs, x.shape[1:], w.shape[2:], strides, dil)
    consts = {"weight": w}
    bias = ctx.optional_const(2)
    if bias is not None:
        consts["bias"] = bias
    out = conv_output_shape(x.shape[1:], w.shape[2:], strides, pads, dil)
    a = {"strides": strides, "pads": pads, "dilations": dil}
    if group != 1:
        a["group"] = group  # informational: the weight is the exact block-diagonal group-1 form
    return [ctx.emit("conv", [x], (w.shape[0], *out), a, consts)]


def _block_diagonal(ctx: Context, w: np.ndarray, group: int, channels: int) -> np.ndarray:
    """A grouped conv's ``[O, C/g, *k]`` weight as the ``[O, C, *k]`` weight of a group-1 conv.

    Output channel ``o`` of group ``o // (O/g)`` reads input channels ``g·C/g .. (g+1)·C/g``
    only: the other entries are zero, so the group-1 conv computes exactly the grouped one.
    """
    out_ch, per_group = w.shape[0], w.shape[1]
    if group < 1 or out_ch % group or per_group * group != channels:
        raise ctx.unsupported(
            f"group={group} does not divide weight {list(w.shape)} over {channels} channels"
        )
    full = np.zeros((out_ch, channels, *w.shape[2:]))
    step = out_ch // group
    for g in range(group):
        rows = slice(g * step, (g + 1) * step)
        full[rows, g * per_group : (g + 1) * per_group] = w[rows]
    return full


@converter("Gemm")
def _gemm(ctx: Context, node, attrs) -> list:
    if not ctx.is_encrypted(node.input[0]) or attrs.get("transA", 0):
        raise ctx.unsupported("only Gemm(encrypted A, constant B) without transA is supported")
    x = ctx.value(node.input[0])
    w = ctx.const(node.input[1], "weight B").astype(np.float64)
    w = (w.T if attrs.get("transB", 0) else w) * attrs.get("alpha", 1.0)
    consts = {"weight": w}
    rows = ctx.full(node.input[0])[0]
    c = ctx.optional_const(2)
    if c is not None:
        bias = np.broadcast_to(
            np.asarray(c, np.float64) * attrs.get("beta", 1.0), (rows, w.shape[1])
        )
        # one bias row when every row gets the same one (always, with the batch axis)
        consts["bias"] = bias[0] if (bias == bias[0]).all() else bias
    return [ctx.emit("matmul", [x], (*x.shape[:-1], w.shape[1]), {}, consts)]


@converter("MatMul")
def _matmul(ctx: Context, node, attrs) -> list:
    if ctx.is_encrypted(node.input[0]) and ctx.is_encrypted(node.input[1]):
        raise ctx.unsupported("both operands are encrypted; one must be a constant weight")
    if not ctx.is_encrypted(node.input[0]):
        return [_left_matmul(ctx, ctx.const(node.input[0], "weight"), node.input[1])]
    x = ctx.value(node.input[0])
    w = ctx.const(node.input[1], "weight")
    if w.ndim != 2 or not x.shape:
        raise ctx.unsupported(f"weight of rank {w.ndim} (only 2-D weights are supported)")
    return [ctx.emit("matmul", [x], (*x.shape[:-1], w.shape[1]), {}, {"weight": w})]


def _left_matmul(ctx: Context, w: np.ndarray, name: str) -> Value:
    """``W @ x`` with a constant 2-D ``W``: ``(xᵀ Wᵀ)ᵀ`` over the last two axes of ``x``, so
    two transposes around the ``matmul`` kind (all linear: lowering fuses them into one map)."""
    x = ctx.value(name, "data")
    if w.ndim != 2 or len(x.shape) < 2:
        raise ctx.unsupported(
            f"constant left operand of rank {w.ndim} times an encrypted tensor of shape "
            f"{list(ctx.full(name))} (only a 2-D constant times a tensor with two matrix axes)"
        )
    n = len(x.shape)
    swap = (*range(n - 2), n - 1, n - 2)
    xt = ctx.emit("transpose", [x], tuple(x.shape[p] for p in swap), {"perm": swap})
    y = ctx.emit("matmul", [xt], (*xt.shape[:-1], w.shape[0]), {}, {"weight": w.T})
    return ctx.emit("transpose", [y], tuple(y.shape[p] for p in swap), {"perm": swap})


@converter("Add", "Sub", "Mul", "Div")
def _binary(ctx: Context, node, attrs) -> list:
    a, b = node.input[0], node.input[1]
    op = node.op_type
    if ctx.is_encrypted(a) and ctx.is_encrypted(b):
        x, y = ctx.value(a), ctx.value(b)
        if x.shape != y.shape:
            raise ctx.unsupported(f"broadcasting {list(x.shape)} against {list(y.shape)}")
        if op == "Add":
            return [ctx.emit("add", [x, y], x.shape)]
        if op == "Sub":
            neg = ctx.emit("scale_shift", [y], y.shape, {}, {"scale": -1.0, "shift": 0.0})
            return [ctx.emit("add", [x, neg], x.shape)]
        if op == "Mul":
            if x is y:
                return [ctx.emit("poly", [x], x.shape, {"coeffs": power_to_chebyshev(2)})]
            return [ctx.emit("mul", [x, y], x.shape)]
        raise ctx.unsupported("division by an encrypted tensor")
    enc_first = ctx.is_encrypted(a)
    x = ctx.value(a if enc_first else b)
    c = per_sample_const(ctx, ctx.const(b if enc_first else a), a if enc_first else b)
    one, zero = np.ones(()), np.zeros(())
    scale: np.ndarray
    shift: np.ndarray
    if op == "Add":
        scale, shift = one, c
    elif op == "Sub":
        scale, shift = (one, -c) if enc_first else (-one, c)
    elif op == "Mul":
        scale, shift = c, zero
    elif enc_first:  # Div by a constant
        scale, shift = 1.0 / c, zero
    else:
        raise ctx.unsupported("division of a constant by an encrypted tensor")
    return [ctx.emit("scale_shift", [x], x.shape, {}, {"scale": scale, "shift": shift})]


@converter("Neg")
def _neg(ctx: Context, node, attrs) -> list:
    x = ctx.value(node.input[0])
    return [ctx.emit("scale_shift", [x], x.shape, {}, {"scale": -1.0, "shift": 0.0})]


@converter("Pow")
def _pow(ctx: Context, node, attrs) -> list:
    x = ctx.value(node.input[0], "base")
    e = np.asarray(ctx.const(node.input[1], "exponent"))
    if e.size != 1 or float(e) != int(float(e)) or int(float(e)) < 1:
        raise ctx.unsupported(f"exponent {e.tolist()} (only positive integer powers)")
    n = int(float(e))
    if n == 1:
        return [x]
    return [ctx.emit("poly", [x], x.shape, {"coeffs": power_to_chebyshev(n)})]


@converter("BatchNormalization")
def _batchnorm(ctx: Context, node, attrs) -> list:
    if attrs.get("training_mode", 0):
        raise ctx.unsupported("training_mode=1; export the model in eval mode")
    x = ctx.value(node.input[0])
    scale, bias, mean, var = (ctx.const(node.input[i]).astype(np.float64) for i in range(1, 5))
    s = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
    bcast = (-1,) + (1,) * (len(x.shape) - 1)
    consts = {"scale": s.reshape(bcast), "shift": (bias - mean * s).reshape(bcast)}
    return [ctx.emit("scale_shift", [x], x.shape, {}, consts)]


@converter("AveragePool", "GlobalAveragePool")
def _avgpool(ctx: Context, node, attrs) -> list:
    x = ctx.value(node.input[0])
    spatial = x.shape[1:]
    nd = len(spatial)
    if node.op_type == "GlobalAveragePool":
        kernel, strides, pads, include = tuple(spatial), (1,) * nd, (0,) * (2 * nd), 1
    else:
        kernel = tuple(attrs["kernel_shape"])
        strides = tuple(attrs.get("strides", (1,) * nd))
        if any(d != 1 for d in attrs.get("dilations", (1,) * nd)):
            raise ctx.unsupported("dilated pooling")
        pads = spatial_pads(ctx, attrs, spatial, kernel, strides, (1,) * nd)
        include = attrs.get("count_include_pad", 0)
        if attrs.get("ceil_mode", 0):
            ceil = tuple(
                math.ceil((spatial[i] + pads[i] + pads[i + nd] - kernel[i]) / strides[i]) + 1
                for i in range(nd)
            )
            if ceil != pool_output_shape(spatial, kernel, strides, pads):
                raise ctx.unsupported("ceil_mode=1 where it changes the output size")
    out = pool_output_shape(spatial, kernel, strides, pads)
    a = {"kernel": kernel, "strides": strides, "pads": pads, "count_include_pad": int(include)}
    return [ctx.emit("avgpool", [x], (x.shape[0], *out), a)]


@converter("Pad")
def _pad(ctx: Context, node, attrs) -> list:
    x = ctx.value(node.input[0], "data")
    full = ctx.full(node.input[0])
    rank = len(full)
    pads = [int(p) for p in ctx.const(node.input[1], "pads")]
    given = ctx.optional_const(3)
    if given is not None:
        axes = [int(a) % rank for a in given]
        both = [0] * (2 * rank)
        for i, ax in enumerate(axes):
            both[ax], both[ax + rank] = pads[i], pads[i + len(axes)]
        pads = both
    if pads[0] or pads[rank]:
        raise ctx.unsupported("padding the batch axis")
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    value = ctx.optional_const(2)
    per_sample = tuple(pads[1:rank] + pads[rank + 1 :])
    shape = tuple(x.shape[i] + per_sample[i] + per_sample[i + rank - 1] for i in range(rank - 1))
    a = {
        "pads": per_sample,
        "mode": mode,
        "value": float(value) if value is not None and value.size else 0.0,
    }
    return [ctx.emit("pad", [x], shape, a)]


def _reshaped(ctx: Context, name: str, full_target: tuple[int, ...], out: str) -> Value:
    """``name`` reshaped to the ONNX shape ``full_target`` (row-major order is unchanged).

    With a dynamic batch the target must keep the batch axis in front; with a fixed batch of 1
    any target is one sample's reshape (the result may lose the batch axis: ``Context.flat``).
    """
    x = ctx.value(name, "data")
    if not ctx.fixed_batch and (name in ctx.flat or not full_target or full_target[0] != 1):
        raise ctx.unsupported(
            f"reshape to {list(full_target)} changes the batch axis; export with a fixed "
            f"batch of 1 to compile per-sample reshapes"
        )
    shape = ctx.per_sample_shape(tuple(full_target), out)
    return x if shape == x.shape else ctx.emit("reshape", [x], shape, {"shape": shape})


@converter("Reshape")
def _reshape(ctx: Context, node, attrs) -> list:
    target = [int(d) for d in ctx.const(node.input[1], "target shape")]
    full = ctx.full(node.input[0])
    if not attrs.get("allowzero", 0):
        target = [full[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(full) // known
    if math.prod(target) != math.prod(full):
        raise ctx.unsupported(f"cannot reshape {list(full)} to {target}")
    return [_reshaped(ctx, node.input[0], tuple(target), node.output[0])]


@converter("Flatten")
def _flatten(ctx: Context, node, attrs) -> list:
    full = ctx.full(node.input[0])
    axis = int(attrs.get("axis", 1))
    if not -len(full) <= axis <= len(full):
        raise ctx.unsupported(f"axis={axis} outside rank {len(full)}")
    axis = axis + len(full) if axis < 0 else axis
    if axis != 1 and not ctx.fixed_batch:
        raise ctx.unsupported(
            f"axis={attrs['axis']} mixes the batch axis (only axis=1, or -{len(full) - 1} "
            f"on rank {len(full)}, unless the batch is fixed at 1)"
        )
    target = (math.prod(full[:axis]), math.prod(full[axis:]))
    return [_reshaped(ctx, node.input[0], target, node.output[0])]


@converter("Squeeze", "Unsqueeze")
def _squeeze(ctx: Context, node, attrs) -> list:
    full = list(ctx.full(node.input[0]))
    given = ctx.optional_const(1)
    if given is None and "axes" in attrs:  # opset 11-12 attribute
        given = np.asarray(attrs["axes"])
    keep_batch = node.input[0] not in ctx.flat and not ctx.fixed_batch
    if node.op_type == "Squeeze":
        if given is None:  # every axis of size 1 (the batch axis only when it is flat)
            chosen = [i for i, d in enumerate(full) if d == 1 and (i or not keep_batch)]
        else:
            chosen = [int(a) for a in given]
        axes = sorted(a % len(full) for a in chosen)
        if 0 in axes and keep_batch:
            raise ctx.unsupported("squeezing the batch axis")
        target = [d for i, d in enumerate(full) if i not in axes]
    else:
        if given is None:
            raise ctx.unsupported("missing axes")
        rank = len(full) + len(given)
        axes = sorted(int(a) % rank for a in given)
        if 0 in axes and keep_batch:
            raise ctx.unsupported("unsqueezing before the batch axis")
        target = full
        for a in axes:
            target.insert(a, 1)
    return [_reshaped(ctx, node.input[0], tuple(target), node.output[0])]


@converter("Transpose")
def _transpose(ctx: Context, node, attrs) -> list:
    name = node.input[0]
    full = ctx.full(name)
    perm = tuple(int(p) for p in attrs.get("perm", tuple(reversed(range(len(full))))))
    if name in ctx.flat or perm[0] != 0:
        if not ctx.fixed_batch:
            raise ctx.unsupported(f"perm {list(perm)} moves the batch axis")
        return convert_movement(ctx, node, attrs)
    x = ctx.value(name, "data")
    perm = tuple(p - 1 for p in perm[1:])
    if perm == tuple(range(len(perm))):
        return [x]
    shape = tuple(x.shape[p] for p in perm)
    return [ctx.emit("transpose", [x], shape, {"perm": perm})]


@converter("ReduceMean", "ReduceSum")
def _reduce(ctx: Context, node, attrs) -> list:
    x = ctx.value(node.input[0])
    rank = len(x.shape) + 1
    given = ctx.optional_const(1) if len(node.input) > 1 else None
    if given is None:
        given = attrs.get("axes")
    if given is None or len(given) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        raise ctx.unsupported("reducing over every axis, the batch axis included")
    axes = sorted({int(a) % rank for a in given})
    if 0 in axes:
        raise ctx.unsupported("reducing over the batch axis")
    keep = attrs.get("keepdims", 1)
    per_sample = tuple(a - 1 for a in axes)
    shape = (
        tuple(1 if i in per_sample else d for i, d in enumerate(x.shape))
        if keep
        else tuple(d for i, d in enumerate(x.shape) if i not in per_sample)
    )
    mode = "mean" if node.op_type == "ReduceMean" else "sum"
    return [
        ctx.emit("reduce", [x], shape, {"axes": per_sample, "keepdims": int(keep), "mode": mode})
    ]
