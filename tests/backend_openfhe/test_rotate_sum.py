"""rotate_sum: giant-step rotations that share one ModDown compute what separate rotations do.

The IR op is checked like every other (arity, amounts, aligned operands); schedule-rotations
groups a map's giant steps into it; compose-rotations splits it where an amount needs a chain;
and OpenFHE's extended-basis sum (``EvalFastRotationExt`` + ``KeySwitchDown``) decrypts to the
simulator's values.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import hec
from hec.ir import CipherType, Graph, Op, VerifyError
from hec.ir.slot_ops import rotation_amounts
from hec.passes import ComposeRotations, PassManager, ScheduleRotations
from hec.passes.schedule_rotations import SUM_CHUNK
from hec.runtime.simulator import simulate_slots

from bsgs_reference import matvec_graph
from onnx_builders import ModelBuilder, run_onnxruntime


def _sum_graph(ks: list[int], levels=(0, 0)) -> Graph:
    g = Graph("sums", "slot")
    a = g.add_input("a", CipherType(16, levels[0], 2))
    b = g.add_input("b", CipherType(16, levels[1], 2))
    op = Op("rotate_sum", [a, b][: len(ks)] or [a], [CipherType(16, 0, 2)], {"ks": ks})
    g.ops.append(op)
    g.outputs = [op.result]
    return g


@pytest.mark.parametrize(
    "ks, levels, message",
    [
        ([1, 2], (0, 1), "operands differ"),
        ([1, 0], (0, 0), "rotation by 0"),
        ([3], (0, 0), "at least 2 terms"),
    ],
)
def test_an_ill_formed_rotate_sum_is_refused(ks, levels, message) -> None:
    with pytest.raises(VerifyError, match=message):
        _sum_graph(ks, levels).verify()


def test_a_dense_map_sums_its_giant_steps_in_chunks() -> None:
    """256 diagonals: ~16 giant steps, grouped by at most SUM_CHUNK, the map unchanged."""
    g = matvec_graph(256, list(range(256)), seed=0)
    v = np.random.default_rng(0).normal(size=(2, 256))
    before = simulate_slots(g, v)[0]
    PassManager([ScheduleRotations()]).run(g)
    sums = [op for op in g.ops if op.kind == "rotate_sum"]
    assert sums and all(2 <= len(op.inputs) <= SUM_CHUNK for op in sums)
    giants = sum(len(op.inputs) for op in sums) + sum(
        op.kind == "rotate" and op.inputs[0] is not g.inputs[0] for op in g.ops
    )
    assert giants >= 8
    np.testing.assert_allclose(simulate_slots(g, v)[0], before, atol=1e-9)


def test_composing_rotations_splits_a_sum_whose_amounts_need_chains() -> None:
    g = matvec_graph(256, list(range(256)), seed=1)
    v = np.random.default_rng(1).normal(size=(2, 256))
    before = simulate_slots(g, v)[0]
    PassManager([ScheduleRotations(), ComposeRotations("pow2")]).run(g)
    amounts = [k for op in g.ops for k in rotation_amounts(op)]
    assert all(abs(k) & (abs(k) - 1) == 0 for k in amounts)
    for op in g.ops:  # a sum kept has power-of-two amounts only
        assert op.kind != "rotate_sum" or all(abs(k) & (abs(k) - 1) == 0 for k in op.attrs["ks"])
    np.testing.assert_allclose(simulate_slots(g, v)[0], before, atol=1e-9)


def _dense_model():
    b = ModelBuilder((64,))
    h = b.node("Gemm", ["input", b.weight(64, 64, scale=0.2)], transB=1)
    h = b.node("Mul", [h, h])
    y = b.node("Gemm", [h, b.weight(10, 64, scale=0.2)], transB=1)
    return b.build(y)


def test_the_report_counts_each_summed_rotation_and_its_key(tmp_path) -> None:
    art = hec.compile(_dense_model(), tmp_path / "out")
    kinds = Counter(op.kind for op in art.program.ops)
    terms = [len(op.inputs) for op in art.program.ops if op.kind == "rotate_sum"]
    assert terms, "the 64x64 layer has several giant steps"
    totals = art.report.totals
    assert totals.rotations == kinds["rotate"] + sum(terms)
    assert totals.summed_rotations == sum(terms) - len(terms)
    amounts = {k for op in art.program.ops for k in rotation_amounts(op)}
    assert set(art.params.rotation_indices) == amounts


@pytest.mark.slow
def test_summed_rotations_decrypt_to_the_simulators_values(tmp_path) -> None:
    model = _dense_model()
    x = np.random.default_rng(2).uniform(-1, 1, (2, 64)).astype(np.float32)
    art = hec.compile(model, tmp_path / "out")
    assert any(op.kind == "rotate_sum" for op in art.program.ops)
    result = hec.run(art, x)
    np.testing.assert_allclose(result.logits, hec.simulate(art, x), atol=1e-3, rtol=0)
    np.testing.assert_allclose(result.logits, run_onnxruntime(model, x), atol=1e-2, rtol=0)
