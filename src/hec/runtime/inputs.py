"""Shape checks shared by every way of running a program."""

from __future__ import annotations

import numpy as np

from hec.errors import InputError

__all__ = ["as_batch"]


def as_batch(x: np.ndarray, sample_shape: tuple[int, ...], what: str = "input") -> np.ndarray:
    """Return ``x`` as ``[B, *sample_shape]`` float64; one sample may come without batch axis."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise InputError(f"{what}: expected numbers, got dtype {x.dtype}")
    if x.shape == sample_shape:
        x = x[None]
    if x.shape[1:] != sample_shape:
        want = "x".join(map(str, sample_shape))
        raise InputError(
            f"{what}: shape {list(x.shape)} does not match the model input [{want}] or [B, {want}]"
        )
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: contains NaN or infinity")
    return x.astype(np.float64)
