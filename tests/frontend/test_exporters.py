"""Models as torch's TorchScript and dynamo exporters write them (tests/fixtures/exporters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hec
from hec.frontend import import_onnx
from hec.ir import interpret
from hec.passes.replace_activations import CalibrationMissing

from conftest import TESTS, assert_matches_reference

FIXTURES = TESTS / "fixtures" / "exporters"
MODELS = sorted(p for p in FIXTURES.glob("*.onnx") if not p.name.startswith("unsupported"))


def _case(path: Path) -> str:
    return path.name.split(".")[0]


def _io(path: Path) -> tuple[np.ndarray, np.ndarray]:
    case = _case(path)
    return np.load(FIXTURES / f"{case}.input.npy"), np.load(FIXTURES / f"{case}.expected.npy")


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_exported_model_interprets_like_torch(path: Path) -> None:
    x, expected = _io(path)
    assert_matches_reference(interpret(import_onnx(path), x)[0], expected, rel=1e-5)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_exported_model_compiles_and_simulates(path: Path, tmp_path) -> None:
    x, expected = _io(path)
    artifact = hec.compile(path, tmp_path / "out")
    assert_matches_reference(hec.simulate(artifact, x), expected, rel=1e-5)


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.glob("unsupported_relu.*.onnx")), ids=lambda p: p.name
)
def test_exported_relu_needs_calibration(path: Path, tmp_path) -> None:
    with pytest.raises(CalibrationMissing, match="relu.*--calib"):
        hec.compile(path, tmp_path / "out")
    x, _ = _io(path)
    calib = np.random.default_rng(0).uniform(0, 1, size=(64, *x.shape[1:]))
    art = hec.compile(path, tmp_path / "out", calibration=calib)
    assert [row["replaces"] for row in art.report.activations] == ["relu"]


def test_both_exporters_are_covered() -> None:
    names = {p.name for p in MODELS}
    assert any(".ts." in n for n in names) and any(".dynamo." in n for n in names)
    assert any(n.startswith("external_data") for n in names)
