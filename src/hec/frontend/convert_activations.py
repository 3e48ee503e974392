"""Converters of the non-polynomial ops: activations and max pooling.

They become ``activation`` / ``maxpool`` ops of the tensor dialect; ``replace-activations``
later turns them into calibrated polynomials (and average pooling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hec.frontend.converters import converter, spatial_pads
from hec.ir.tensor_ops import pool_output_shape

if TYPE_CHECKING:
    from hec.frontend.importer import Context

__all__: list[str] = []


_ACTIVATION_OPS = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softplus": "softplus",
    "Erf": "erf",
    "Elu": "elu",
}


@converter(*_ACTIVATION_OPS, "Gelu")
def _activation(ctx: Context, node, attrs) -> list:
    """Non-polynomial activations; ``replace-activations`` fits polynomials to them."""
    x = ctx.value(node.input[0])
    if node.op_type == "Gelu":
        approx = attrs.get("approximate", b"none")
        fn = (
            "gelu_tanh"
            if (approx.decode() if isinstance(approx, bytes) else approx) == "tanh"
            else "gelu"
        )
        return [ctx.emit("activation", [x], x.shape, {"fn": fn})]
    a = {"fn": _ACTIVATION_OPS[node.op_type]}
    if node.op_type in ("LeakyRelu", "Elu"):
        a["alpha"] = float(attrs.get("alpha", 0.01 if node.op_type == "LeakyRelu" else 1.0))
    return [ctx.emit("activation", [x], x.shape, a)]


@converter("MaxPool")
def _maxpool(ctx: Context, node, attrs) -> list:
    """Max pooling; ``replace-activations`` turns it into average pooling (approximation)."""
    x = ctx.value(node.input[0])
    if len(node.output) > 1 and node.output[1]:
        raise ctx.unsupported("the indices output is used")
    spatial = x.shape[1:]
    nd = len(spatial)
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", (1,) * nd))
    if any(d != 1 for d in attrs.get("dilations", (1,) * nd)) or attrs.get("ceil_mode", 0):
        raise ctx.unsupported("dilated or ceil_mode max pooling")
    pads = spatial_pads(ctx, attrs, spatial, kernel, strides, (1,) * nd)
    out = pool_output_shape(spatial, kernel, strides, pads)
    a = {"kernel": kernel, "strides": strides, "pads": pads, "count_include_pad": 0}
    return [ctx.emit("maxpool", [x], (x.shape[0], *out), a)]
