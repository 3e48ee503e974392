"""Converters of more linear ONNX ops: ConvTranspose, Einsum, MatMul with a batched or 1-D
constant weight, Sum/Mean, Cast (Resize, Upsample and AveragePool with ``ceil_mode``/dilations:
``convert_resample``).

Each becomes a linear kind of ``ir/linear_ops.py`` (or existing ``add``/``scale_shift`` ops):
exact, so the compiled program equals onnxruntime up to CKKS noise. What would mix samples (the
batch axis) or is not linear in the encrypted values is refused with the reason.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from onnx import TensorProto

from hec.frontend import converters  # noqa: F401 (registers the MatMul converter extended here)
from hec.frontend.context import Context
from hec.frontend.registry import CONVERTERS, converter
from hec.ir import Value
from hec.ir.linear_ops import conv_transpose_output_shape, einsum_output_shape

__all__: list[str] = []

_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
# the general converter this module extends, taken before it registers its own
_MATMUL = CONVERTERS["MatMul"]


def _text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


# -- ConvTranspose ----------------------------------------------------------------------------
def _transpose_pads(
    ctx: Context, attrs, spatial, kernel, strides, dil, out_pad
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(pads, output_padding)``; an ``output_shape`` one longer than the full output appends
    zeros (as onnxruntime does: one more output-padding row)."""
    nd = len(spatial)
    auto = _text(attrs.get("auto_pad"), "NOTSET")
    target = attrs.get("output_shape")
    if target is None and auto in ("NOTSET", "VALID"):
        pads = attrs.get("pads", (0,) * (2 * nd)) if auto == "NOTSET" else (0,) * (2 * nd)
        return tuple(pads), out_pad
    if target is None:  # SAME_*: the output is the input times the stride
        target = [spatial[i] * strides[i] for i in range(nd)]
    target = list(target)[-nd:]
    begin, end, extra = [], [], list(out_pad)
    for i in range(nd):
        total = strides[i] * (spatial[i] - 1) + out_pad[i] + dil[i] * (kernel[i] - 1) + 1
        total -= target[i]
        if total < -1:  # onnxruntime's output is not defined there
            raise ctx.unsupported(f"output_shape {list(target)} is larger than the full output")
        extra[i] += max(0, -total)
        total = max(0, total)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return tuple(begin + end), tuple(extra)


@converter("ConvTranspose")
def _conv_transpose(ctx: Context, node, attrs) -> list:
    """Transposed convolution; ``group > 1`` expands the weight block-diagonally (exact)."""
    x = ctx.value(node.input[0])
    w = np.asarray(ctx.const(node.input[1], "weight"), np.float64)
    nd = w.ndim - 2
    group = int(attrs.get("group", 1))
    c_in = x.shape[0]
    if nd < 1 or len(x.shape) != nd + 1 or w.shape[0] != c_in or c_in % group:
        raise ctx.unsupported(f"weight {list(w.shape)} does not fit input {[1, *x.shape]}")
    per_in, per_out = c_in // group, w.shape[1]
    full_w = np.zeros((c_in, per_out * group, *w.shape[2:]))
    for g in range(group):
        rows = slice(g * per_in, (g + 1) * per_in)
        full_w[rows, g * per_out : (g + 1) * per_out] = w[rows]
    kernel = tuple(w.shape[2:])
    strides = tuple(attrs.get("strides", (1,) * nd))
    dil = tuple(attrs.get("dilations", (1,) * nd))
    out_pad = tuple(attrs.get("output_padding", (0,) * nd))
    pads, out_pad = _transpose_pads(ctx, attrs, x.shape[1:], kernel, strides, dil, out_pad)
    out = conv_transpose_output_shape(x.shape[1:], kernel, strides, pads, dil, out_pad)
    if min(out) < 1:
        raise ctx.unsupported(f"pads {list(pads)} leave an empty output")
    consts = {"weight": full_w}
    bias = ctx.optional_const(2)
    if bias is not None:
        consts["bias"] = bias
    a: dict[str, Any] = {
        "strides": strides,
        "pads": pads,
        "dilations": dil,
        "output_padding": out_pad,
    }
    a["group"] = group
    return [ctx.emit("conv_transpose", [x], (full_w.shape[1], *out), a, consts)]


