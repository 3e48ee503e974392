"""The simulated conformance tier: every selected ONNX node case, adapted, compiled, simulated.

A case fails on a wrong output or on an exception that is not a hec error; a refusal (a
``HecError``) passes, a case no adaptation fits is skipped with the reason. The few cases with
tensors over ``cases.LARGE`` elements are marked slow (tens of seconds each).
``docs/conformance.md`` counts the outcomes per op type (``scripts/conformance_table.py``).
"""

from __future__ import annotations

import pytest

from conformance.cases import is_large, selected_cases
from conformance.harness import run_case

CASES = selected_cases()
PARAMS = [
    pytest.param(n, marks=[pytest.mark.slow] if is_large(c) else []) for n, c in CASES.items()
]


@pytest.mark.parametrize("name", PARAMS)
def test_onnx_case(name: str, tmp_path) -> None:
    result = run_case(CASES[name], tmp_path)
    if result.status == "not adapted":
        pytest.skip(f"not adapted: {result.message}")
    assert result.status != "crash", (
        f"{name} ({result.op_type}): hec raised a non-hec exception: {result.message}\n"
        f"adaptations: {result.adaptations}\n{result.detail}"
    )
    assert result.status != "wrong", (
        f"{name} ({result.op_type}): wrong output: {result.message}\n"
        f"adaptations: {result.adaptations}"
    )
    assert result.status in ("pass", "approximated", "refused"), result
