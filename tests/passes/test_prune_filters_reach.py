"""Filter pruning follows a channel through any linear op to the layer that reads it, so
culling works across the data-movement and resampling kinds too (not only pools and pads)."""

from __future__ import annotations

import numpy as np
import pytest

from hec.frontend import import_onnx
from hec.passes.prune_filters import _channel_reach

from onnx_builders import ModelBuilder


@pytest.mark.parametrize("between", ["Slice", "Resize"])
def test_channels_reach_the_next_conv_through(between: str) -> None:
    b = ModelBuilder((1, 6, 6), seed=1)
    h = b.node("Conv", ["input", b.weight(3, 1, 3, 3)], pads=[1, 1, 1, 1])
    if between == "Slice":  # rows 1..4: a select
        starts, ends, axes = (b.const(np.array([v]), np.int64) for v in (1, 5, 2))
        h = b.node("Slice", [h, starts, ends, axes])
    else:  # nearest upsampling x2: an axis map
        scales = b.const(np.array([1.0, 1.0, 2.0, 2.0]))
        h = b.node("Resize", [h, "", scales], mode="nearest")
    model = b.build(b.node("Conv", [h, b.weight(2, 3, 3, 3)]))
    graph = import_onnx(model)
    convs = [op for op in graph.ops if op.kind == "conv"]
    reach = _channel_reach(graph, convs)
    assert 0 in reach  # the first conv's channels are followed to the second
    next_layer, culled, reads = reach[0]
    assert next_layer == 1
    w = convs[1].consts["weight"]
    for c in range(3):  # culling channel c removes exactly the second conv's weights on it
        assert set(culled[c]) == set(np.flatnonzero(np.arange(w.size) // 9 % 3 == c))
