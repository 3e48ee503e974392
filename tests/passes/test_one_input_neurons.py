"""Hidden dense layers reduced to one input a neuron, live inputs first."""

from __future__ import annotations

import numpy as np
import pytest

from hec.frontend import import_onnx
from hec.passes.one_input_neurons import hidden_dense_ops, one_input_per_neuron
from hec.recover import prunable_ops

from onnx_builders import ModelBuilder


def _mlp():
    """dense 10 → 6 → square → dense 6 → 4 → square → dense 4 → 3."""
    b = ModelBuilder((10,), seed=7)
    t = b.node("Gemm", ["input", b.weight(10, 6), b.weight(6)])
    t = b.node("Mul", [t, t])
    t = b.node("Gemm", [t, b.weight(6, 4), b.weight(4)])
    t = b.node("Mul", [t, t])
    return import_onnx(b.build(b.node("Gemm", [t, b.weight(4, 3), b.weight(3)])))


def test_each_neuron_keeps_one_distinct_input_live_ones_first() -> None:
    g = _mlp()
    before = [op.consts["weight"].copy() for op in prunable_ops(g)]
    live = np.zeros(10, dtype=bool)
    live[[1, 4, 8]] = True
    assert one_input_per_neuron(g, live) == 3  # the second layer: 3 neurons on live ones
    first, second = (op.consts["weight"] for op in hidden_dense_ops(g))
    for w in (first, second):
        assert (np.count_nonzero(w, axis=0) == 1).all()  # one input a neuron
        assert (np.count_nonzero(w, axis=1) <= 1).all()  # each input to one neuron at most
    assert first[[1, 4, 8]].any(axis=1).all()  # every live input is taken
    kept = np.flatnonzero(first.any(axis=1))
    np.testing.assert_array_equal(first[kept], before[0][kept] * (first[kept] != 0))
    # the output layer is left as it was
    np.testing.assert_array_equal(prunable_ops(g)[-1].consts["weight"], before[-1])


def test_live_flags_must_match_the_first_layer() -> None:
    with pytest.raises(ValueError, match="live flags"):
        one_input_per_neuron(_mlp(), np.ones(5, dtype=bool))


def test_convolutions_keep_few_channels_one_input_channel_each() -> None:
    from hec.passes.one_input_neurons import one_input_channel

    from onnx_builders import conv_pool_conv

    g = import_onnx(conv_pool_conv(c1=3, c2=4, k=3, pool=2, size=12))
    conv1, conv2, dense = prunable_ops(g)
    w1 = conv1.consts["weight"]
    strongest = set(np.argsort(-np.sqrt((w1.reshape(3, -1) ** 2).sum(1)))[:2].tolist())
    before = dense.consts["weight"].copy()
    one_input_channel(g, 2)
    live1 = set(np.flatnonzero(conv1.consts["weight"].reshape(3, -1).any(1)).tolist())
    assert live1 == strongest  # the two filters of largest norm
    reads = conv2.consts["weight"].reshape(4, 3, -1).any(2)  # [filter, channel]
    assert (reads.sum(1) <= 1).all()  # one input channel a filter
    assert (reads.sum(0) <= 1).all()  # each channel read by one filter at most
    assert set(np.flatnonzero(reads.any(0)).tolist()) == live1  # live channels only
    kept = conv2.consts["weight"][reads.any(1)]
    assert np.count_nonzero(kept) == 2 * 9  # every tap of a kept filter stays
    np.testing.assert_array_equal(dense.consts["weight"], before)  # the output layer too
