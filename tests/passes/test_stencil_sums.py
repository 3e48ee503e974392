"""Stencil sums: an average pool by rotate-and-add on its input's grid, the function unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.frontend import import_onnx
from hec.ir import interpret
from hec.options import CompileOptions
from hec.passes import LowerToSlots
from hec.passes.chain_lowering import PendingMap
from hec.passes.prune_blocks import PruneBlocks
from hec.passes.stencil_sums import find_stencil, stencil_rotations, sum_rounds
from hec.prune import compiled_figures
from hec.runtime.simulator import rotate

from onnx_builders import ModelBuilder, conv_pool_conv


@pytest.mark.parametrize(
    "taps,rounds",
    [
        ((0, 1, 28, 29), [(1,), (28,)]),  # a 2x2 window, rows 28 slots apart: 2 rotations
        ((0, 2, 56, 58), [(2,), (56,)]),  # on a stride-2 grid
        ((0, 1, 2), [(1, 2)]),  # does not halve: one round of its taps
        ((0, 1, 2, 12, 13, 14, 24, 25, 26), [(1, 2), (12, 24)]),  # 3x3: 4 rotations
        ((0, 5), [(5,)]),
    ],
)
def test_rounds_sum_exactly_the_taps(taps, rounds) -> None:
    assert sum_rounds(taps) == rounds
    assert stencil_rotations(taps) == sum(len(r) for r in rounds)
    x = np.random.default_rng(0).normal(size=(1, 64))
    y = x
    for shifts in sum_rounds(taps):
        y = y + sum(rotate(y, d) for d in shifts)
    np.testing.assert_allclose(y, sum(rotate(x, t) for t in taps), atol=1e-12)


def _pool_chain(pads: int, size: int = 6) -> PendingMap:
    """The pending chain ``avgpool 2x2 (stride 2) · dense`` over a contiguous 1xNxN tensor."""
    b = ModelBuilder((1, size, size), seed=1)
    t = b.node("AveragePool", ["input"], kernel_shape=[2, 2], strides=[2, 2], pads=[pads] * 4)
    t = b.node("Flatten", [t])
    side = (size + 2 * pads) // 2
    model = b.build(b.node("Gemm", [t, b.weight(3, side * side)], transB=1))
    from hec.ir import affine_map

    g = import_onnx(model)
    p = PendingMap(g.inputs[0], size * size)
    for op in g.ops:
        p = p.then(*affine_map(op), op.origin)
    return p


def test_a_pool_is_found_as_a_stencil_and_a_padded_one_is_not() -> None:
    p = _pool_chain(pads=0)
    st = find_stencil(p, np.arange(36), 64)
    assert st is not None and st.taps == (0, 1, 6, 7) and st.scale == pytest.approx(0.25)
    assert list(st.anchors) == [0, 2, 4, 12, 14, 16, 24, 26, 28]
    assert st.factors == 2  # the pool and the flatten; the dense layer is the rest
    # border windows of a padded pool read fewer pixels (count_include_pad=0): not one stencil
    assert find_stencil(_pool_chain(pads=1), np.arange(36), 64) is None


@pytest.mark.parametrize("sums", ["always", "never", "auto"])
def test_the_program_is_the_same_function_however_pools_are_summed(tmp_path, sums) -> None:
    model = conv_pool_conv(c1=3, c2=4, size=12)
    x = np.random.default_rng(0).uniform(0, 1, size=(6, 1, 12, 12))
    art = hec.compile(model, tmp_path / sums, CompileOptions(stencil_sums=sums))
    ref = interpret(import_onnx(model), x)[0]
    np.testing.assert_allclose(hec.simulate(art, x), ref, rtol=1e-9, atol=1e-9)
    lowered = import_onnx(model)
    LowerToSlots(stencil_sums=sums).run(lowered)
    pools = [op for op in lowered.ops if op.kind == "rotate"]
    assert len(pools) == (2 if sums == "always" else 0 if sums == "never" else len(pools))
    assert all(op.attrs["k"] in (1, 12) for op in pools)  # the 2x2 window on a 12-wide grid


def test_auto_sums_the_pool_once_pruning_leaves_few_weights_after_it() -> None:
    """With conv2 pruned thin, each of its weights costs 4 pool-tap diagonals when the pool
    is fused into it, 1 after a stencil sum (2 rotations, no plaintext multiply, no level):
    `auto` takes the sum, and the program needs fewer rotations than with `never`."""
    model = conv_pool_conv(c1=4, c2=6, size=16)
    x = np.random.default_rng(3).uniform(0, 1, size=(64, 1, 16, 16))
    g = import_onnx(model)
    PruneBlocks(0.95, "slots", calibration=x).prune(g)
    auto = compiled_figures(g, CompileOptions(), "slots")
    never = compiled_figures(g, CompileOptions(stencil_sums="never"), "slots")
    pool = [r for r in auto.layers if r.name.startswith("AveragePool")]
    assert pool and pool[0].rotations == 2 and pool[0].plaintext_multiplies == 0
    assert pool[0].level_in == pool[0].level_out  # no level
    assert auto.totals.rotations < never.totals.rotations
