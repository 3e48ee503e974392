"""The IR parser: exact text round trips in every dialect, default dumps read for their
structure print back unchanged, graph attributes, and one-line errors naming the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hec.errors import ParseError
from hec.frontend import import_onnx
from hec.ir import Graph, TensorType, interpret, print_graph
from hec.ir.parser import parse_graph
from hec.ir.printer import digest_table
from hec.ir.serialize import graph_from_json, graph_to_json
from hec.passes import LazyRelinearize, LowerToBatch, LowerToSlots, PassManager, ScheduleRotations
from hec.passes.expand_copies import ExpandCopies
from hec.runtime.batch_simulator import simulate_batch
from hec.runtime.simulator import simulate_slots

from op_cases import CASES

GOLDEN = Path(__file__).parents[1] / "passes" / "golden"

PIPELINES = {
    "tensor": [],
    "lower-to-slots": [LowerToSlots()],
    "schedule-rotations": [LowerToSlots(), ScheduleRotations()],
    "copies-readout": [LowerToSlots(readout="copies")],
    "expand-copies": [LowerToSlots(readout="copies"), ScheduleRotations(), ExpandCopies()],
    "batch": [LowerToBatch(16), LazyRelinearize()],
}


def _run(graph: Graph, x: np.ndarray) -> np.ndarray:
    """What ``graph`` computes on ``x``, in its dialect's executor."""
    if graph.dialect == "slot":
        return simulate_slots(graph, graph.inputs[0].type.layout.pack(x))[0]
    if graph.dialect == "batch":
        return simulate_batch(graph, x)[0]
    return interpret(graph, x)[0]


@pytest.mark.parametrize("stage", PIPELINES)
@pytest.mark.parametrize("name", ["cryptonets_like", "residual_across_levels"])
def test_exact_text_round_trips_and_computes_the_same(name: str, stage: str) -> None:
    model, x = CASES[name]()
    graph = import_onnx(model, name)
    PassManager(PIPELINES[stage]).run(graph)
    text = print_graph(graph, exact=True)
    parsed = parse_graph(text)
    assert print_graph(parsed, exact=True) == text
    assert str(parsed) == str(graph)
    if stage != "copies-readout":  # the simulator runs a readout only once expanded
        np.testing.assert_array_equal(_run(parsed, x), _run(graph, x))


def test_default_text_with_its_digest_table_rebuilds_the_graph() -> None:
    model, _ = CASES["cryptonets_like"]()
    graph = import_onnx(model, "cryptonets_like")
    PassManager(PIPELINES["expand-copies"]).run(graph)
    parsed = parse_graph(str(graph), digest_table(graph))
    assert print_graph(parsed, exact=True) == print_graph(graph, exact=True)


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.txt")), ids=lambda p: p.stem)
def test_golden_dumps_read_for_their_structure_print_back_unchanged(path: Path) -> None:
    text = path.read_text()
    text = text[: text.index("\n}\n") + 3]  # prune_blocks.txt holds a report after the graph
    stand_ins: dict = {}
    graph = parse_graph(text, stand_ins, structure_only=True)
    assert stand_ins, "a default dump prints digests"
    assert print_graph(graph, digests=stand_ins) == text


def _with_attributes() -> Graph:
    g = Graph("main")
    x = g.add_input("x", TensorType((4,)))
    g.outputs = [g.add("poly", [x], TensorType((4,)), {"coeffs": (0.1, 0.0, 1.0)})]
    g.attrs = {"readout": "matrix", "input_layout": "direct", "budget": None, "keys": (1, 2)}
    return g


def test_graph_attributes_print_parse_serialize_clone_and_move() -> None:
    g = _with_attributes()
    header = str(g).splitlines()[0]
    expected = "attributes {budget=None, input_layout='direct', keys=[1, 2], readout='matrix'} {"
    assert header.endswith(expected)
    assert parse_graph(str(g)).attrs == g.attrs
    structure, arrays = graph_to_json(g)
    assert graph_from_json(structure, arrays).attrs == g.attrs
    assert g.clone().attrs == g.attrs and g.clone().attrs is not g.attrs
    target = Graph("other")
    target.become(g)
    assert target.attrs == g.attrs
    g.attrs = {}
    assert "attributes" not in str(g) and "attrs" not in graph_to_json(g)[0]


GOOD = """tensor graph t(%0: tensor<4xf64>) {
  %1 = poly(%0) {coeffs=[0.5, 1.0]} : tensor<4xf64>
  return %1
}
"""


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "line 1: expected '<dialect> graph"),
        ("graph t() {\n}\n", "line 1: expected '<dialect> graph <name>('"),
        (GOOD.replace("(%0)", "(%7)"), "line 2: %7 is used before it is defined"),
        (GOOD.replace("f64>) {", "f64) {"), "line 1: expected a type"),
        (GOOD.replace(": tensor<4xf64>\n", ": tensor<5xf64>\n"), "line 2: result type"),
        (GOOD.replace("poly", "conv2"), "line 2: unknown op kind 'conv2'"),
        (GOOD.replace("1.0]", "1.0"), "line 2: expected ']'"),
        (GOOD.replace("{coeffs", "w=f64[1]{1.0} {coeffs"), "line 2: expected a constant name"),
        (GOOD.replace(" :", " w=f64[2]#0a0b0c0d :"), "line 2: constant #0a0b0c0d is not among"),
        (GOOD.replace(" :", " w=f64[2]{1.0} :"), "line 2: 1 values for a constant of shape"),
        (GOOD.replace("  return %1\n", ""), "line 3: expected '  return <values>'"),
        (GOOD + "extra\n", "line 5: expected nothing after the graph"),
        (GOOD.replace("\n}\n", "\n"), "line 4: expected '}' closing the graph"),
    ],
)
def test_bad_text_is_a_one_line_error_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_graph(text)
    assert "\n" not in str(info.value) and str(info.value).startswith(message), str(info.value)


_floats = st.floats(allow_nan=False, width=64) | st.sampled_from([1e-300, -0.0, 1.0, 2.0**60])


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 20),
    weights=st.lists(_floats, min_size=1, max_size=40),
    coeffs=st.lists(_floats, min_size=2, max_size=20),
    note=st.text(st.characters(blacklist_characters="\n"), max_size=12),
)
def test_exact_round_trip_of_random_tensor_graphs(n, weights, coeffs, note) -> None:
    g = Graph("random")
    x = g.add_input("x", TensorType((n,)))
    w = np.resize(np.asarray(weights), (n, 3))
    y = g.add("matmul", [x], TensorType((3,)), consts={"weight": w, "bias": w[0]}, origin=note)
    g.outputs = [g.add("poly", [y], TensorType((3,)), {"coeffs": tuple(coeffs)})]
    g.attrs = {"note": note, "scale": coeffs[0]}
    text = print_graph(g, exact=True)
    parsed = parse_graph(text)
    assert print_graph(parsed, exact=True) == text
    np.testing.assert_array_equal(parsed.ops[0].consts["weight"], w)
    assert parsed.ops[1].attrs == g.ops[1].attrs and parsed.attrs == g.attrs
