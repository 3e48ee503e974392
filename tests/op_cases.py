"""One small ONNX model per supported op (and per exporter habit), random weights, fixed seeds.

Each case returns ``(model, x)``. ``FAMILIES`` picks one case per op family for the slow
encrypted tier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from onnx_builders import ModelBuilder

Case = Callable[[], tuple[onnx.ModelProto, np.ndarray]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def _x(*shape: int, seed: int = 1, batch: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(batch, *shape)).astype(np.float32)


@case
def conv_basic():
    b = ModelBuilder((1, 6, 6))
    return b.build(
        b.node("Conv", ["input", b.weight(3, 1, 3, 3), b.weight(3)], pads=[1, 1, 1, 1])
    ), _x(1, 6, 6)


@case
def conv_strided_asymmetric():
    b = ModelBuilder((2, 7, 7))
    return b.build(
        b.node("Conv", ["input", b.weight(3, 2, 3, 3)], strides=[2, 2], pads=[0, 1, 1, 0])
    ), _x(2, 7, 7)


@case
def conv_dilated():
    b = ModelBuilder((1, 8, 8))
    return b.build(
        b.node(
            "Conv",
            ["input", b.weight(2, 1, 3, 3), b.weight(2)],
            dilations=[2, 2],
            pads=[2, 2, 2, 2],
        )
    ), _x(1, 8, 8)


@case
def conv_same_upper():
    b = ModelBuilder((1, 7, 7))
    return b.build(
        b.node("Conv", ["input", b.weight(2, 1, 4, 4)], strides=[2, 2], auto_pad="SAME_UPPER")
    ), _x(1, 7, 7)


@case
def conv1d():
    b = ModelBuilder((2, 10))
    return b.build(b.node("Conv", ["input", b.weight(3, 2, 3), b.weight(3)], pads=[1, 1])), _x(
        2, 10
    )


@case
def gemm_trans_b():
    b = ModelBuilder((12,))
    return b.build(
        b.node("Gemm", ["input", b.weight(5, 12), b.weight(5)], transB=1, alpha=0.5, beta=2.0)
    ), _x(12)


@case
def gemm_plain():
    b = ModelBuilder((12,))
    return b.build(b.node("Gemm", ["input", b.weight(12, 4), b.weight(1, 4)])), _x(12)


@case
def matmul_add_3d():
    b = ModelBuilder((4, 16))
    h = b.node("MatMul", ["input", b.weight(16, 8)])
    return b.build(b.node("Add", [h, b.weight(8)])), _x(4, 16)


@case
def scale_shift_consts():
    b = ModelBuilder((2, 3, 3))
    h = b.node("Mul", ["input", b.weight(2, 1, 1)])
    h = b.node("Add", [h, b.weight(1, 3)])
    h = b.node("Sub", [h, b.const(np.array(0.25))])
    h = b.node("Div", [h, b.const(np.array([2.0]))])
    h = b.node("Sub", [b.weight(1, 2, 3, 3), h])
    return b.build(b.node("Neg", [h])), _x(2, 3, 3)


@case
def batchnorm():
    b = ModelBuilder((2, 5, 5))
    h = b.node("Conv", ["input", b.weight(3, 2, 3, 3)])
    var = b.const(np.abs(b.rng.normal(1, 0.3, 3)) + 0.1)
    return b.build(
        b.node("BatchNormalization", [h, b.weight(3), b.weight(3), b.weight(3), var], epsilon=1e-3)
    ), _x(2, 5, 5)


@case
def avgpool_pads():
    b = ModelBuilder((2, 6, 6))
    h = b.node(
        "AveragePool",
        ["input"],
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        count_include_pad=0,
    )
    return b.build(h), _x(2, 6, 6)


@case
def avgpool_include_pad():
    b = ModelBuilder((1, 6, 6))
    return b.build(
        b.node(
            "AveragePool",
            ["input"],
            kernel_shape=[2, 2],
            strides=[1, 1],
            pads=[1, 0, 1, 0],
            count_include_pad=1,
        )
    ), _x(1, 6, 6)


@case
def global_avgpool():
    b = ModelBuilder((3, 4, 4))
    return b.build(b.node("GlobalAveragePool", ["input"])), _x(3, 4, 4)


@case
def reduce_mean_sum():
    b = ModelBuilder((3, 4, 4), opset=18)
    h = b.node("ReduceMean", ["input", b.const(np.array([-1, -2]), np.int64)], keepdims=1)
    h = b.node("Flatten", [h])
    m = b.node("ReduceSum", ["input", b.const(np.array([1]), np.int64)], keepdims=0)
    m = b.node("Flatten", [m])
    return b.build(
        b.node("Add", [b.node("Gemm", [h, b.weight(3, 4)]), b.node("Gemm", [m, b.weight(16, 4)])])
    ), _x(3, 4, 4)


@case
def pad_modes():
    b = ModelBuilder((1, 4, 4))
    h = b.node(
        "Pad",
        ["input", b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1]), np.int64), b.const(np.array(0.5))],
    )
    h = b.node("Pad", [h, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]), np.int64)], mode="reflect")
    return b.build(
        b.node("Pad", [h, b.const(np.array([0, 1, 0, 0, 0, 0, 0, 1]), np.int64)], mode="edge")
    ), _x(1, 4, 4)


@case
def reshape_flatten():
    b = ModelBuilder((2, 3, 4))
    h = b.node("Reshape", ["input", b.const(np.array([0, 6, -1]), np.int64)])
    h = b.node("Transpose", [h], perm=[0, 2, 1])
    h = b.node("Flatten", [h])
    h = b.node("Unsqueeze", [h, b.const(np.array([1]), np.int64)])
    return b.build(b.node("Squeeze", [h, b.const(np.array([1]), np.int64)])), _x(2, 3, 4)


@case
def shape_chain_reshape():
    """TorchScript's ``x.view(x.size(0), -1)``: Shape → Gather → Unsqueeze → Concat → Reshape."""
    b = ModelBuilder((2, 3, 3))
    s = b.node("Shape", ["input"])
    g = b.node("Gather", [s, b.const(np.array(0), np.int64)], axis=0)
    u = b.node("Unsqueeze", [g, b.const(np.array([0]), np.int64)])
    c = b.node("Concat", [u, b.const(np.array([-1]), np.int64)], axis=0)
    h = b.node("Reshape", ["input", c])
    w = b.node("Transpose", [b.weight(4, 18)], perm=[1, 0])  # constant: folded
    return b.build(b.node("MatMul", [h, w])), _x(2, 3, 3)


