"""lazy-relinearize: golden dump, operation counts, and the result is unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import hec
from hec.frontend import import_onnx
from hec.passes import LazyRelinearize, LowerToBatch, PassManager
from hec.runtime.batch_simulator import simulate_batch

from conftest import EXAMPLE
from golden import check_golden
from onnx_builders import ModelBuilder
from op_cases import CASES

GOLDEN = Path(__file__).parent / "golden"


def _lowered(model):
    graph = import_onnx(model, "m")
    PassManager([LowerToBatch(16)]).run(graph)
    return graph


def test_golden_and_same_function(tmp_path) -> None:
    model, x = CASES["cryptonets_like"]()
    graph = _lowered(model)
    before = simulate_batch(graph, x)[0]
    PassManager([LazyRelinearize()], dump_dir=tmp_path).run(graph)
    check_golden(
        (tmp_path / "01-lazy-relinearize.txt").read_text(),
        GOLDEN / "cryptonets_like.lazy-relinearize.txt",
    )
    np.testing.assert_array_equal(simulate_batch(graph, x)[0], before)
    kinds = [op.kind for op in graph.ops]
    # square → sum pool (at scale Δ², 3 parts) → rescale → dense → relinearize the 6 outputs
    assert kinds[:6] == [
        "weighted_sum",
        "mul_norelin",
        "signed_sum",
        "rescale",
        "weighted_sum",
        "relinearize",
    ]
    assert graph.outputs[0].producer.kind == "relinearize"


def test_cryptonets_relinearizes_42_times_instead_of_544(tmp_path) -> None:
    art = hec.compile(
        EXAMPLE / "model.onnx", tmp_path / "out", hec.CompileOptions(packing="batch", batch_size=8)
    )
    totals = art.report.totals
    assert totals.ciphertext_multiplies == 544
    assert totals.relinearizations == 32 + 10 and totals.rescales == 714
    assert art.report.ckks.depth == 5


def test_a_growing_map_gets_relinearized_inputs() -> None:
    """square → conv that makes more elements: relinearizing before it is cheaper."""
    b = ModelBuilder((1, 4, 4))
    h = b.node("Conv", ["input", b.weight(1, 1, 3, 3)], pads=[1, 1, 1, 1])
    h = b.node("Mul", [h, h])
    graph = _lowered(b.build(b.node("Conv", [h, b.weight(4, 1, 3, 3)], pads=[1, 1, 1, 1])))
    assert not LazyRelinearize().run(graph)
    assert "mul" in [op.kind for op in graph.ops]
