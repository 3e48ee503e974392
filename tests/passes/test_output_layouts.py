"""Strided output layouts: the same function, fewer diagonals, no unused slot ever read.

Every map's output may sit on its input's grid (``output_layouts``); the compiled program must
still equal the tensor interpreter to 1e-9 and onnxruntime to float32, whatever the layouts.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hec
from hec.frontend import import_onnx
from hec.frontend.reference import onnxruntime_outputs
from hec.ir import interpret
from hec.options import CompileOptions
from hec.passes import LowerToSlots
from hec.passes.diagonal_blocks import slot_diagonals
from hec.passes.output_layouts import ANCHOR_READS, anchored_output_slots, strided_output_slots
from hec.passes.prune_blocks import PruneBlocks
from hec.prune import compiled_figures

from conftest import assert_matches_reference
from onnx_builders import ModelBuilder, conv_pool_conv
from op_cases import CASES


def _exact(artifact, model, x) -> None:
    out = hec.simulate(artifact, x)
    ref = interpret(import_onnx(model), x)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(ref).max()))
    assert_matches_reference(out, onnxruntime_outputs(model, x))


def test_pool_then_conv_output_on_the_input_grid_takes_fewer_diagonals(tmp_path) -> None:
    """pool+conv: each conv weight on its pool taps' diagonals only, and the program exact."""
    model = conv_pool_conv()
    x = np.random.default_rng(0).uniform(0, 1, size=(8, 1, 12, 12))
    counts = {}
    for mode in ("contiguous", "strided", "auto"):
        art = hec.compile(model, tmp_path / mode, hec.CompileOptions(output_layouts=mode))
        _exact(art, model, x)
        counts[mode] = art.report.layers[2].diagonals  # the pool+conv map
    assert counts["strided"] < counts["contiguous"]
    maps, layers = slot_diagonals(import_onnx(model), output_layouts="strided")
    conv2 = layers[1]
    per_weight = np.bincount(conv2.pairs_weight)
    assert per_weight.max() <= 4  # the 2x2 pool taps, whatever the output position
    maps_c, layers_c = slot_diagonals(import_onnx(model), output_layouts="contiguous")
    assert np.bincount(layers_c[1].pairs_weight).max() > 4


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_case_is_exact_with_strided_outputs(name, tmp_path) -> None:
    model, x = CASES[name]()
    art = hec.compile(model, tmp_path / "out", hec.CompileOptions(output_layouts="strided"))
    _exact(art, model, x)


@settings(max_examples=12, deadline=None)
@given(
    c1=st.integers(1, 3),
    c2=st.integers(1, 3),
    k=st.sampled_from([1, 3]),
    pool=st.sampled_from([1, 2]),
    size=st.sampled_from([6, 8]),
)
def test_strided_layouts_preserve_the_map(c1, c2, k, pool, size) -> None:
    """Random conv/pool/conv shapes: the slot program equals the interpreter (1e-9), and no
    map reads a slot its input's layout leaves unused (those may hold a polynomial's garbage)."""
    model = conv_pool_conv(c1, c2, k, pool, size)
    x = np.random.default_rng(1).uniform(0, 1, size=(3, 1, size, size))
    graph = import_onnx(model)
    ref = interpret(graph, x)[0]
    with tempfile.TemporaryDirectory() as tmp:
        art = hec.compile(model, tmp, hec.CompileOptions(output_layouts="strided"))
        out = hec.simulate(art, x)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(ref).max()))
    lowered = graph.clone()
    LowerToSlots(negligible=0.0, output_layouts="strided").run(lowered)
    for op in lowered.ops:
        if op.kind != "matvec":
            continue
        layout = op.inputs[0].type.layout
        used = np.zeros(layout.slots, dtype=bool)
        used[layout.slot_of_element()] = True
        if layout.source is not None:  # every copy (a periodic output holds two)
            used = np.asarray(layout.source) >= 0
        for k_, d in zip(op.attrs["offsets"], op.consts["diags"], strict=True):
            rows = np.flatnonzero(d)
            assert used[(rows + k_) % layout.slots].all(), op.origin


def test_strided_slots_are_distinct_and_fit() -> None:
    """A 2-channel 3x3 output read at stride 2 from a 6-wide input: one slot each."""
    rows = np.repeat(np.arange(18), 1)
    ch, i, j = np.unravel_index(rows, (2, 3, 3))
    read = 2 * 6 * i + 2 * j  # the input grid: rows 12 slots apart, columns 2
    slots = strided_output_slots(rows, read, (2, 3, 3), 64)
    assert slots is not None and len(set(slots.tolist())) == 18 and slots.max() < 64
    grid = slots.reshape(2, 3, 3) - slots.reshape(2, 3, 3)[:, :1, :1]
    assert (grid == (12 * np.arange(3)[:, None] + 2 * np.arange(3))[None]).all()


