"""Every supported op: the tensor interpreter and the compiled program vs onnxruntime."""

from __future__ import annotations

import pytest

import hec
from hec.frontend import import_onnx
from hec.ir import interpret

from conftest import assert_matches_reference
from onnx_builders import run_onnxruntime
from op_cases import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_interpreter_matches_onnxruntime(name: str) -> None:
    model, x = CASES[name]()
    graph = import_onnx(model)
    assert_matches_reference(interpret(graph, x)[0], run_onnxruntime(model, x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_simulated_program_matches_onnxruntime(name: str, tmp_path) -> None:
    model, x = CASES[name]()
    artifact = hec.compile(model, tmp_path / "out")
    assert_matches_reference(hec.simulate(artifact, x), run_onnxruntime(model, x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_packed_program_matches_onnxruntime(name: str, tmp_path) -> None:
    model, x = CASES[name]()
    options = hec.CompileOptions(packing="batch", batch_size=len(x))
    artifact = hec.compile(model, tmp_path / "out", options)
    assert artifact.report.packing == "batch" and artifact.report.totals.rotations == 0
    assert_matches_reference(hec.simulate(artifact, x), run_onnxruntime(model, x))
