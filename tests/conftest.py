"""Shared test set-up: one OpenMP thread, repo paths, and the reference comparison."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
TESTS = Path(__file__).parent
REPO = TESTS.parent
EXAMPLE = REPO / "examples" / "cryptonets_digits"
sys.path.insert(0, str(TESTS))


def assert_matches_reference(out: np.ndarray, ref: np.ndarray, rel: float = 1e-6) -> None:
    """``out`` equals the float32 onnxruntime reference to ``rel`` times its magnitude."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(out - ref).max())
    assert err <= rel * scale, f"max |diff| {err:.3g} > {rel:g} x {scale:.3g}"
