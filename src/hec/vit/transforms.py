"""Encrypt and decrypt batches of images block-wise (numpy, vectorised, exact).

Each key reduces to one gather index and one flip mask over the flattened image
(``BlockKey.gather``), so a batch is encrypted with a single ``take`` and ``where``; a batch with
one key per image stacks the per-image indices. Permutations are exact for any dtype; the
negative-positive step ``x -> max - x`` is exact on unsigned integer images (``max`` = the dtype's
maximum, or a smaller ``max_value`` such as 16 for scikit-learn digits) and on floats whose values
are multiples of a power of two (digits / 16). On other floats ``max - (max - x)`` can differ from
``x`` by one rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hec.vit.errors import ImageShapeError
from hec.vit.keys import BlockKey

__all__ = ["encrypt", "decrypt", "default_max_value"]

Keys = BlockKey | Sequence[BlockKey]


def default_max_value(dtype: np.dtype) -> float | int:
    """The ``max`` of ``x -> max - x``: 1 for floats, the largest value for unsigned integers."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return 1.0
    if dtype.kind == "u":
        return int(np.iinfo(dtype).max)
    raise ImageShapeError(
        f"images of dtype {dtype} are not supported: use floats in [0, 1] or "
        f"unsigned integers (uint8)"
    )


def encrypt(
    images: np.ndarray, key: Keys, *, layout: str = "NCHW", max_value: float | None = None
) -> np.ndarray:
    """Encrypt images block-wise.

    Args:
        images: ``(N, C, H, W)`` / ``(N, H, W, C)`` batch, or one image without the batch axis.
        key: one key for every image, or a sequence of ``N`` keys (one per image; e.g.
            ``template.spawn(N)`` for disposable per-image keys). All keys need the same shape.
        layout: ``"NCHW"`` or ``"NHWC"``.
        max_value: the ``max`` of the negative-positive step; see ``default_max_value``.

    Returns:
        The encrypted images, same shape and dtype.

    Raises:
        ImageShapeError: the images' shape or dtype does not fit the key.
    """
    return _apply(images, key, layout, max_value, inverse=False)


def decrypt(
    images: np.ndarray, key: Keys, *, layout: str = "NCHW", max_value: float | None = None
) -> np.ndarray:
    """Invert ``encrypt`` with the same key(s) and options."""
    return _apply(images, key, layout, max_value, inverse=True)


def _apply(
    images: np.ndarray, key: Keys, layout: str, max_value: float | None, inverse: bool
) -> np.ndarray:
    images = np.asarray(images)
    keys = [key] if isinstance(key, BlockKey) else list(key)
    if not keys:
        raise ImageShapeError("no key given")
    single = images.ndim == 3
    batch = images[None] if single else images
    _check_shape(batch, keys, layout)
    n = batch.shape[0]
    if len(keys) not in (1, n):
        raise ImageShapeError(f"{len(keys)} keys for {n} images: give one key, or one per image")
    vmax = np.asarray(
        default_max_value(batch.dtype) if max_value is None else max_value, dtype=batch.dtype
    )
    flat = batch.reshape(n, -1)
    gathers = [k.gather(layout) for k in keys]
    if len(keys) == 1:
        index, flip = gathers[0]
        if inverse:
            out = np.empty_like(flat)
            out[:, index] = np.where(flip, vmax - flat, flat)
        else:
            out = flat[:, index]
            out = np.where(flip, vmax - out, out)
    else:
        index = np.stack([g[0] for g in gathers])
        flip = np.stack([g[1] for g in gathers])
        if inverse:
            out = np.empty_like(flat)
            np.put_along_axis(out, index, np.where(flip, vmax - flat, flat), axis=1)
        else:
            out = np.take_along_axis(flat, index, axis=1)
            out = np.where(flip, vmax - out, out)
    out = out.reshape(batch.shape)
    return out[0] if single else out


def _check_shape(batch: np.ndarray, keys: list[BlockKey], layout: str) -> None:
    if layout not in ("NCHW", "NHWC"):
        raise ImageShapeError(f"layout must be NCHW or NHWC, got {layout!r}")
    first = keys[0]
    if any(k.image_shape != first.image_shape or k.patch != first.patch for k in keys):
        raise ImageShapeError("per-image keys must share image size, channels and patch")
    c, h, w = first.image_shape
    want = (c, h, w) if layout == "NCHW" else (h, w, c)
    other = (h, w, c) if layout == "NCHW" else (c, h, w)
    if batch.ndim != 4 or batch.shape[1:] != want:
        hint = ""
        if batch.ndim == 4 and batch.shape[1:] == other and want != other:
            hint = (
                f"; these look like {'NHWC' if layout == 'NCHW' else 'NCHW'} images, "
                f"pass layout/--layout accordingly"
            )
        raise ImageShapeError(
            f"images of shape {tuple(batch.shape)} do not fit the key: expected "
            f"(N, {', '.join(map(str, want))}) in {layout} for a {h}x{w} image with {c} "
            f"channel(s){hint}"
        )
