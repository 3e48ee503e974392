"""drop-dead-channels: constant channels fold into the next bias, unread ones leave the tensors."""

from __future__ import annotations

import numpy as np

from hec.frontend import import_onnx
from hec.ir import interpret
from hec.passes.drop_channels import DropDeadChannels
from hec.passes.fuse_polynomials import FusePolynomials
from hec.recover import prunable_ops

from onnx_builders import ModelBuilder, conv_pool_conv


def _graph(model):
    g = import_onnx(model)
    FusePolynomials().run(g)
    return g


def test_unread_and_constant_channels_leave_every_tensor_exactly() -> None:
    g = _graph(conv_pool_conv(c1=3, c2=4, k=3, pool=2, size=12))
    conv1, conv2, dense = prunable_ops(g)
    w1, w2, w3 = (op.consts["weight"].copy() for op in (conv1, conv2, dense))
    w1[1] = 0.0  # conv1 filter 1: constant (its bias through the square)
    w2[:, 2] = 0.0  # conv2 reads conv1 channel 2 with zeros only: unread
    w2[3] = 0.0  # conv2 filter 3: constant, read by the dense layer
    for op, w in zip((conv1, conv2), (w1, w2), strict=True):
        op.consts = {**op.consts, "weight": w}
    x = np.random.default_rng(0).normal(size=(16, 1, 12, 12))
    before = interpret(g, x)[0]

    assert DropDeadChannels().run(g)
    g.verify()
    conv1, conv2, dense = prunable_ops(g)
    assert conv1.result.shape == (1, 12, 12)  # channel 0 only: 1 folded, 2 unread
    assert conv2.consts["weight"].shape == (3, 1, 3, 3)
    assert dense.consts["weight"].shape[0] == 3 * 4 * 4  # flattened rows of 3 channels
    np.testing.assert_allclose(interpret(g, x)[0], before, rtol=1e-10, atol=1e-10)
    assert not DropDeadChannels().run(g)  # nothing left to drop


def test_a_constant_channel_a_padded_convolution_reads_differently_stays() -> None:
    """Zero padding makes a constant channel's contribution differ at the border: that is
    not a bias, so the channel is kept (and the function is unchanged)."""
    b = ModelBuilder((1, 8, 8), seed=3)
    t = b.node("Conv", ["input", b.weight(2, 1, 3, 3), b.weight(2)], pads=[1] * 4)
    t = b.node("Mul", [t, t])
    t = b.node("Conv", [t, b.weight(2, 2, 3, 3), b.weight(2)], pads=[1] * 4)
    g = _graph(b.build(t))
    conv1 = prunable_ops(g)[0]
    w = conv1.consts["weight"].copy()
    w[0] = 0.0
    conv1.consts = {**conv1.consts, "weight": w}
    x = np.random.default_rng(1).normal(size=(4, 1, 8, 8))
    before = interpret(g, x)[0]
    assert not DropDeadChannels().run(g)
    assert conv1.result.shape == (2, 8, 8)
    np.testing.assert_allclose(interpret(g, x)[0], before, rtol=1e-12)
