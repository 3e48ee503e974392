"""Converters of more linear ONNX ops: Resize/Upsample, ConvTranspose, Einsum, Sum/Mean, Cast,
AveragePool with ``ceil_mode``/dilations, MatMul with a batched constant weight.

Each becomes a linear kind of ``ir/linear_ops.py`` (or existing ``add``/``scale_shift`` ops):
exact, so the compiled program equals onnxruntime up to CKKS noise. What would mix samples (the
batch axis) or is not linear in the encrypted values is refused with the reason.
"""

from __future__ import annotations

import math
import string
from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

from hec.frontend.axis_maps import (
    COORDINATE_MODES,
    NEAREST_MODES,
    pool_matrix,
    pool_size,
    resize_matrix,
)
from hec.frontend.converters import CONVERTERS, converter, spatial_pads
from hec.ir import Value
from hec.ir.linear_ops import conv_transpose_output_shape, einsum_output_shape

if TYPE_CHECKING:
    from hec.frontend.importer import Context

__all__: list[str] = []

_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
# the general converters this module extends, taken before it registers its own
_AVERAGE_POOL = CONVERTERS["AveragePool"]
_MATMUL = CONVERTERS["MatMul"]


def _text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _axis_maps(ctx: Context, x: Value, maps: dict[int, np.ndarray]) -> Value:
    """``x`` times ``maps[a]`` along each per-sample axis ``a``; identity maps are left out."""
    maps = {
        a: m
        for a, m in sorted(maps.items())
        if m.shape[0] != m.shape[1] or not np.array_equal(m, np.eye(m.shape[0]))
    }
    if not maps:
        return x
    shape = tuple(maps[a].shape[0] if a in maps else d for a, d in enumerate(x.shape))
    consts = {f"map{i}": m for i, m in enumerate(maps.values())}
    return ctx.emit("axis_maps", [x], shape, {"axes": tuple(maps)}, consts)


# -- Resize / Upsample ------------------------------------------------------------------------
def _resize_targets(ctx: Context, node, attrs, full: tuple[int, ...]):
    """Per full axis: output size and the scale the coordinate formulas use; whether the
    model gave scales (not sizes)."""
    rank = len(full)
    legacy = node.op_type == "Upsample" or ctx.opset < 11
    if legacy:
        scales = attrs.get("scales") if "scales" in attrs else ctx.const(node.input[1], "scales")
        sizes = None
    else:
        scales, sizes = ctx.optional_const(2), ctx.optional_const(3)
        scales = None if scales is None or scales.size == 0 else scales
    axes = [int(a) % rank for a in attrs.get("axes", range(rank))]
    given = sizes if scales is None else scales
    if given is None or len(given) != len(axes):
        raise ctx.unsupported(f"needs {len(axes)} scales or sizes as constants")
    out, scale = list(full), [1.0] * rank
    f32 = np.float32
    if scales is not None:
        for a, s in zip(axes, np.asarray(scales, f32), strict=True):
            out[a], scale[a] = int(math.floor(f32(full[a]) * s)), float(s)
        return out, scale, True
    policy = _text(attrs.get("keep_aspect_ratio_policy"), "stretch")
    ratios = [f32(int(s)) / f32(full[a]) for a, s in zip(axes, sizes, strict=True)]
    for i, a in enumerate(axes):
        if policy == "stretch":
            out[a], scale[a] = int(sizes[i]), float(ratios[i])
        else:
            r = min(ratios) if policy == "not_larger" else max(ratios)
            out[a], scale[a] = int(math.floor(f32(full[a]) * r + f32(0.5))), float(r)
    return out, scale, False


