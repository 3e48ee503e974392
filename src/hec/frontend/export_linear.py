"""ONNX forms of the ``ir/linear_ops.py`` kinds, for ``export_onnx`` (``hec optimize`` writes the
HE-friendly model back to ONNX). Each is exact up to float32 rounding of the constants.
"""

from __future__ import annotations

import string
from collections.abc import Callable

from hec.frontend.onnx_writer import HELPER, OnnxWriter
from hec.ir import Op

__all__ = ["LINEAR_EXPORTS"]


def _axis_maps(w: OnnxWriter, op: Op, x: list[str], out: str, name: str) -> None:
    """One Einsum per mapped axis: ``y[..., o, ...] = Σ_i m[o, i] x[..., i, ...]``."""
    src = string.ascii_lowercase[: len(op.inputs[0].shape) + 1]
    t, axes = x[0], op.attrs["axes"]
    for i, a in enumerate(axes):
        dst = src[: a + 1] + "z" + src[a + 2 :]
        last = i == len(axes) - 1
        t = w.node(
            "Einsum",
            [t, w.const(op.consts[f"map{i}"])],
            out if last else None,
            name if last else f"{name}{HELPER}axis{a}",
            equation=f"{src},z{src[a + 1]}->{dst}",
        )


def _conv_transpose(w: OnnxWriter, op: Op, x: list[str], out: str, name: str) -> None:
    a, c = op.attrs, op.consts
    ins = [x[0], w.const(c["weight"])] + ([w.const(c["bias"])] if "bias" in c else [])
    attrs = {k: list(a[k]) for k in ("strides", "pads", "dilations", "output_padding")}
    w.node("ConvTranspose", ins, out, name, **attrs)  # the weight is group-expanded


def _einsum(w: OnnxWriter, op: Op, x: list[str], out: str, name: str) -> None:
    lhs, result = op.attrs["equation"].split("->")
    xt, ct = lhs.split(",")
    c = op.consts["operand"]
    if ct:
        w.node("Einsum", [x[0], w.const(c)], out, name, equation=op.attrs["equation"])
    elif float(c) == 1.0:  # a one-operand equation
        w.node("Einsum", [x[0]], out, name, equation=f"{xt}->{result}")
    else:  # times a scalar constant
        t = w.node("Einsum", [x[0]], None, f"{name}{HELPER}einsum", equation=f"{xt}->{result}")
        w.node("Mul", [t, w.const(c)], out, name)


LINEAR_EXPORTS: dict[str, Callable[[OnnxWriter, Op, list[str], str, str], None]] = {
    "axis_maps": _axis_maps,
    "conv_transpose": _conv_transpose,
    "einsum": _einsum,
}