@pytest.mark.slow
def test_encrypted_run_with_strided_outputs_matches_onnxruntime(tmp_path) -> None:
    """The garbage a polynomial leaves in unused slots stays unread under encryption too."""
    model = conv_pool_conv(c1=2, c2=2, size=8)
    x = np.random.default_rng(2).uniform(0, 1, size=(2, 1, 8, 8))
    art = hec.compile(model, tmp_path / "out", hec.CompileOptions(output_layouts="strided"))
    assert any(
        op.result.type.layout is not None and op.result.type.layout.kind == "strided"
        for op in art.program.ops
        if op.kind == "matvec" or op.kind == "rescale"
    )
    result = hec.run(art, x)
    np.testing.assert_allclose(result.logits, onnxruntime_outputs(model, x), atol=1e-2)


def test_pruning_blocks_read_off_strided_outputs_leave_fewer_plaintexts() -> None:
    """Same sparsity, blocks read with strided vs contiguous outputs (each compiled with its
    own setting): a pool+conv weight on its pool taps' diagonals only (or, once the pool is a
    stencil sum, on one), so far fewer remain."""
    model = conv_pool_conv(c1=4, c2=6, size=16)
    x = np.random.default_rng(3).uniform(0, 1, size=(64, 1, 16, 16))
    pool_conv = {}
    for layouts in ("auto", "contiguous"):
        g = import_onnx(model)
        PruneBlocks(0.8, "slots", per_layer=True, calibration=x, output_layouts=layouts).prune(g)
        fig = compiled_figures(g, CompileOptions(output_layouts=layouts), "slots")
        squares = [i for i, r in enumerate(fig.layers) if r.kind == "square"]
        between = fig.layers[squares[0] + 1 : squares[1]]  # pool+conv (or pool, conv)
        assert any("AveragePool" in r.name for r in between)
        pool_conv[layouts] = sum(r.plaintext_multiplies for r in between)
    assert pool_conv["auto"] < pool_conv["contiguous"] / 2


def test_anchored_slots_put_each_neuron_on_a_slot_it_reads() -> None:
    """One input a neuron: the neuron sits on it (offset 0 for all); a neuron reading nothing
    takes a free slot; a dense row or two neurons on one lone slot: no anchored layout."""
    read = np.array([40, 8, 100, 12])
    slots = anchored_output_slots(np.arange(4), read, 5, 128)
    assert slots is not None and np.array_equal(slots[:4], read)
    assert slots[4] not in read and len(set(slots.tolist())) == 5
    # two inputs a neuron, one shared offset (+4) among three of them: anchors follow it
    rows = np.repeat(np.arange(3), 2)
    read = np.array([0, 4, 20, 24, 52, 48])
    slots = anchored_output_slots(rows, read, 3, 128)
    assert slots is not None and set(((read - slots[rows]) % 128).tolist()) == {0, 4}
    dense = np.repeat(np.arange(2), ANCHOR_READS + 1)
    assert anchored_output_slots(dense, np.tile(np.arange(ANCHOR_READS + 1), 2), 2, 128) is None
    assert anchored_output_slots(np.arange(2), np.array([7, 7]), 2, 128) is None


def _one_input_per_neuron(n_in: int = 12, hidden: int = 6):
    """dense → square → dense with one input a neuron (scattered) → square → dense → 3."""
    b = ModelBuilder((n_in,), seed=4)
    t = b.node("Gemm", ["input", b.weight(n_in, n_in, scale=0.3), b.weight(n_in)])
    t = b.node("Mul", [t, t])
    w = np.zeros((n_in, hidden))
    w[b.rng.permutation(n_in)[:hidden], np.arange(hidden)] = b.rng.normal(0, 0.5, hidden)
    t = b.node("Gemm", [t, b.const(w), b.weight(hidden)])
    t = b.node("Mul", [t, t])
    return b.build(b.node("Gemm", [t, b.weight(hidden, 3, scale=0.3), b.weight(3)]))


def test_one_input_per_neuron_needs_no_rotation_and_stays_exact(tmp_path) -> None:
    """A dense layer pruned to one input a neuron (what LeNet-5's fc1 and fc2 become at small
    rotation budgets): anchored outputs give it the single diagonal 0, where contiguous ones
    give each neuron its own offset; the program still equals the interpreter."""
    model = _one_input_per_neuron()
    x = np.random.default_rng(5).uniform(-1, 1, size=(4, 12))
    rotations = {}
    for mode in ("auto", "contiguous"):
        art = hec.compile(model, tmp_path / mode, hec.CompileOptions(output_layouts=mode))
        _exact(art, model, x)
        sparse = [r for r in art.report.layers if r.kind == "linear"][1]
        rotations[mode] = (sparse.rotations, sparse.diagonals)
    assert rotations["auto"] == (0, 1)
    assert rotations["contiguous"][0] > 0


