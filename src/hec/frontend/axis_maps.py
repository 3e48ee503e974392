"""1-D matrices ``[out, in]`` of ONNX resizing and average pooling along one axis.

Resize (nearest, linear, cubic) and AveragePool (any ``ceil_mode``, dilations, pads) act on each
spatial axis independently, so the op is the product of one small matrix per axis (the
``axis_maps`` tensor kind). Coordinates are computed in float32 as onnxruntime does, so that
nearest-neighbour ties round the same way.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["COORDINATE_MODES", "NEAREST_MODES", "pool_size", "pool_matrix", "resize_matrix"]

F = np.float32
COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _source(
    x: int, n_in: int, n_out: int, scale: float, mode: str, roi: tuple[float, float] = (0, 1)
) -> np.float32:
    """Where output index ``x`` samples the input (ONNX's coordinate_transformation_mode)."""
    xs, s = F(x), F(scale)
    if mode == "tf_crop_and_resize":
        start, end = F(roi[0]), F(roi[1])
        if n_out == 1:
            return F(0.5) * (start + end) * F(n_in - 1)
        return start * F(n_in - 1) + xs * (end - start) * F(n_in - 1) / F(n_out - 1)
    if mode == "half_pixel":
        return (xs + F(0.5)) / s - F(0.5)
    if mode == "half_pixel_symmetric":
        adjust = F(n_out) / (s * F(n_in))
        offset = F(n_in) / F(2) * (F(1) - adjust)
        return offset + (xs + F(0.5)) / s - F(0.5)
    if mode == "pytorch_half_pixel":
        return (xs + F(0.5)) / s - F(0.5) if n_out > 1 else F(0)
    if mode == "align_corners":
        return F(0) if n_out == 1 else xs * F(n_in - 1) / F(n_out - 1)
    if mode == "asymmetric":
        return xs / s
    if mode == "tf_half_pixel_for_nn":
        return (xs + F(0.5)) / s
    raise ValueError(f"coordinate_transformation_mode {mode!r}")


def _nearest(c: np.float32, mode: str, downsampling: bool) -> int:
    if mode == "round_prefer_floor":
        return math.floor(c) if c == math.floor(c) + F(0.5) else round(float(c))
    if mode == "round_prefer_ceil":
        return math.floor(c + F(0.5))
    if mode == "floor":
        return math.floor(c)
    if mode == "ceil":
        return math.ceil(c)
    if mode == "simple":  # Upsample and Resize-10: ceil when shrinking, truncation otherwise
        return math.ceil(c) if downsampling else int(c)
    raise ValueError(f"nearest_mode {mode!r}")


def _cubic_kernel(d: np.ndarray, a: float) -> np.ndarray:
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _cubic(t: float, a: float) -> np.ndarray:
    """Weights of the taps at offsets -1, 0, 1, 2 from ``floor(c)``, ``t = c - floor(c)``."""
    return _cubic_kernel(np.array([t + 1, t, 1 - t, 2 - t]), a)


def _antialiased_row(
    c: float, n_in: int, scale: float, mode: str, a: float, exclude_outside: bool
) -> np.ndarray:
    """One output's weights with ONNX ``antialias``: the interpolation kernel stretched by
    ``1/scale`` when shrinking, normalised, taps past the border folded onto the edge pixel."""
    width = 1.0 / scale if scale < 1 else 1.0
    support = (1.0 if mode == "linear" else 2.0) * width
    center = c + 0.5
    taps = np.arange(math.floor(center - support + 0.5), math.floor(center + support + 0.5))
    t = (taps - center + 0.5) / width
    w = np.maximum(0.0, 1.0 - np.abs(t)) if mode == "linear" else _cubic_kernel(t, a)
    if exclude_outside:
        w = np.where((taps >= 0) & (taps < n_in), w, 0.0)
    row = np.zeros(n_in)
    np.add.at(row, np.clip(taps, 0, n_in - 1), w / w.sum())
    return row


def resize_matrix(
    n_in: int,
    n_out: int,
    scale: float,
    mode: str,
    coordinate_mode: str,
    nearest_mode: str = "round_prefer_floor",
    cubic_a: float = -0.75,
    exclude_outside: bool = False,
    antialias: bool = False,
    roi: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """The ``[n_out, n_in]`` matrix of one axis of ONNX Resize (``scale`` as the model gives it).

    With ``tf_crop_and_resize`` an output sampling outside the input gets a zero row: there
    the op writes ``extrapolation_value``, which the caller accepts only when it is 0.
    """
    m = np.zeros((n_out, n_in))
    for x in range(n_out):
        c = _source(x, n_in, n_out, scale, coordinate_mode, roi)
        if coordinate_mode == "tf_crop_and_resize" and not 0 <= c <= n_in - 1:
            continue
        if antialias and mode in ("linear", "cubic"):
            m[x] = _antialiased_row(float(c), n_in, scale, mode, cubic_a, exclude_outside)
        elif mode == "nearest":
            m[x, min(max(_nearest(c, nearest_mode, scale < 1), 0), n_in - 1)] = 1.0
        elif mode == "linear":
            at = min(max(float(c), 0.0), n_in - 1.0)
            lo = math.floor(at)
            hi = min(lo + 1, n_in - 1)
            m[x, lo] += 1.0 - (at - lo)
            m[x, hi] += at - lo
        elif mode == "cubic":
            lo = math.floor(c)
            w = _cubic(float(c) - lo, cubic_a)
            taps = np.arange(lo - 1, lo + 3)
            if exclude_outside:
                w = np.where((taps >= 0) & (taps < n_in), w, 0.0)
                w = w / w.sum()
            np.add.at(m[x], np.clip(taps, 0, n_in - 1), w)
        else:
            raise ValueError(f"mode {mode!r}")
    return m


def pool_size(n: int, kernel: int, stride: int, pads: tuple[int, int], dil: int, ceil: bool) -> int:
    """Output length of a pooling window along one axis, as onnxruntime computes it.

    With ``ceil_mode`` a last window that would start in the end padding is dropped.
    """
    span = dil * (kernel - 1) + 1
    if not ceil:
        return (n + pads[0] + pads[1] - span) // stride + 1
    out = math.ceil((n + pads[0] + pads[1] - span) / stride) + 1
    return out - 1 if (out - 1) * stride >= n + pads[0] else out


def pool_matrix(
    n: int, kernel: int, stride: int, pads: tuple[int, int], dil: int, ceil: bool, include: bool
) -> np.ndarray:
    """The ``[out, n]`` averaging matrix along one axis.

    The divisor counts the window's taps inside the input, or with ``include`` (ONNX
    ``count_include_pad``) inside the padded input; taps past the end padding, which only
    ``ceil_mode`` creates, never count. Divisors of a box window multiply across axes, so
    the product of these matrices is the whole pooling.
    """
    m = np.zeros((pool_size(n, kernel, stride, pads, dil, ceil), n))
    for o in range(m.shape[0]):
        taps = [o * stride - pads[0] + j * dil for j in range(kernel)]
        inside = [t for t in taps if 0 <= t < n]
        count = sum(-pads[0] <= t < n + pads[1] for t in taps) if include else len(inside)
        if count:  # a window wholly in the padding averages nothing
            m[o, inside] += 1.0 / count
    return m