# -- Einsum, and MatMul with a batched constant weight ----------------------------------------
def _explicit(terms: list[str], shapes: list[tuple[int, ...]], out: str | None):
    """Labels for ``...`` (right-aligned across operands) and the output when implicit.

    ``terms[0]`` is the encrypted operand. A size-1 ellipsis axis facing a longer one, or a
    constant's size-1 axis where the encrypted operand has one, gets a label of its own, which
    is summed away: that is broadcasting.
    """
    used = set("".join(terms) + (out or ""))
    fresh = (c for c in string.ascii_letters if c not in used)

    def ellipsis(t: str, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        head, dots, tail = t.partition("...")
        n = len(shape) - len(head) - len(tail) if dots else 0
        if n < 0:
            raise ValueError(f"labels {t!r} do not fit shape {tuple(shape)}")
        return n, tuple(shape[len(head) : len(head) + n])

    width = max(ellipsis(t, s)[0] for t, s in zip(terms, shapes, strict=True))
    common = [next(fresh) for _ in range(width)]
    longest = [1] * width
    for t, s in zip(terms, shapes, strict=True):
        n, dims = ellipsis(t, s)
        for j, d in enumerate(dims):
            longest[width - n + j] = max(longest[width - n + j], d)
    x_width = ellipsis(terms[0], shapes[0])[0]
    expanded = []
    for k, (t, s) in enumerate(zip(terms, shapes, strict=True)):
        n, dims = ellipsis(t, s)
        letters = []
        for j, d in enumerate(dims):
            pos = width - n + j
            own = d == 1 and (longest[pos] > 1 or (k > 0 and pos >= width - x_width))
            letters.append(next(fresh) if own else common[pos])
        expanded.append(t.replace("...", "".join(letters)))
    if out is None:
        plain = "".join(t.replace("...", "") for t in terms)
        out = "".join(common) + "".join(sorted(c for c in set(plain) if plain.count(c) == 1))
    return expanded, out.replace("...", "".join(common))


def _einsum(ctx: Context, equation: str, x: Value, c: np.ndarray | None, x_first: bool) -> Value:
    """``einsum`` of the encrypted ``x`` (batch axis first, kept first) and a constant ``c``."""
    eq = equation.replace(" ", "")
    lhs, out = eq.split("->") if "->" in eq else (eq, None)
    terms = lhs.split(",")
    if len(terms) != (1 if c is None else 2):
        raise ctx.unsupported(f"equation {equation!r} does not match its operands")
    if c is not None and not x_first:
        terms.reverse()
    c = np.ones(()) if c is None else np.asarray(c, np.float64)
    terms, out = _explicit(terms + ([""] if len(terms) == 1 else []), [(1, *x.shape), c.shape], out)
    xt, ct = terms
    batch = xt[0] if xt else ""
    if not batch or xt.count(batch) > 1 or batch in ct or out[:1] != batch or out.count(batch) > 1:
        raise ctx.unsupported(
            f"equation {equation!r} contracts, repeats or moves the batch axis (the encrypted "
            f"operand's first label must stay the output's first)"
        )
    eq = f"{xt},{ct}->{out}"
    shape = einsum_output_shape(eq, (1, *x.shape), c.shape)
    return ctx.emit("einsum", [x], shape[1:], {"equation": eq}, {"operand": c})


def _fold_constants(
    ctx: Context, equation: str, names: list[str], at: int
) -> tuple[str, np.ndarray]:
    """Contract the constant operands of a 3+-operand equation into one; returns the equation
    ``x,c->out`` (x the encrypted operand at index ``at``) and ``c``. A label that only
    constants carry is summed among them, which is exact."""
    eq = equation.replace(" ", "")
    if "..." in eq:
        raise ctx.unsupported("an ellipsis with more than one constant operand")
    lhs, out = eq.split("->") if "->" in eq else (eq, None)
    terms = lhs.split(",")
    if len(terms) != len(names):
        raise ctx.unsupported(f"equation {equation!r} has {len(terms)} operands")
    if out is None:
        out = "".join(sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1))
    xt = terms[at]
    consts = [
        (t, np.asarray(ctx.consts[n], np.float64))
        for k, (t, n) in enumerate(zip(terms, names, strict=True))
        if k != at
    ]
    kept = "".join(dict.fromkeys(c for t, _ in consts for c in t if c in xt + out))
    folded = np.einsum(",".join(t for t, _ in consts) + "->" + kept, *(a for _, a in consts))
    return f"{xt},{kept}->{out}", folded


