"""schedule-rotations: BSGS expansion preserves the map for random sparse diagonal sets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hec
from hec.ir import CipherType, Graph, Layout
from hec.ir.slot_ops import rotation_amounts
from hec.passes import PassManager, ScheduleRotations
from hec.passes.schedule_rotations import choose_baby_step, signed_rotation
from hec.runtime.simulator import simulate_slots

from bsgs_reference import matvec_graph
from onnx_builders import ModelBuilder, run_onnxruntime


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([8, 16, 64]), st.data(), st.one_of(st.none(), st.integers(1, 64)))
def test_bsgs_preserves_the_map(slots: int, data, baby_step) -> None:
    offsets = sorted(data.draw(st.sets(st.integers(0, slots - 1), min_size=1, max_size=slots)))
    g = matvec_graph(slots, offsets, seed=len(offsets))
    v = np.random.default_rng(1).normal(size=(2, slots))
    before = simulate_slots(g, v)[0]
    PassManager([ScheduleRotations(baby_step and min(baby_step, slots))]).run(g)
    assert "matvec" not in {op.kind for op in g.ops}
    np.testing.assert_allclose(simulate_slots(g, v)[0], before, atol=1e-9)


def test_search_beats_the_plain_diagonal_method_on_dense_maps() -> None:
    slots = 256
    g = matvec_graph(slots, list(range(slots)), seed=0)
    PassManager([ScheduleRotations()]).run(g)
    rotations = sum(len(rotation_amounts(op)) for op in g.ops)
    assert rotations <= 2 * 16  # ~2·sqrt(256), against 255 for one rotation per diagonal
    assert choose_baby_step(np.arange(slots), slots) in (16, 32)


def test_sparse_offsets_need_no_giant_steps_when_few() -> None:
    offsets = np.array([0, 1, 2, 8, 9, 10])
    n1 = choose_baby_step(offsets, 64)
    babies = np.count_nonzero(np.unique(offsets % n1))
    giants = np.count_nonzero(np.unique(offsets // n1))
    assert babies + giants == 3  # n1 = 8: babies {1, 2}, giants {1}


def test_signed_rotation_picks_the_short_way() -> None:
    assert signed_rotation(7, 8) == -1
    assert signed_rotation(4, 8) == 4
    assert signed_rotation(-3, 8) == -3


def _short_map(slots: int, rows: int, offsets: list[int], seed: int, live: int = 0) -> Graph:
    """A map whose outputs are the first ``rows`` slots (a dense layer's shape); only the first
    ``live`` of them (all when 0) have weights, the others only a bias (pruned neurons)."""
    g = matvec_graph(slots, offsets, seed)
    op = g.ops[0]
    op.consts["diags"][:, live or rows :] = 0.0
    op.consts["bias"][rows:] = 0.0
    op.result.type = CipherType(slots, 1, 1, Layout((rows,), slots))
    return g


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([16, 64, 256]), st.integers(1, 9), st.integers(0, 9), st.data())
def test_folded_short_maps_compute_the_same_outputs(slots: int, rows: int, live: int, data):
    offsets = sorted(data.draw(st.sets(st.integers(0, slots - 1), min_size=1, max_size=slots)))
    g = _short_map(slots, rows, offsets, seed=len(offsets), live=min(live, rows))
    v = np.random.default_rng(2).normal(size=(2, slots))
    before = simulate_slots(g, v)[0][:, :rows]
    PassManager([ScheduleRotations()]).run(g)
    np.testing.assert_allclose(simulate_slots(g, v)[0][:, :rows], before, atol=1e-9)


def test_a_dense_layer_folds_into_few_plaintexts_and_rotations() -> None:
    slots, rows = 512, 32  # CryptoNets' fc1: 32 outputs from 512 inputs, every diagonal
    counts = {}
    for fold in (False, True):
        g = _short_map(slots, rows, list(range(slots)), seed=0)
        PassManager([ScheduleRotations(fold=fold)]).run(g)
        counts[fold] = Counter(op.kind for op in g.ops)
        counts[fold]["rotate"] = sum(len(rotation_amounts(op)) for op in g.ops)
        carried = sum(op.attrs.get("diagonals", 1) for op in g.ops if op.kind == "mul_plain")
        assert carried == slots  # every diagonal is still there, merged or not
    assert counts[True]["mul_plain"] == rows and counts[False]["mul_plain"] == slots
    # 32 merged diagonals (BSGS ~10) + 4 doublings for 16 blocks, against ~2·sqrt(512)
    assert counts[True]["rotate"] <= 15 < counts[False]["rotate"]


def test_an_all_zero_map_compiles_to_its_bias(tmp_path) -> None:
    """A layer whose weights are all zero (pruned away) has no diagonal: y = b, no rotation."""
    b = ModelBuilder((8,))
    h = b.node("Gemm", ["input", b.weight(6, 8)], transB=1)
    h = b.node("Mul", [h, h])
    y = b.node("Gemm", [h, b.const(np.zeros((4, 6))), b.const(np.arange(4.0))], transB=1)
    model = b.build(y)
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    art = hec.compile(model, tmp_path / "out")
    np.testing.assert_allclose(hec.simulate(art, x), run_onnxruntime(model, x), atol=1e-9)
    assert art.report.layers[-1].rotations == 0


def test_a_split_searched_again_is_the_memoized_one_and_a_callers_copy() -> None:
    """The split search is memoized by the offsets: the same answer, each caller its own array
    (a caller changing its representation must not change the next caller's)."""
    from hec.passes.schedule_rotations import choose_split, split_cost

    offsets = np.array([0, 1, 2, 31, 32, 33, 63, 64, 65, 990, 1023])
    first = choose_split(offsets, 1024)
    first[1][:] = 7
    n1, ks = choose_split(offsets, 1024)
    assert n1 == first[0] and 7 not in ks.tolist()
    assert sorted(np.asarray(ks) % 1024) == sorted(offsets % 1024)
    # the chosen split is no worse than any other baby-step size
    best = sum(split_cost(ks, n1, 1024))
    assert all(best <= sum(split_cost(offsets, m, 1024)) for m in range(1, 1025))


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from([16, 64, 256]),
    st.data(),
    st.booleans(),
    st.sampled_from([1.0, 0.5, 0.37]),
    st.booleans(),
)
def test_the_split_search_finds_the_cheapest_of_every_split(
    slots: int, data, block_local: bool, hoisted: float, vector: bool
) -> None:
    """The search (its shortened candidate list, costed many ``n1`` at once or one at a time)
    returns the first of the cheapest splits over every representation and every ``n1``."""
    from hec.passes import schedule_rotations as sr

    low = -slots // 2 if block_local else 0
    offsets = np.array(
        sorted(data.draw(st.sets(st.integers(low, slots - 1 + low), min_size=1, max_size=40)))
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sr, "_VECTOR_OFFSETS", slots if vector else 0)
        n1, ks, rotations = sr._search_splits(offsets, slots, block_local, hoisted)
    costs = []
    for rep, rep_ks in enumerate(sr.representations(offsets, slots, block_local)):
        for m in range(1, slots + 1):
            b, g = sr.split_cost(rep_ks, m, slots, block_local)
            costs.append((hoisted * b + g, g, rep, m, b + g))
    best = min(costs)
    assert (n1, rotations) == (best[3], best[4])
    np.testing.assert_array_equal(ks, sr.representations(offsets, slots, block_local)[best[2]])


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([16, 64, 256]), st.data())
def test_a_paired_fold_computes_the_same_outputs(slots: int, data) -> None:
    """Any shift ``s`` with both copies of the output in the slots: the map is unchanged."""
    from hec.passes.schedule_rotations import KERNEL

    rows = data.draw(st.integers(1, slots // 2))
    shift = data.draw(st.integers(rows, slots - rows))
    offsets = sorted(data.draw(st.sets(st.integers(0, slots - 1), min_size=1, max_size=slots)))
    g = _short_map(slots, rows, offsets, seed=len(offsets))
    g.ops[0].attrs.update({KERNEL: "paired", "shift": shift, "baby_step": 4, "signed": False})
    v = np.random.default_rng(3).normal(size=(2, slots))
    before = simulate_slots(g, v)[0][:, :rows]
    PassManager([ScheduleRotations()]).run(g)
    np.testing.assert_allclose(simulate_slots(g, v)[0][:, :rows], before, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 63), min_size=1, max_size=10), st.integers(8, 56))
