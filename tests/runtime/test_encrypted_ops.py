"""The encrypted tier: one OpenFHE run per op family agrees with onnxruntime to 1e-2."""

from __future__ import annotations

import numpy as np
import pytest

import hec

from onnx_builders import run_onnxruntime
from op_cases import CASES, FAMILIES

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", FAMILIES)
def test_encrypted_run_matches_onnxruntime(name: str, tmp_path) -> None:
    model, x = CASES[name]()
    x = x[:1]
    artifact = hec.compile(model, tmp_path / "out")
    result = hec.run(artifact, x)
    ref = run_onnxruntime(model, x)
    np.testing.assert_allclose(result.logits, ref, atol=1e-2, rtol=0)
    assert (result.precision_bits > 10).all()
