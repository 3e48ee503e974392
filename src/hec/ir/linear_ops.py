"""More linear tensor ops: per-axis maps, transposed convolution, einsum with a constant.

Like ``tensor_ops``, shapes are per sample and the numpy functions take a leading batch axis.
Each kind is registered in ``LINEAR_KINDS``: lowering reads its slot matrix off these functions
(``affine_map``), so fusion and rotation scheduling need nothing more.

- ``axis_maps``: ``y = x ×_a M_a`` for each listed axis ``a`` (``M_a`` of shape ``[out, in]``);
  resizing (nearest, linear) and average pooling with ``ceil_mode``/dilations are of this form.
- ``conv_transpose``: ONNX ConvTranspose with group 1 (groups are expanded block-diagonally).
- ``einsum``: ``np.einsum(equation, x, operand)`` with explicit labels, the batch label first.
"""

from __future__ import annotations

import itertools

import numpy as np

from hec.ir.core import Op, VerifyError, register_op
from hec.ir.tensor_ops import register_semantics
from hec.ir.types import TensorType

__all__ = ["KINDS", "conv_transpose_output_shape", "einsum_output_shape"]

KINDS = ("axis_maps", "conv_transpose", "einsum")


def _shape(op: Op) -> tuple[int, ...]:
    t = op.inputs[0].type
    if not isinstance(t, TensorType):
        raise VerifyError(f"{op.kind} ({op.origin}): input is not a tensor")
    return t.shape


# -- axis_maps --------------------------------------------------------------------------------
@register_op("axis_maps", "tensor", 1)
def _axis_maps_infer(op: Op) -> list[TensorType]:
    shape = list(_shape(op))
    for i, a in enumerate(op.attrs["axes"]):
        m = op.consts[f"map{i}"]
        if not 0 <= a < len(shape) or m.ndim != 2 or m.shape[1] != shape[a]:
            raise VerifyError(f"axis_maps ({op.origin}): map {m.shape} does not fit axis {a}")
        shape[a] = m.shape[0]
    return [TensorType(tuple(shape))]


def _axis_maps_eval(op: Op, x: np.ndarray) -> np.ndarray:
    for i, a in enumerate(op.attrs["axes"]):
        x = np.moveaxis(np.tensordot(x, op.consts[f"map{i}"], axes=([a + 1], [1])), -1, a + 1)
    return x


# -- conv_transpose ---------------------------------------------------------------------------
def conv_transpose_output_shape(spatial, kernel, strides, pads, dilations, output_padding):
    nd = len(spatial)
    return tuple(
        strides[i] * (spatial[i] - 1)
        + output_padding[i]
        + dilations[i] * (kernel[i] - 1)
        + 1
        - pads[i]
        - pads[i + nd]
        for i in range(nd)
    )


@register_op("conv_transpose", "tensor", 1)
def _conv_transpose_infer(op: Op) -> list[TensorType]:
    c, *spatial = _shape(op)
    w, a = op.consts["weight"], op.attrs
    if w.shape[0] != c:
        raise VerifyError(f"conv_transpose ({op.origin}): weight takes {w.shape[0]} channels")
    out = conv_transpose_output_shape(
        spatial, w.shape[2:], a["strides"], a["pads"], a["dilations"], a["output_padding"]
    )
    if min(out) < 1:
        raise VerifyError(f"conv_transpose ({op.origin}): empty output {out}")
    return [TensorType((w.shape[1], *out))]


def _conv_transpose_eval(op: Op, x: np.ndarray) -> np.ndarray:
    w, a = op.consts["weight"], op.attrs
    strides, dil, pads = a["strides"], a["dilations"], a["pads"]
    spatial, kernel = x.shape[2:], w.shape[2:]
    nd = len(spatial)
    zero = (0,) * (2 * nd)
    # Scatter every input pixel times every kernel tap into the unpadded output, then crop.
    full = conv_transpose_output_shape(spatial, kernel, strides, zero, dil, a["output_padding"])
    y = np.zeros((x.shape[0], w.shape[1], *full))
    for kpos in itertools.product(*(range(k) for k in kernel)):
        start = [kpos[i] * dil[i] for i in range(nd)]
        at = tuple(
            slice(start[i], start[i] + strides[i] * (spatial[i] - 1) + 1, strides[i])
            for i in range(nd)
        )
        tap: tuple[slice | int, ...] = (slice(None), slice(None), *kpos)
        y[(slice(None), slice(None), *at)] += np.einsum("bc...,co->bo...", x, w[tap])
    y = y[(slice(None), slice(None), *(slice(pads[i], full[i] - pads[i + nd]) for i in range(nd)))]
    if "bias" in op.consts:
        y = y + op.consts["bias"].reshape(-1, *[1] * nd)
    return y


# -- einsum -----------------------------------------------------------------------------------
def einsum_output_shape(equation: str, x_shape, c_shape) -> tuple[int, ...]:
    """Output shape of an explicit, ellipsis-free ``equation`` on ``(x, c)``."""
    inputs, out = equation.split("->")
    sizes: dict[str, int] = {}
    for labels, shape in zip(inputs.split(","), (x_shape, c_shape), strict=True):
        if len(labels) != len(shape):
            raise ValueError(f"labels {labels!r} do not fit shape {tuple(shape)}")
        for label, d in zip(labels, shape, strict=True):
            if sizes.setdefault(label, d) != d:
                raise ValueError(f"label {label!r} has sizes {sizes[label]} and {d}")
    return tuple(sizes[label] for label in out)


@register_op("einsum", "tensor", 1)
def _einsum_infer(op: Op) -> list[TensorType]:
    eq = op.attrs["equation"]
    try:
        out = einsum_output_shape(eq, (1, *_shape(op)), op.consts["operand"].shape)
    except ValueError as exc:
        raise VerifyError(f"einsum ({op.origin}): {exc}") from None
    if eq.split("->")[1][:1] != eq[0] or eq[0] in eq.split("->")[0][1:]:
        raise VerifyError(f"einsum ({op.origin}): {eq!r} does not keep the batch label first")
    return [TensorType(out[1:])]


def _einsum_eval(op: Op, x: np.ndarray) -> np.ndarray:
    return np.einsum(op.attrs["equation"], x, op.consts["operand"])


register_semantics("axis_maps", _axis_maps_eval, linear=True)
register_semantics("conv_transpose", _conv_transpose_eval, linear=True)
register_semantics("einsum", _einsum_eval, linear=True)