def test_depthwise_filters_share_their_taps_diagonals_under_copies() -> None:
    """Under a copies readout a filter reading one channel sits on that channel's grid, so
    two depthwise filters with the same taps need those taps' diagonals only."""
    from hec.passes import LowerToSlots

    from onnx_builders import conv_pool_conv

    model = conv_pool_conv(c1=2, c2=2, k=3, pool=2, size=12)
    offsets = {}
    for readout in ("matrix", "copies"):
        g = import_onnx(model)
        conv2 = [op for op in g.ops if op.kind == "conv"][1]
        w = np.zeros_like(conv2.consts["weight"])
        for f in range(2):  # filter f reads channel f at 4 taps
            w[f, f, :2, :2] = conv2.consts["weight"][f, f, :2, :2]
        conv2.consts = {**conv2.consts, "weight": w}
        LowerToSlots(output_layouts="strided", stencil_sums="always", readout=readout).run(g)
        maps = [op for op in g.ops if op.kind == "matvec" and conv2.origin in op.origin]
        offsets[readout] = len(maps[0].attrs["offsets"])
    assert offsets["copies"] == 4
    assert offsets["matrix"] > 4


def _orion_lenet_in_small() -> ModelBuilder:
    """Orion's LeNet-5 in small: two 5x5 stride-2 convolutions (1 → 8 → 16 channels on
    16x16), squares, a dense layer 256 → 32 and the readout."""
    b = ModelBuilder((1, 16, 16), seed=4)
    c = b.node("Conv", ["input", b.weight(8, 1, 5, 5)], strides=[2, 2], pads=[2, 2, 2, 2])
    c = b.node("Mul", [c, c])
    c = b.node("Conv", [c, b.weight(16, 8, 5, 5)], strides=[2, 2], pads=[2, 2, 2, 2])
    c = b.node("Mul", [c, c])
    h = b.node("Gemm", [b.node("Flatten", [c]), b.weight(32, 256)], transB=1)
    h = b.node("Mul", [h, h])
    return b.build(b.node("Gemm", [h, b.weight(10, 32)], transB=1))


def test_multiplexed_blocks_tile_and_a_dense_layer_reads_the_periodic_copy(tmp_path) -> None:
    """conv1's channel blocks sit a power of two apart and fill the slots, so conv2's block
    offsets wrap and fold in halves; the fold leaves conv2's output in both halves (its bias
    too), and the dense layer after it reads either copy: its 32 outputs in two lanes of 16,
    16 plaintexts instead of 32. The program stays exact."""
    model = _orion_lenet_in_small()
    x = np.random.default_rng(0).uniform(0, 1, size=(4, 1, 16, 16)).astype(np.float32)
    art = hec.compile(model, tmp_path / "m", CompileOptions(input_layout="multiplexed"))
    _exact(art, model, x)
    layers = {layer.name: layer for layer in art.report.layers}
    assert layers["Conv_3"].plaintext_multiplies == 13 * 13  # tap row x col offsets, 2 blocks
    assert layers["Flatten_5+Gemm_6"].plaintext_multiplies == 16
    graph = import_onnx(model)
    LowerToSlots(slots=512, input_layout="multiplexed").run(graph)
    conv2, dense = [op for op in graph.ops if op.kind == "matvec"][1:3]
    source = np.asarray(conv2.result.type.layout.source)
    assert conv2.attrs["period"] == 256 and np.array_equal(source[:256], source[256:])
    assert np.array_equal(conv2.consts["bias"][:256], conv2.consts["bias"][256:])
    lanes = dense.result.type.layout.slot_of_element()
    assert lanes.tolist() == list(range(16)) + list(range(256, 272))


def test_a_tiled_layout_puts_channels_on_the_cells_sub_positions() -> None:
    """A 14x14 output read at stride 2 from rows padded to 32 slots: four channels on
    ``{0, 1, 32, 33}`` of each 1,024-slot tile (the lowest free start would be 28, the end of
    a row, whose grid mixes two rows)."""
    i, j = np.unravel_index(np.arange(8 * 196) % 196, (14, 14))
    rows = np.arange(8 * 196)
    read = 64 * i + 2 * j + 1024 * (rows // (4 * 196))
    plain = strided_output_slots(rows, read, (8, 14, 14), 2048)
    tiled = strided_output_slots(rows, read, (8, 14, 14), 2048, tiled=True)
    assert plain is not None and tiled is not None
    starts = tiled.reshape(8, -1)[:, 0].tolist()
    assert starts == [0, 1, 32, 33, 1024, 1025, 1056, 1057]
    assert plain.reshape(8, -1)[2, 0] == 28
    assert np.unique(tiled).size == tiled.size
