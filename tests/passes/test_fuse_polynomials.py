"""fuse-polynomials: element-wise polynomial regions collapse into one exact poly op."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hec.frontend import import_onnx
from hec.ir import interpret
from hec.passes import FusePolynomials, PassManager

from conftest import assert_matches_reference
from golden import check_golden
from onnx_builders import ModelBuilder, run_onnxruntime

GOLDEN = Path(__file__).parent / "golden"


def _horner_model():
    """y = ((0.5·t + 1)·t - 2)·t + 0.25 with t = 0.3·x - 0.1 after a Gemm: degree 3."""
    b = ModelBuilder((6,))
    x = b.node("Gemm", ["input", b.weight(6, 4)])
    t = b.node("Add", [b.node("Mul", [x, b.const(np.array(0.3))]), b.const(np.array(-0.1))])
    h = b.node("Add", [b.node("Mul", [t, b.const(np.array(0.5))]), b.const(np.array(1.0))])
    h = b.node("Sub", [b.node("Mul", [h, t]), b.const(np.array(2.0))])
    h = b.node("Add", [b.node("Mul", [h, t]), b.const(np.array(0.25))])
    return b.build(b.node("Gemm", [h, b.weight(4, 3)]))


def test_horner_chain_becomes_one_cubic() -> None:
    model = _horner_model()
    graph = import_onnx(model, "horner")
    x = np.random.default_rng(0).normal(size=(5, 6))
    before = interpret(graph, x)[0]
    assert PassManager([FusePolynomials()]).run(graph)
    kinds = [op.kind for op in graph.ops]
    assert kinds.count("poly") == 1 and "mul" not in kinds
    poly = next(op for op in graph.ops if op.kind == "poly")
    assert len(poly.attrs["coeffs"]) == 4  # degree 3
    np.testing.assert_allclose(interpret(graph, x)[0], before, rtol=1e-12, atol=1e-12)
    assert_matches_reference(interpret(graph, x)[0], run_onnxruntime(model, x))
    check_golden(str(graph), GOLDEN / "fuse_polynomials.txt")


def test_fusing_twice_changes_nothing() -> None:
    graph = import_onnx(_horner_model())
    PassManager([FusePolynomials()]).run(graph)
    dump = str(graph)
    assert not FusePolynomials().run(graph)
    assert str(graph) == dump


def test_branches_used_outside_are_left_alone() -> None:
    b = ModelBuilder((4,))
    x = b.node("Gemm", ["input", b.weight(4, 4)])
    sq = b.node("Mul", [x, x])
    both = b.node("Add", [b.node("Gemm", [sq, b.weight(4, 4)]), sq])  # sq escapes twice
    graph = import_onnx(b.build(both))
    before = str(graph)
    FusePolynomials().run(graph)
    assert str(graph) == before