def test_pairing_merges_as_many_diagonals_as_any_assignment(offsets, shift) -> None:
    """Each offset ``k`` is computed as ``k`` or, in the copy, as ``k - s``: the labels the
    chains get are as few as the best of all ``2^n`` assignments."""
    import itertools

    from hec.passes.schedule_rotations import _pair_labels

    ks = np.array(sorted(offsets))
    merged = np.unique(_pair_labels(ks, 64, shift)[0]).size
    best = min(
        len({(k - j * shift) % 64 for k, j in zip(ks, js, strict=True)})
        for js in itertools.product((0, 1), repeat=len(ks))
    )
    assert merged == best


def test_a_map_whose_output_fits_twice_pairs_its_diagonals() -> None:
    """Offsets that come in pairs ``k, k + s`` (s not a power of two) share plaintexts: half
    the plaintext multiplies, one more rotation, the same outputs."""
    slots, rows, shift = 256, 100, 140
    base = [0, 1, 2, 3, 17, 18, 19, 33, 34, 35]
    g = _short_map(slots, rows, sorted(base + [k + shift for k in base]), seed=5)
    v = np.random.default_rng(4).normal(size=(2, slots))
    before = simulate_slots(g, v)[0][:, :rows]
    assert g.ops[0].attrs.get("kernel") is None
    PassManager([ScheduleRotations()]).run(g)
    kinds = Counter(op.kind for op in g.ops)
    assert kinds["mul_plain"] == len(base)
    np.testing.assert_allclose(simulate_slots(g, v)[0][:, :rows], before, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([64, 256]), st.sampled_from([2, 4]), st.data())
