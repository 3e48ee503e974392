"""The ``normalize`` tensor kind: LayerNormalization, InstanceNormalization, GroupNormalization.

Its input has shape ``[G, n]`` per sample (the converter reshapes): ``G`` groups of statistics
(rows of a layer norm, channels of an instance norm, groups of a group norm), each normalised over
its ``n`` elements, then the affine map of the op::

    y = scale · (x - mean(x)) / sqrt(var(x) + epsilon) + shift      (mean, var over the last axis)

``scale`` and ``shift`` broadcast to ``[G, n]``. CKKS cannot divide by the per-sample standard
deviation; ``replace-norms`` (passes/calibrate_norms.py) replaces it with constants calibrated on
data, where their measured error allows. Attributes: ``epsilon``, ``source`` (the ONNX op type).
"""

from __future__ import annotations

import numpy as np

from hec.ir.core import Op, VerifyError, register_op
from hec.ir.tensor_ops import register_semantics
from hec.ir.types import TensorType

__all__ = ["normalize_rows"]


def normalize_rows(x: np.ndarray, epsilon: float) -> np.ndarray:
    """``(x - mean) / sqrt(var + epsilon)`` over the last axis (the statistics of one group)."""
    centered = x - x.mean(axis=-1, keepdims=True)
    return centered / np.sqrt((centered**2).mean(axis=-1, keepdims=True) + epsilon)


@register_op("normalize", "tensor", 1)
def _normalize_infer(op: Op) -> list[TensorType]:
    t = op.inputs[0].type
    if not isinstance(t, TensorType) or len(t.shape) != 2:
        raise VerifyError(f"normalize ({op.origin}): input must be a [groups, n] tensor")
    for name in ("scale", "shift"):
        c = op.consts[name]
        if np.broadcast_shapes(c.shape, t.shape) != t.shape:
            raise VerifyError(f"normalize ({op.origin}): {name} {c.shape} widens {t.shape}")
    return [TensorType(t.shape)]


def _normalize_eval(op: Op, x: np.ndarray) -> np.ndarray:
    y = normalize_rows(x, float(op.attrs["epsilon"]))
    return y * op.consts["scale"] + op.consts["shift"]


register_semantics("normalize", _normalize_eval)