@converter("Resize", "Upsample")
def _resize(ctx: Context, node, attrs) -> list:
    """Nearest, linear and cubic resizing: one interpolation matrix per resized axis."""
    x = ctx.value(node.input[0])
    full = (1, *x.shape)
    mode = _text(attrs.get("mode"), "nearest")
    mode = "linear" if mode == "bilinear" else mode
    if node.op_type == "Upsample" or ctx.opset < 11:
        coord, nearest = "asymmetric", "simple"
    else:
        coord = _text(attrs.get("coordinate_transformation_mode"), "half_pixel")
        nearest = _text(attrs.get("nearest_mode"), "round_prefer_floor")
    if coord not in COORDINATE_MODES:
        raise ctx.unsupported(f"coordinate_transformation_mode {coord}")
    if nearest not in NEAREST_MODES:
        raise ctx.unsupported(f"nearest_mode {nearest}")
    if mode not in ("nearest", "linear", "cubic"):
        raise ctx.unsupported(f"mode {mode}")
    out, scale, from_scales = _resize_targets(ctx, node, attrs, full)
    if out[0] != 1 or scale[0] != 1.0:
        raise ctx.unsupported("resizing the batch axis")
    roi = _crop_box(ctx, node, attrs, len(full)) if coord == "tf_crop_and_resize" else None
    if roi is None and all(s == 1.0 for s in scale) and out == list(full):
        return [x]  # onnxruntime copies the input when nothing is resized
    if (
        from_scales
        and coord == "align_corners"
        and any(out[a] != full[a] * scale[a] for a in range(len(full)) if scale[a] != 1.0)
    ):
        # ONNX's reference divides by the fractional length in * scale, onnxruntime by the
        # output length: no single answer
        raise ctx.unsupported(
            "align_corners with scales that do not give whole output lengths (ONNX and "
            "onnxruntime differ); give sizes instead of scales"
        )
    maps = {
        a - 1: resize_matrix(
            full[a],
            out[a],
            scale[a],
            mode,
            coord,
            nearest,
            float(attrs.get("cubic_coeff_a", -0.75)),
            bool(attrs.get("exclude_outside", 0)),
            bool(attrs.get("antialias", 0)),
            roi[a] if roi else (0.0, 1.0),
        )
        for a in range(1, len(full))
    }
    outside = any(not m.any(axis=1).all() for m in maps.values())
    if outside and float(attrs.get("extrapolation_value", 0.0)) != 0.0:
        raise ctx.unsupported(
            "tf_crop_and_resize with a box leaving the input and extrapolation_value != 0 (not "
            "linear); use extrapolation_value=0 or a box inside the input"
        )
    return [_axis_maps(ctx, x, maps)]


def _crop_box(ctx: Context, node, attrs, rank: int) -> list[tuple[float, float]]:
    """Per full axis ``(start, end)`` of ``tf_crop_and_resize``'s box (normalised)."""
    axes = [int(a) % rank for a in attrs.get("axes", range(rank))]
    roi = ctx.optional_const(1)
    if roi is None or roi.size != 2 * len(axes):
        raise ctx.unsupported(f"tf_crop_and_resize needs a constant roi of {2 * len(axes)} values")
    box = [(0.0, 1.0)] * rank
    for i, a in enumerate(axes):
        box[a] = (float(roi.flat[i]), float(roi.flat[i + len(axes)]))
    return box


# -- AveragePool with ceil_mode or dilations --------------------------------------------------
@converter("AveragePool")
def _average_pool(ctx: Context, node, attrs) -> list:
    """Dilated windows, and ``ceil_mode`` where it adds a window: one averaging matrix per axis."""
    x = ctx.value(node.input[0])
    spatial = x.shape[1:]
    nd = len(spatial)
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", (1,) * nd))
    dil = tuple(attrs.get("dilations", (1,) * nd))
    pads = spatial_pads(ctx, attrs, spatial, kernel, strides, dil)
    ceil = bool(attrs.get("ceil_mode", 0))

    def span(i: int) -> tuple[int, int]:
        return pads[i], pads[i + nd]

    plain = all(d == 1 for d in dil) and all(
        math.ceil((spatial[i] + sum(span(i)) - kernel[i]) / strides[i])
        == (spatial[i] + sum(span(i)) - kernel[i]) // strides[i]
        for i in range(nd)
        if ceil
    )
    if plain:  # the avgpool kind covers it
        return _AVERAGE_POOL(ctx, node, attrs)
    include = bool(attrs.get("count_include_pad", 0))
    sizes = [pool_size(spatial[i], kernel[i], strides[i], span(i), dil[i], ceil) for i in range(nd)]
    if min(sizes) < 1:
        raise ctx.unsupported(f"the windows do not fit the input {list(spatial)}")
    past_end = any(
        (sizes[i] - 1) * strides[i] - pads[i] + dil[i] * (kernel[i] - 1)
        >= spatial[i] + pads[i + nd]
        for i in range(nd)
    )
    if include and past_end:
        # onnxruntime's divisor for such windows depends on its version, opset and rank
        raise ctx.unsupported(
            "count_include_pad=1 with ceil_mode windows past the end padding (their divisor is "
            "not well defined); use count_include_pad=0 or pad explicitly"
        )
    maps = {
        i + 1: pool_matrix(spatial[i], kernel[i], strides[i], span(i), dil[i], ceil, include)
        for i in range(nd)
    }
    return [_axis_maps(ctx, x, maps)]


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
    a = {"strides": strides, "pads": pads, "dilations": dil, "output_padding": out_pad}
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
    c = ctx.const(names[1 - enc[0]], "operand") if len(names) == 2 else None
    return [_einsum(ctx, equation, x, c, enc[0] == 0)]


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
    consts = {"scale": scale, "shift": shift * scale}
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
        ok = target.kind == "f" or target.name == "bfloat16"
        name = target.name
    else:
        to = int(attrs.get("to", 0))
        ok, name = to in _FLOATS, TensorProto.DataType.Name(to)
    if not ok:
        raise ctx.unsupported(
            f"cast to {name}: the encrypted values are real numbers (only float16/float/double/"
            f"bfloat16 casts, which are the identity)"
        )
    return [ctx.value(node.input[0])]
