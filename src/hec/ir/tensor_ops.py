"""The tensor dialect: op kinds, their shape rules and their numpy semantics.

Shapes are per sample (the ONNX batch axis is gone); the numpy functions take and return arrays
with a leading batch axis. These functions are the reference semantics of hec: the interpreter
runs them, and lowering derives every linear layer's slot matrix from them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

import numpy as np

from hec.ir.activation_functions import ACTIVATIONS
from hec.ir.core import Op, VerifyError, register_op
from hec.ir.types import TensorType

__all__ = [
    "ACTIVATIONS",
    "LINEAR_KINDS",
    "NON_POLYNOMIAL_KINDS",
    "PRUNABLE_KINDS",
    "evaluate_op",
    "register_semantics",
    "conv_output_shape",
    "pool_output_shape",
]

# Kinds whose result is an affine function of their single encrypted input: lowering fuses
# chains of them into one slot matrix. A set: ir/linear_ops.py adds its kinds (register_semantics).
LINEAR_KINDS: set[str] = set(
    {"conv", "matmul", "avgpool", "pad", "reshape", "transpose", "scale_shift", "reduce", "select"}
)

# Kinds CKKS cannot evaluate; replace-activations turns them into polynomials / average pools,
# replace-norms normalizations (ir/norm_ops.py) into calibrated affine maps.
NON_POLYNOMIAL_KINDS = frozenset({"activation", "maxpool", "normalize"})
# ops with a weight tensor that pruning zeroes and recovery refits
PRUNABLE_KINDS = frozenset({"conv", "matmul"})
# ONNX Pad modes besides "constant", as numpy.pad names them
_NUMPY_PAD_MODES: dict[str, Literal["reflect", "edge", "wrap"]] = {
    "reflect": "reflect",
    "edge": "edge",
    "wrap": "wrap",
}

_EVAL: dict[str, Callable[..., np.ndarray]] = {}


def _tensor_op(kind: str, arity: int):
    """Register the shape rule (decorated) of a tensor op; its numpy function goes in _EVAL."""
    return register_op(kind, "tensor", arity)


def register_semantics(kind: str, fn: Callable[..., np.ndarray], linear: bool = False) -> None:
    """Give a tensor op kind defined in another module its numpy semantics (and linearity)."""
    _EVAL[kind] = fn
    if linear:
        LINEAR_KINDS.add(kind)


def _semantics(kind: str):
    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        _EVAL[kind] = fn
        return fn

    return wrap


def evaluate_op(op: Op, *args: np.ndarray) -> np.ndarray:
    """Run one tensor op on batched numpy inputs."""
    return _EVAL[op.kind](op, *args)


def _shape(op: Op, i: int = 0) -> tuple[int, ...]:
    t = op.inputs[i].type
    if not isinstance(t, TensorType):
        raise VerifyError(f"{op.kind} ({op.origin}): input {i} is not a tensor")
    return t.shape


# -- conv -------------------------------------------------------------------------------------
def conv_output_shape(
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
) -> tuple[int, ...]:
    nd = len(spatial)
    return tuple(
        (spatial[i] + pads[i] + pads[i + nd] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        for i in range(nd)
    )


def _windows(xp: np.ndarray, kernel, strides, dilations, out_sp, channels_last: bool = False):
    """Yield (kernel position, strided view [B, C, *out_sp]) for each kernel offset
    (``[B, *out_sp, C]`` views of a ``[B, *spatial, C]`` array with ``channels_last``)."""
    nd = len(kernel)
    for kpos in itertools.product(*(range(k) for k in kernel)):
        sl = tuple(
            slice(
                kpos[i] * dilations[i],
                kpos[i] * dilations[i] + strides[i] * (out_sp[i] - 1) + 1,
                strides[i],
            )
            for i in range(nd)
        )
        yield kpos, xp[(slice(None), *sl)] if channels_last else xp[(slice(None), slice(None), *sl)]


def _pad_spatial(x: np.ndarray, pads: tuple[int, ...], value: float = 0.0) -> np.ndarray:
    nd = len(pads) // 2
    return np.pad(
        x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)], constant_values=value
    )


@_tensor_op("conv", 1)
def _conv_infer(op: Op) -> list[TensorType]:
    c, *spatial = _shape(op)
    w = op.consts["weight"]
    if w.shape[1] != c:
        raise VerifyError(f"conv ({op.origin}): weight expects {w.shape[1]} channels, got {c}")
    out = conv_output_shape(
        tuple(spatial), w.shape[2:], op.attrs["strides"], op.attrs["pads"], op.attrs["dilations"]
    )
    return [TensorType((w.shape[0], *out))]


@_semantics("conv")
def _conv_eval(op: Op, x: np.ndarray) -> np.ndarray:
    w, strides, dil = op.consts["weight"], op.attrs["strides"], op.attrs["dilations"]
    out_sp = conv_output_shape(x.shape[2:], w.shape[2:], strides, op.attrs["pads"], dil)
    # channels last: one BLAS product per kernel position (an einsum over channels-first
    # views is several times slower, which matters when the lowering probes a layer)
    y = np.zeros((x.shape[0], *out_sp, w.shape[0]))
    xp = np.moveaxis(_pad_spatial(x, op.attrs["pads"]), 1, -1)
    for kpos, patch in _windows(xp, w.shape[2:], strides, dil, out_sp, channels_last=True):
        y += patch @ w[(slice(None), slice(None), *kpos)].T
    if "bias" in op.consts:
        y += op.consts["bias"]
    return np.moveaxis(y, -1, 1)


# -- avgpool ----------------------------------------------------------------------------------
def pool_output_shape(spatial, kernel, strides, pads) -> tuple[int, ...]:
    return conv_output_shape(spatial, kernel, strides, pads, (1,) * len(kernel))


@_tensor_op("avgpool", 1)
def _avgpool_infer(op: Op) -> list[TensorType]:
    c, *spatial = _shape(op)
    a = op.attrs
    return [
        TensorType((c, *pool_output_shape(tuple(spatial), a["kernel"], a["strides"], a["pads"])))
    ]


@_semantics("avgpool")
def _avgpool_eval(op: Op, x: np.ndarray) -> np.ndarray:
    a = op.attrs
    kernel, strides, pads = a["kernel"], a["strides"], a["pads"]
    ones = (1,) * len(kernel)
    out_sp = pool_output_shape(x.shape[2:], kernel, strides, pads)
    xp = _pad_spatial(x, pads)
    total = sum(patch for _, patch in _windows(xp, kernel, strides, ones, out_sp))
    if a["count_include_pad"]:
        return total / np.prod(kernel)
    mask = _pad_spatial(np.ones((1, 1, *x.shape[2:])), pads)
    count = sum(patch for _, patch in _windows(mask, kernel, strides, ones, out_sp))
    return total / count


# -- matmul -----------------------------------------------------------------------------------
@_tensor_op("matmul", 1)
def _matmul_infer(op: Op) -> list[TensorType]:
    *lead, k = _shape(op)
    w = op.consts["weight"]
    if w.shape[0] != k:
        raise VerifyError(f"matmul ({op.origin}): weight {w.shape} does not take width {k}")
    return [TensorType((*lead, w.shape[1]))]


@_semantics("matmul")
def _matmul_eval(op: Op, x: np.ndarray) -> np.ndarray:
    y = x @ op.consts["weight"]
    return y + op.consts["bias"] if "bias" in op.consts else y


# -- pad, reshape, transpose, scale_shift -----------------------------------------------------
@_tensor_op("pad", 1)
def _pad_infer(op: Op) -> list[TensorType]:
    shape, pads = _shape(op), op.attrs["pads"]
    n = len(shape)
    return [TensorType(tuple(shape[i] + pads[i] + pads[i + n] for i in range(n)))]


@_semantics("pad")
def _pad_eval(op: Op, x: np.ndarray) -> np.ndarray:
    pads, mode = op.attrs["pads"], op.attrs["mode"]
    n = x.ndim - 1
    # ONNX allows negative pads (crops): crop first, then pad with the non-negative part.
    crop = tuple(slice(max(0, -pads[i]), x.shape[i + 1] - max(0, -pads[i + n])) for i in range(n))
    x = x[(slice(None), *crop)]
    width = [(0, 0)] + [(max(0, pads[i]), max(0, pads[i + n])) for i in range(n)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=op.attrs["value"])
    return np.pad(x, width, mode=_NUMPY_PAD_MODES[mode])


@_tensor_op("reshape", 1)
def _reshape_infer(op: Op) -> list[TensorType]:
    shape = tuple(op.attrs["shape"])
    if int(np.prod(shape)) != int(np.prod(_shape(op))):
        raise VerifyError(f"reshape ({op.origin}): {_shape(op)} cannot become {shape}")
    return [TensorType(shape)]


@_semantics("reshape")
def _reshape_eval(op: Op, x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], *op.attrs["shape"])


@_tensor_op("transpose", 1)
def _transpose_infer(op: Op) -> list[TensorType]:
    shape = _shape(op)
    return [TensorType(tuple(shape[p] for p in op.attrs["perm"]))]


@_semantics("transpose")
def _transpose_eval(op: Op, x: np.ndarray) -> np.ndarray:
    return x.transpose(0, *(p + 1 for p in op.attrs["perm"]))


@_tensor_op("scale_shift", 1)
def _scale_shift_infer(op: Op) -> list[TensorType]:
    shape = _shape(op)
    for name in ("scale", "shift"):
        c = op.consts[name]
        if np.broadcast_shapes(c.shape, shape) != shape:
            raise VerifyError(f"scale_shift ({op.origin}): {name} {c.shape} widens {shape}")
    return [TensorType(shape)]


@_semantics("scale_shift")
def _scale_shift_eval(op: Op, x: np.ndarray) -> np.ndarray:
    return x * op.consts["scale"] + op.consts["shift"]


@_tensor_op("reduce", 1)
def _reduce_infer(op: Op) -> list[TensorType]:
    shape, axes = _shape(op), op.attrs["axes"]
    if op.attrs["mode"] not in ("mean", "sum") or any(not 0 <= a < len(shape) for a in axes):
        raise VerifyError(f"reduce ({op.origin}): bad mode or axes {axes}")
    if op.attrs["keepdims"]:
        return [TensorType(tuple(1 if i in axes else d for i, d in enumerate(shape)))]
    return [TensorType(tuple(d for i, d in enumerate(shape) if i not in axes))]


@_semantics("reduce")
def _reduce_eval(op: Op, x: np.ndarray) -> np.ndarray:
    fn = np.mean if op.attrs["mode"] == "mean" else np.sum
    return fn(x, axis=tuple(a + 1 for a in op.attrs["axes"]), keepdims=bool(op.attrs["keepdims"]))


# -- select: pure data movement (Gather, Slice, Concat, Tile, DepthToSpace, ...) -----------
@_tensor_op("select", 1)
def _select_infer(op: Op) -> list[TensorType]:
    shape, index = tuple(op.attrs["shape"]), op.consts["index"]
    size = int(np.prod(_shape(op)))
    if index.shape != shape or (index.size and not -1 <= index.min() <= index.max() < size):
        raise VerifyError(f"select ({op.origin}): index {index.shape} does not fit {shape}/{size}")
    return [TensorType(shape)]


@_semantics("select")
def _select_eval(op: Op, x: np.ndarray) -> np.ndarray:
    """``y.flat[o] = x.flat[index[o]]`` per sample; index -1 reads the appended zero."""
    flat = x.reshape(x.shape[0], -1)
    flat = np.concatenate([flat, np.zeros((x.shape[0], 1), dtype=flat.dtype)], axis=1)
    index = op.consts["index"].astype(np.int64).reshape(-1)
    return flat[:, index].reshape(x.shape[0], *op.attrs["shape"])


# -- non-polynomial activations and max pooling (replaced before lowering) -------------------
@_tensor_op("activation", 1)
def _activation_infer(op: Op) -> list[TensorType]:
    if op.attrs["fn"] not in ACTIVATIONS:
        raise VerifyError(f"activation ({op.origin}): unknown function {op.attrs['fn']!r}")
    return [TensorType(_shape(op))]


@_semantics("activation")
def _activation_eval(op: Op, x: np.ndarray) -> np.ndarray:
    return ACTIVATIONS[op.attrs["fn"]](x, op.attrs.get("alpha", 0.0))


register_op("maxpool", "tensor", 1)(_avgpool_infer)


@_semantics("maxpool")
def _maxpool_eval(op: Op, x: np.ndarray) -> np.ndarray:
    a = op.attrs
    kernel, strides, pads = a["kernel"], a["strides"], a["pads"]
    out_sp = pool_output_shape(x.shape[2:], kernel, strides, pads)
    xp = _pad_spatial(x, pads, value=-np.inf)
    windows = [patch for _, patch in _windows(xp, kernel, strides, (1,) * len(kernel), out_sp)]
    return np.max(windows, axis=0)


# -- ops on two encrypted tensors, and polynomials --------------------------------------------
def _same_shapes(op: Op) -> list[TensorType]:
    a, b = _shape(op, 0), _shape(op, 1)
    if a != b:
        raise VerifyError(f"{op.kind} ({op.origin}): shapes {a} and {b} differ")
    return [TensorType(a)]


register_op("add", "tensor", 2)(_same_shapes)
register_op("mul", "tensor", 2)(_same_shapes)
_semantics("add")(lambda op, x, y: x + y)
_semantics("mul")(lambda op, x, y: x * y)


@_tensor_op("poly", 1)
def _poly_infer(op: Op) -> list[TensorType]:
    if len(op.attrs["coeffs"]) < 2:
        raise VerifyError(f"poly ({op.origin}): degree below 1")
    return [TensorType(_shape(op))]


@_semantics("poly")
def _poly_eval(op: Op, x: np.ndarray) -> np.ndarray:
    return np.polynomial.chebyshev.chebval(x, op.attrs["coeffs"])
