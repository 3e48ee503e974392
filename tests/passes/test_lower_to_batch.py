"""lower-to-batch: golden dumps, and the fusion rule (never more depth, fewer operations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hec.frontend import import_onnx
from hec.ir import interpret
from hec.passes import LowerToBatch, PassManager
from hec.passes.lower_to_batch import plan_segments, segment_cost
from hec.runtime.batch_simulator import simulate_batch

from conftest import EXAMPLE
from golden import check_golden
from op_cases import CASES

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["cryptonets_like", "residual_across_levels"])
def test_batch_dump(name: str, tmp_path) -> None:
    model, x = CASES[name]()
    graph = import_onnx(model, name)
    reference = interpret(graph, x)[0]
    PassManager([LowerToBatch(16)], dump_dir=tmp_path).run(graph)
    check_golden(
        (tmp_path / "01-lower-to-batch.txt").read_text(), GOLDEN / f"{name}.lower-to-batch.txt"
    )
    np.testing.assert_allclose(simulate_batch(graph, x)[0], reference, rtol=1e-9, atol=1e-9)


def _avgpool_matrix(c: int, h: int) -> sp.csr_matrix:
    """2x2 average pooling of ``c`` channels of ``h x h`` (row-major), as a sparse matrix."""
    rows, cols = [], []
    o = h // 2
    for ch in range(c):
        for i in range(o):
            for j in range(o):
                for di in (0, 1):
                    for dj in (0, 1):
                        rows.append(ch * o * o + i * o + j)
                        cols.append(ch * h * h + (2 * i + di) * h + 2 * j + dj)
    return sp.csr_matrix((np.full(len(rows), 0.25), (rows, cols)), shape=(c * o * o, c * h * h))


def test_avgpool_then_dense_is_a_sum_then_a_smaller_weighted_sum() -> None:
    """CryptoNets' pool + dense: fusing would cost 4x the multiplies at the same depth."""
    pool = _avgpool_matrix(8, 8)  # 512 -> 128
    dense = sp.csr_matrix(np.random.default_rng(0).normal(size=(32, 128)))
    segments = plan_segments([(pool, np.zeros(128)), (dense, np.ones(32))])
    assert [segment_cost(*s)[0] for s in segments] == [0, 1]  # a ±1 sum, then one level
    assert segments[1][0].nnz == 32 * 128  # not 32 * 512
    product = segments[1][0] @ segments[0][0]
    np.testing.assert_allclose(product.toarray(), (dense @ pool).toarray(), rtol=1e-12)
    np.testing.assert_allclose(segments[1][0] @ segments[0][1] + segments[1][1], np.ones(32))


def test_conv_then_batchnorm_fuses_into_one_map() -> None:
    """A diagonal after a map never adds non-zeros: one segment, as slot packing would do."""
    conv = sp.random(20, 30, density=0.3, random_state=1, format="csr")
    bn = sp.diags(np.linspace(0.5, 2.0, 20), format="csr")
    segments = plan_segments([(conv, np.zeros(20)), (bn, np.ones(20))])
    assert len(segments) == 1 and segments[0][0].nnz == conv.nnz


def test_a_pool_row_after_an_empty_row_is_not_the_identity() -> None:
    """``[[0, 0], [.25, .25]]`` splits into signs ``[[0, 0], [1, 1]]`` and a diagonal; the
    signs have n entries, all 1, in columns 0..n-1 (as the identity's), yet two in one row
    (found by the property test below: the chain was computed as ``diag(1, .25)`` alone)."""
    A = sp.csr_matrix(np.array([[0.0, 0.0], [0.25, 0.25]]))
    x = np.array([0.5, -2.0])
    y = x
    for S, c in plan_segments([(A, np.zeros(2))]):
        y = S @ y + c
    np.testing.assert_allclose(y, A @ x)


def _factor(draw, n_in: int, n_out: int) -> tuple[sp.csr_matrix, np.ndarray]:
    kind = draw(st.sampled_from(["dense", "select", "pool", "diag"]))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    if kind == "dense" or (kind == "diag" and n_in != n_out):
        A = sp.random(n_out, n_in, density=0.5, random_state=rng, format="csr")
    elif kind == "diag":
        A = sp.diags(rng.uniform(0.5, 2, n_in), format="csr")
    elif kind == "select":
        A = sp.csr_matrix(
            (np.ones(n_out), (np.arange(n_out), rng.integers(0, n_in, n_out))), shape=(n_out, n_in)
        )
    else:
        A = sp.csr_matrix((rng.random((n_out, n_in)) < 0.3) * 0.25)
    b = rng.normal(size=n_out) * draw(st.sampled_from([0.0, 1.0]))
    return A, b


@st.composite
def chains(draw):
    sizes = draw(st.lists(st.integers(1, 12), min_size=2, max_size=6))
    return [_factor(draw, sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]


@settings(max_examples=60, deadline=None)
@given(chains())
def test_segments_compute_the_chain_and_never_cost_more_than_fusing(factors) -> None:
    A, b = factors[0]
    for Ak, bk in factors[1:]:
        A, b = Ak @ A, Ak @ b + bk
    segments = plan_segments(factors)
    x = np.random.default_rng(0).normal(size=factors[0][0].shape[1])
    y = x
    for S, c in segments:
        y = S @ y + c
    np.testing.assert_allclose(y, A @ x + b, rtol=1e-9, atol=1e-9)
    levels = sum(segment_cost(*s)[0] for s in segments)
    time = sum(segment_cost(*s)[1] for s in segments)
    fused_levels, fused_time = segment_cost(sp.csr_matrix(A), b)
    assert (levels, time) <= (fused_levels, fused_time + 1e-9)


def test_cryptonets_example_has_the_slot_depth(tmp_path) -> None:
    graph = import_onnx(EXAMPLE / "model.onnx")
    PassManager([LowerToBatch(8)]).run(graph)
    assert [op.kind for op in graph.ops] == [
        "weighted_sum",
        "mul",
        "rescale",
        "signed_sum",
        "weighted_sum",
        "mul",
        "rescale",
        "weighted_sum",
    ]
    assert graph.outputs[0].type.level == 5
