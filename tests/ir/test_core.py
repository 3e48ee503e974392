"""The graph: verification catches malformed IR; rewrites keep use lists right."""

from __future__ import annotations

import numpy as np
import pytest

from hec.ir import Graph, Op, TensorType, VerifyError
from hec.ir.serialize import graph_from_json, graph_to_json


def _chain() -> Graph:
    g = Graph("t")
    x = g.add_input("x", TensorType((4,)))
    y = g.add("matmul", [x], TensorType((3,)), consts={"weight": np.ones((4, 3))})
    z = g.add("poly", [y], TensorType((3,)), {"coeffs": (0.0, 0.0, 1.0)})
    g.outputs = [z]
    return g


def test_verify_accepts_a_well_formed_graph() -> None:
    _chain().verify()


def test_verify_rejects_a_wrong_result_type() -> None:
    g = _chain()
    g.ops[0].results[0].type = TensorType((5,))
    with pytest.raises(VerifyError, match="expected"):
        g.verify()


def test_verify_rejects_use_before_definition() -> None:
    g = _chain()
    g.ops.reverse()
    with pytest.raises(VerifyError, match="before definition"):
        g.verify()


def test_verify_rejects_unknown_kinds_per_dialect() -> None:
    g = _chain()
    g.dialect = "slot"
    with pytest.raises(VerifyError, match="slot dialect"):
        g.verify()


def test_replace_all_uses_and_erase() -> None:
    g = _chain()
    matmul, poly = g.ops
    new = Op("reshape", [g.inputs[0]], [TensorType((4,))], {"shape": (4,)})
    g.ops.insert(0, new)
    with pytest.raises(VerifyError):
        g.erase(matmul)  # still used by poly
    g.replace_all_uses_with(poly.result, matmul.result)
    g.erase(poly)
    g.erase(new)
    g.verify()
    assert g.outputs == [matmul.result] and matmul.result.uses == []


def test_clone_is_independent_but_shares_constants() -> None:
    g = _chain()
    c = g.clone()
    c.ops[1].attrs["coeffs"] = (1.0, 1.0)
    assert g.ops[1].attrs["coeffs"] == (0.0, 0.0, 1.0)
    assert c.ops[0].consts["weight"] is g.ops[0].consts["weight"]
    assert str(c) != str(g)


def test_serialization_round_trip() -> None:
    g = _chain()
    structure, arrays = graph_to_json(g)
    assert str(graph_from_json(structure, arrays)) == str(g)
