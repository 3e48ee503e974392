"""Converters of the ops that are a product of per-axis matrices (the ``axis_maps`` kind):
Resize/Upsample, and AveragePool with ``ceil_mode``/dilations.

Exact: each axis's matrix reproduces onnxruntime's interpolation or averaging weights
(``frontend/axis_maps.py``). What would resize the batch axis, or has no single answer between
ONNX and onnxruntime, is refused with the reason.
"""

from __future__ import annotations

import math

import numpy as np

from hec.frontend.axis_maps import (
    COORDINATE_MODES,
    NEAREST_MODES,
    pool_matrix,
    pool_size,
    resize_matrix,
)
from hec.frontend.context import Context
from hec.frontend.converters import spatial_pads
from hec.frontend.registry import CONVERTERS, converter
from hec.ir import Value

__all__: list[str] = []

# the general converter this module extends (registered by ``converters``, imported above),
# taken before it registers its own
_AVERAGE_POOL = CONVERTERS["AveragePool"]


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
    assert sizes is not None  # one of the two was given (checked above)
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