@case
def identity_dropout():
    b = ModelBuilder((6,))
    h = b.node("Identity", ["input"])
    h = b.node("Dropout", [h])
    return b.build(b.node("Gemm", [h, b.weight(6, 3)])), _x(6)


@case
def square_mul():
    b = ModelBuilder((1, 4, 4))
    h = b.node("Conv", ["input", b.weight(2, 1, 3, 3), b.weight(2)], pads=[1, 1, 1, 1])
    return b.build(b.node("Mul", [h, h])), _x(1, 4, 4)


@case
def square_pow():
    b = ModelBuilder((8,))
    h = b.node("Gemm", ["input", b.weight(8, 8), b.weight(8)])
    return b.build(b.node("Pow", [h, b.const(np.array(2.0))])), _x(8)


@case
def pow_cubic():
    b = ModelBuilder((8,))
    h = b.node("Gemm", ["input", b.weight(8, 6)])
    return b.build(b.node("Pow", [h, b.const(np.array(3.0))])), _x(8)


@case
def residual_same_source():
    b = ModelBuilder((2, 5, 5))
    h = b.node("Conv", ["input", b.weight(2, 2, 3, 3), b.weight(2)], pads=[1, 1, 1, 1])
    return b.build(b.node("Add", [h, "input"])), _x(2, 5, 5)


@case
def residual_across_levels():
    """``y + y²``: the two branches sit at different levels and must be aligned."""
    b = ModelBuilder((6,))
    y = b.node("Gemm", ["input", b.weight(6, 6), b.weight(6)])
    sq = b.node("Mul", [y, y])
    z = b.node("Add", [y, sq])
    return b.build(b.node("Sub", [z, b.node("Gemm", [z, b.weight(6, 6)])])), _x(6)


@case
def mul_two_encrypted():
    b = ModelBuilder((6,))
    p = b.node("Gemm", ["input", b.weight(6, 4), b.weight(4)])
    q = b.node("Gemm", ["input", b.weight(6, 4)])
    return b.build(b.node("Mul", [p, q])), _x(6)


@case
def cryptonets_like():
    b = ModelBuilder((1, 8, 8))
    h = b.node(
        "Conv",
        ["input", b.weight(3, 1, 3, 3, scale=0.4), b.weight(3)],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
    )
    h = b.node("Mul", [h, h])
    h = b.node("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Flatten", [h])
    h = b.node("Gemm", [h, b.weight(6, 12, scale=0.3), b.weight(6)], transB=1)
    h = b.node("Mul", [h, h])
    return b.build(b.node("Gemm", [h, b.weight(4, 6), b.weight(4)], transB=1)), _x(1, 8, 8)


@case
def concat_slice_gather():
    """Data movement: Slice (negative step), Concat of two encrypted tensors, Gather."""
    b = ModelBuilder((2, 4, 4), opset=18)
    i64 = np.int64
    s = b.node(
        "Slice",
        [
            "input",
            b.const(np.array([-1]), i64),
            b.const(np.array([-5]), i64),
            b.const(np.array([-1]), i64),
            b.const(np.array([-1]), i64),
        ],
    )
    c = b.node("Conv", ["input", b.weight(1, 2, 1, 1)])
    h = b.node("Concat", [s, c], axis=1)
    h = b.node("Gather", [h, b.const(np.array([2, 0, 0]), i64)], axis=1)
    h = b.node("Flatten", [b.node("Mul", [h, h])])
    return b.build(b.node("Gemm", [h, b.weight(3, 48)], transB=1)), _x(2, 4, 4)


@case
def depth_to_space_tile():
    b = ModelBuilder((4, 2, 2))
    h = b.node("DepthToSpace", ["input"], blocksize=2, mode="CRD")
    h = b.node("Tile", [h, b.const(np.array([1, 2, 1, 1]), np.int64)])
    return b.build(b.node("Conv", [h, b.weight(2, 2, 3, 3), b.weight(2)])), _x(4, 2, 2)


@case
def conv_grouped_depthwise():
    b = ModelBuilder((4, 6, 6))
    h = b.node("Conv", ["input", b.weight(4, 1, 3, 3), b.weight(4)], group=4, pads=[1] * 4)
    h = b.node("Mul", [h, h])
    return b.build(b.node("Conv", [h, b.weight(6, 2, 3, 3)], group=2, strides=[2, 2])), _x(4, 6, 6)


# One case per op family for the encrypted (slow) tier.
FAMILIES = [
    "conv_strided_asymmetric",
    "gemm_trans_b",
    "matmul_add_3d",
    "scale_shift_consts",
    "batchnorm",
    "avgpool_pads",
    "reduce_mean_sum",
    "global_avgpool",
    "pad_modes",
    "reshape_flatten",
    "square_pow",
    "pow_cubic",
    "residual_across_levels",
    "mul_two_encrypted",
    "concat_slice_gather",
    "conv_grouped_depthwise",
]
