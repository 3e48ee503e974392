"""affine_map: windowed ops probed in disjoint groups match probing one input at a time."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hec.ir import Graph, Op, TensorType
from hec.ir.linear_maps import affine_map
from hec.ir.tensor_ops import evaluate_op


def _op(kind: str, in_shape, attrs, consts):
    g = Graph()
    x = g.add_input("x", TensorType(in_shape))
    probe = Op(kind, [], [], attrs, consts)  # the result's shape, from the op's own semantics
    out = evaluate_op(probe, np.zeros((1, *in_shape))).shape[1:]
    g.outputs = [g.add(kind, [x], TensorType(out), attrs, consts)]
    g.verify()
    return g.ops[0]


def _dense(op) -> sp.csr_matrix:
    """Column j = f(e_j) - f(0): the definition, probed one input at a time."""
    shape = op.inputs[0].shape
    n = int(np.prod(shape))
    b = evaluate_op(op, np.zeros((1, *shape))).reshape(-1)
    cols = evaluate_op(op, np.eye(n).reshape(n, *shape)).reshape(n, -1) - b
    return sp.csr_matrix(cols.T)


CONVS = [  # (input shape, weight shape, strides, pads, dilations)
    ((3, 9, 9), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 11, 10), (5, 2, 5, 5), (2, 2), (2, 2, 2, 2), (1, 1)),
    ((2, 12, 12), (3, 2, 3, 2), (1, 3), (0, 1, 2, 0), (2, 1)),
    ((4, 16), (2, 4, 3), (2,), (1, 1), (3,)),
]


@pytest.mark.parametrize("case", CONVS, ids=lambda c: f"conv{c[0]}x{c[1]}")
def test_conv_groups_match_one_input_at_a_time(case):
    in_shape, w_shape, strides, pads, dil = case
    rng = np.random.default_rng(0)
    consts = {"weight": rng.normal(size=w_shape), "bias": rng.normal(size=w_shape[0])}
    op = _op("conv", in_shape, {"strides": strides, "pads": pads, "dilations": dil}, consts)
    A, b = affine_map(op)
    want = _dense(op)
    assert A.shape == want.shape
    assert abs(A - want).max() < 1e-12
    assert A.nnz == want.nnz  # no stray entries from a mis-decoded group
    np.testing.assert_allclose(b, evaluate_op(op, np.zeros((1, *in_shape))).reshape(-1))


@pytest.mark.parametrize("include_pad", [0, 1])
def test_avgpool_groups_match(include_pad):
    attrs = {"kernel": (3, 2), "strides": (2, 2), "pads": (1, 0, 1, 1)}
    op = _op("avgpool", (2, 7, 8), {**attrs, "count_include_pad": include_pad}, {})
    A, _ = affine_map(op)
    assert abs(A - _dense(op)).max() < 1e-15


def test_memo_returns_copies():
    consts = {"weight": np.ones((2, 1, 3, 3))}
    op = _op("conv", (1, 5, 5), {"strides": (1, 1), "pads": (0,) * 4, "dilations": (1, 1)}, consts)
    A, _ = affine_map(op)
    A.data[:] = 7.0  # a caller scaling its copy must not change the next caller's
    again, _ = affine_map(op)
    assert again.max() == 1.0


def test_group_probe_names_each_input_even_with_cancelling_weights():
    """Weights of mixed sign and size: the rank ratio still picks the one input of each output."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 2, 3, 3)) * np.array([1e-6, 1.0, 1e4])[:, None, None, None]
    op = _op(
        "conv", (2, 8, 8), {"strides": (1, 1), "pads": (1,) * 4, "dilations": (1, 1)}, {"weight": w}
    )
    A, _ = affine_map(op)
    assert abs(A - _dense(op)).max() <= 1e-12 * abs(w).max()


ONE_SOURCE = {  # kind -> (input shape, attrs, consts): each output reads at most one input
    "scale_shift": (
        (3, 5, 4),
        {},
        {
            "scale": np.array([2.5, 0.0, -1e-3])[:, None, None],
            "shift": np.array([1.0, -3.0, 7.5])[:, None, None],
        },
    ),  # noqa: E501
    "pad": ((2, 4, 5), {"pads": (0, 1, 2, 0, 2, 1), "mode": "constant", "value": 0.75}, {}),
    "pad-reflect": ((2, 4, 5), {"pads": (0, 1, 2, 0, 2, 1), "mode": "reflect", "value": 0.0}, {}),  # noqa: E501
    "transpose": ((3, 4, 5), {"perm": (2, 0, 1)}, {}),
    "reshape": ((3, 4, 5), {"shape": (12, 5)}, {}),
}


@pytest.mark.parametrize("name", sorted(ONE_SOURCE))
def test_one_source_ops_probed_in_one_group_match_one_input_at_a_time(name):
    """All inputs probed together (two evaluations): the same matrix, shifts and pad values in
    the bias, a zero scale leaving its column empty."""
    in_shape, attrs, consts = ONE_SOURCE[name]
    op = _op(name.split("-")[0], in_shape, attrs, consts)
    A, b = affine_map(op)
    want = _dense(op)
    assert A.shape == want.shape and A.nnz == want.nnz
    assert abs(A - want).max() < 1e-12
    x = np.random.default_rng(2).normal(size=(3, *in_shape))
    got = (A @ x.reshape(3, -1).T).T + b
    np.testing.assert_allclose(got, evaluate_op(op, x).reshape(3, -1), atol=1e-12)