@converter("Einsum")
def _einsum_node(ctx: Context, node, attrs) -> list:
    """One encrypted operand; the constant operands (any number) are contracted into one."""
    names = [n for n in node.input if n]
    enc = [i for i, n in enumerate(names) if ctx.is_encrypted(n)]
    if len(enc) != 1:
        raise ctx.unsupported("only one encrypted operand (the others must be constants)")
    x = ctx.value(names[enc[0]])
    equation = _text(attrs.get("equation"), "")
    if len(names) > 2:
        equation, c = _fold_constants(ctx, equation, names, enc[0])
        return [_einsum(ctx, equation, x, c, True)]
    operand = ctx.const(names[1 - enc[0]], "operand") if len(names) == 2 else None
    return [_einsum(ctx, equation, x, operand, enc[0] == 0)]


@converter("MatMul")
def _matmul(ctx: Context, node, attrs) -> list:
    """What the ``matmul`` kind does not cover, as an ``einsum``: a constant weight of rank 3 or
    more (broadcast over the per-sample leading axes), or a 1-D weight."""
    a, b = node.input[0], node.input[1]
    if not (ctx.is_encrypted(a) and b in ctx.consts):  # the general converter refuses it
        return _MATMUL(ctx, node, attrs)
    x, w = ctx.value(a), np.asarray(ctx.consts[b])
    if w.ndim == 2 or not x.shape:  # the matmul kind
        return _MATMUL(ctx, node, attrs)
    full = len(x.shape) + 1
    if w.ndim > full or (w.ndim == full and w.shape[0] != 1):
        raise ctx.unsupported(
            f"weight {list(w.shape)} against input {[1, *x.shape]} broadcasts over the batch axis"
        )
    w = w[0] if w.ndim == full else w  # its leading 1 faces the batch axis
    eq = "...k,k->..." if w.ndim == 1 else "...mk,...kn->...mn"  # ONNX drops a 1-D's extra axis
    return [_einsum(ctx, eq, x, w, True)]


# -- Sum / Mean -------------------------------------------------------------------------------
@converter("Sum", "Mean")
def _sum(ctx: Context, node, attrs) -> list:
    """Encrypted operands are added (``add``), constants folded into one shift; Mean scales."""
    names = [n for n in node.input if n]
    values: dict[int, tuple[Value, int]] = {}
    for n in names:
        if ctx.is_encrypted(n):
            v = ctx.value(n)
            values[id(v)] = (v, values.get(id(v), (v, 0))[1] + 1)
    first = next(iter(values.values()))[0]
    full = (1, *first.shape)
    if any(v.shape != first.shape for v, _ in values.values()):
        shapes = sorted({str([1, *v.shape]) for v, _ in values.values()})
        raise ctx.unsupported(f"encrypted operands of different shapes {', '.join(shapes)}")
    shift = np.asarray(
        sum((np.asarray(ctx.consts[n], np.float64) for n in names if n not in ctx.values), 0.0)
    )
    if np.broadcast_shapes(shift.shape, full) != full:
        raise ctx.unsupported(f"a constant of shape {list(shift.shape)} widens {list(full)}")
    if shift.ndim == len(full):
        shift = shift[0]
    terms = [
        v if k == 1 else ctx.emit("scale_shift", [v], v.shape, {}, {"scale": k, "shift": 0.0})
        for v, k in values.values()
    ]
    total = terms[0]
    for t in terms[1:]:
        total = ctx.emit("add", [total, t], first.shape)
    scale = 1.0 / len(names) if node.op_type == "Mean" else 1.0
    if scale == 1.0 and not np.any(shift):
        return [total]
    consts: dict[str, ArrayLike] = {"scale": scale, "shift": shift * scale}
    return [ctx.emit("scale_shift", [total], first.shape, {}, consts)]


# -- Cast -------------------------------------------------------------------------------------
@converter("Cast", "CastLike")
def _cast(ctx: Context, node, attrs) -> list:
    """Between float types: the identity (CKKS computes on reals; no rounding to the narrower
    type happens). To an integer or bool type: refused."""
    if node.op_type == "CastLike":
        if not ctx.is_encrypted(node.input[0]):  # a constant cast like an encrypted tensor
            return [np.asarray(ctx.consts[node.input[0]], np.float32)]
        target = np.asarray(ctx.const(node.input[1], "target")).dtype
        name = target.name
        ok = name in ("float16", "float32", "float64", "bfloat16")  # not float8: far too coarse
    else:
        to = int(attrs.get("to", 0))
        ok, name = to in _FLOATS, TensorProto.DataType.Name(to)
    if not ok:
        raise ctx.unsupported(
            f"cast to {name}: the encrypted values are real numbers (only float16/float/double/"
            f"bfloat16 casts, which are the identity)"
        )
    return [ctx.value(node.input[0])]
