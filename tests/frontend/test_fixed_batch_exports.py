"""Fixed-batch dynamo exports (tests/fixtures/fixed_batch): per-sample reshapes and gathers that
drop the batch axis compile, and agree with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hec
from hec.errors import UnsupportedOpError
from hec.frontend import import_onnx, load_model
from hec.ir import interpret

from conftest import TESTS, assert_matches_reference

FIXTURES = TESTS / "fixtures" / "fixed_batch"
MODELS = sorted(FIXTURES.glob("*.onnx"))


def _io(path: Path) -> tuple[np.ndarray, np.ndarray]:
    case = path.name.split(".")[0]
    return np.load(FIXTURES / f"{case}.input.npy"), np.load(FIXTURES / f"{case}.expected.npy")


def test_fixtures_exist() -> None:
    assert {p.name.split(".")[0] for p in MODELS} == {"adaptive_pool", "as_strided"}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_fixed_batch_export_interprets_like_torch(path: Path) -> None:
    x, expected = _io(path)
    graph = import_onnx(path)
    assert "select" in {op.kind for op in graph.ops}
    assert_matches_reference(interpret(graph, x)[0], expected, rel=1e-5)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_fixed_batch_export_compiles_and_simulates(path: Path, tmp_path) -> None:
    x, expected = _io(path)
    artifact = hec.compile(path, tmp_path / "out")
    assert_matches_reference(hec.simulate(artifact, x), expected, rel=1e-5)


def test_the_same_plumbing_with_a_dynamic_batch_is_refused() -> None:
    """A dynamic batch axis makes the flat reshape wrong for batch > 1: refused, one line."""
    model = load_model(FIXTURES / "as_strided.dynamo.onnx")
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.dim_param = "batch"
    from onnx import shape_inference

    del model.metadata_props[:]
    with pytest.raises(UnsupportedOpError, match="batch axis.*fixed batch of 1") as err:
        import_onnx(shape_inference.infer_shapes(model))
    assert "\n" not in str(err.value)
