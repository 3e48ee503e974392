"""Shared helpers of the ViT image-encryption tests."""

from __future__ import annotations

import os

import numpy as np
import pytest

from .vit_testlib import FIXTURES

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """scikit-learn digits scaled to [0, 1]: (1797, 1, 8, 8) float32 (values k/16, exact)."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:, None] / 16.0).astype(np.float32)


@pytest.fixture(scope="session")
def photo_patches() -> np.ndarray:
    """32 RGB 16x16 patches of scikit-learn's sample photos, uint8 NCHW (vendored: decoding the
    JPEGs needs Pillow; see fixtures/make_fixtures.py and fixtures/README.md for the licence)."""
    return np.load(FIXTURES / "photo_patches.npz")["patches"]
