"""The lowering's walk reports its progress: op by op, and, when long, the layer it is on."""

from __future__ import annotations

import hec
from hec.frontend import import_onnx
from hec.passes import chain_lowering, slot_packing_pipeline

from op_cases import CASES


def _compile(tmp_path) -> list[tuple]:
    model, _ = CASES["cryptonets_like"]()
    calls: list[tuple] = []
    hec.compile(
        model,
        tmp_path / "out",
        hec.CompileOptions(input_layout="direct"),
        progress=lambda *a: calls.append(a),
    )
    return [c for c in calls if c[0] == "compile: lower-to-slots"]


def test_a_short_walk_counts_its_ops_and_names_no_layer(tmp_path) -> None:
    model, _ = CASES["cryptonets_like"]()
    ops = len(import_onnx(model).ops)
    calls = _compile(tmp_path)
    assert all(len(c) == 3 for c in calls)  # no note: a small model prints nothing extra
    walk = [done for _, done, total in calls if total == ops]
    assert ops != len(slot_packing_pipeline(hec.CompileOptions()))  # told apart from passes
    assert walk[: ops + 1] == list(range(ops + 1))  # every op, then finished


def test_a_long_walk_names_the_layer_it_is_on(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(chain_lowering, "NOTE_EVERY", 0.0)  # every op counts as long
    notes = [c[3] for c in _compile(tmp_path) if len(c) == 4]
    model, _ = CASES["cryptonets_like"]()
    names = {n.name for n in model.graph.node} | {n.op_type for n in model.graph.node}
    assert notes and all(n.startswith("at layer '") for n in notes)
    layers = {n[len("at layer '") : -1] for n in notes}
    assert layers and all(any(part in names for part in name.split("+")) for name in layers)
