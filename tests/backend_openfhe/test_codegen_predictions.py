"""The generated stand-alone programs predict like hec.metrics: argmax of several outputs, a
threshold on one (an argmax of one output would always say class 0)."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.metrics import predictions

from onnx_builders import ModelBuilder


@pytest.mark.parametrize("outputs, word", [(1, "class"), (3, "argmax")])
def test_generated_program_prediction_line(tmp_path, outputs: int, word: str) -> None:
    b = ModelBuilder((4,), seed=2)
    model = b.build(b.node("Gemm", ["input", b.weight(4, outputs)]))
    hec.compile(model, tmp_path / "out")
    source = (tmp_path / "out" / "openfhe_program.py").read_text()
    line = next(s for s in source.splitlines() if f'print("{word}:"' in s)
    expression = line.split(",", 1)[1].rsplit(")", 1)[0].strip()
    for y in (np.array([-0.3, 0.2, 0.9][:outputs]), np.array([0.7, -0.1, 0.4][:outputs])):
        got = eval(expression, {"np": np, "y": y})  # the program's own prediction
        expected = predictions(y[None, :])[0]
        assert got == expected