def test_a_fold_in_lanes_computes_the_same_outputs(slots: int, lanes: int, data) -> None:
    """Rows at the start of each of ``lanes`` lanes and offsets below the lane width: the
    lanes share the merged plaintexts and the block sum, and every row is unchanged."""
    from hec.passes.schedule_rotations import KERNEL

    width = slots // lanes
    per = data.draw(st.integers(1, width // 2))
    offsets = sorted(data.draw(st.sets(st.integers(0, width - 1), min_size=1, max_size=width)))
    rows = (np.arange(per)[None, :] + width * np.arange(lanes)[:, None]).ravel()
    g = matvec_graph(slots, offsets, seed=len(offsets))
    op = g.ops[0]
    keep = np.zeros(slots, dtype=bool)
    keep[rows] = True
    op.consts["diags"][:, ~keep] = 0.0
    op.consts["bias"][~keep] = 0.0
    v = np.random.default_rng(5).normal(size=(2, slots))
    before = simulate_slots(g, v)[0][:, rows]
    PassManager([ScheduleRotations()]).run(g)
    np.testing.assert_allclose(simulate_slots(g, v)[0][:, rows], before, atol=1e-9)
    g = matvec_graph(slots, offsets, seed=len(offsets))
    block = 1 << (per - 1).bit_length()
    g.ops[0].attrs.update(
        {KERNEL: "folded", "block": block, "lane": width, "baby_step": 4, "signed": False}
    )
    g.ops[0].consts["diags"][:, ~keep] = 0.0
    g.ops[0].consts["bias"][~keep] = 0.0
    PassManager([ScheduleRotations()]).run(g)
    np.testing.assert_allclose(simulate_slots(g, v)[0][:, rows], before, atol=1e-9)
    assert sum(o.kind == "mul_plain" for o in g.ops) <= block


def test_a_dense_layer_on_a_periodic_input_folds_in_lanes() -> None:
    """A 3,136 → 512 layer's shape in small (64 outputs, a 512-slot input held twice in 1,024
    slots): outputs in two lanes halve the plaintexts of the one-lane fold."""
    from hec.passes.schedule_rotations import choose_kernel

    slots, width, n = 1024, 512, 64
    one = _short_map(slots, n, list(range(-n + 1, width)), seed=1)
    lanes = np.concatenate([np.arange(n // 2), width + np.arange(n // 2)])
    two = matvec_graph(slots, list(range(width)), seed=1)
    outside = np.ones(slots, dtype=bool)
    outside[lanes] = False
    two.ops[0].consts["diags"][:, outside] = 0.0
    source = np.full(slots, -1)
    source[lanes] = np.arange(n)
    two.ops[0].result.type = CipherType(slots, 1, 1, Layout((n,), slots, "strided", tuple(source)))
    kernels = {k: choose_kernel(g.ops[0], None, False) for k, g in (("one", one), ("two", two))}
    assert kernels["two"]["lane"] == width and "lane" not in kernels["one"]
    counts = {}
    for key, g in (("one", one), ("two", two)):
        PassManager([ScheduleRotations()]).run(g)
        counts[key] = sum(op.kind == "mul_plain" for op in g.ops)
    assert counts == {"one": n, "two": n // 2}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([64, 256]), st.data())
def test_a_periodic_map_repeats_its_output_in_both_halves(slots: int, data) -> None:
    """A map with attribute ``period`` (its output in the first half, its bias repeated)
    holds the same values in both halves, in the simulator and once scheduled (folded in
    halves: ``P + rot(P, slots/2)``)."""
    from hec.passes.schedule_rotations import KERNEL

    half = slots // 2
    rows = data.draw(st.integers(1, half))
    low = data.draw(st.sets(st.integers(0, half - 1), min_size=1, max_size=8))
    high = data.draw(st.sets(st.integers(half, slots - 1), min_size=1, max_size=8))
    g = _short_map(slots, rows, sorted(low | high), seed=rows)
    op = g.ops[0]
    op.attrs["period"] = half
    op.consts["bias"][half:] = op.consts["bias"][:half]
    v = np.random.default_rng(6).normal(size=(2, slots))
    before = simulate_slots(g, v)[0]
    np.testing.assert_array_equal(before[:, half:], before[:, :half])
    PassManager([ScheduleRotations()]).run(g)
    assert op.attrs[KERNEL] == "folded" and op.attrs["block"] == half
    np.testing.assert_allclose(simulate_slots(g, v)[0][:, : 2 * half], before, atol=1e-9)
