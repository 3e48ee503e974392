"""Torch forms of the ``ir/linear_ops.py`` kinds for ``TorchGraph``; each mirrors the kind's
numpy semantics, with the op's constants as the (trainable) parameters ``p(name)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hec.ir import Op
from hec.train import require_torch

__all__ = ["TORCH_FORMS"]

torch = require_torch()
F = torch.nn.functional


def _axis_maps(p: Callable[[str], Any], op: Op, x):
    for i, a in enumerate(op.attrs["axes"]):
        x = torch.movedim(torch.tensordot(x, p(f"map{i}"), dims=([a + 1], [1])), -1, a + 1)
    return x


def _conv_transpose(p: Callable[[str], Any], op: Op, x):
    a = op.attrs
    nd = x.dim() - 2
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    y = conv(x, p("weight"), None, stride=a["strides"], dilation=a["dilations"])
    # output_padding rows get no input: zeros at the end; then the pads are cropped
    widths = []
    for j in reversed(range(nd)):
        widths += [0, a["output_padding"][j]]
    y = F.pad(y, widths)
    pads = a["pads"]
    y = y[
        (
            slice(None),
            slice(None),
            *(slice(pads[j], y.shape[j + 2] - pads[j + nd]) for j in range(nd)),
        )
    ]
    return y + p("bias").reshape(-1, *[1] * nd) if "bias" in op.consts else y


def _einsum(p: Callable[[str], Any], op: Op, x):
    return torch.einsum(op.attrs["equation"], x, p("operand"))


TORCH_FORMS: dict[str, Callable[[Callable[[str], Any], Op, Any], Any]] = {
    "axis_maps": _axis_maps,
    "conv_transpose": _conv_transpose,
    "einsum": _einsum,
}
