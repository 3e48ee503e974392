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
from hec.vit.keys import BlockKey, block_positions

__all__ = ["encrypt", "decrypt", "encrypt_disposable", "sample_gathers", "default_max_value"]

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
    gathers = [k.gather(layout) for k in keys]
    if len(keys) == 1:
        index, flip = gathers[0]
    else:
        index = np.stack([g[0] for g in gathers])
        flip = np.stack([g[1] for g in gathers])
    out = _gather(batch, index, flip, max_value, inverse)
    return out[0] if single else out


def _gather(
    batch: np.ndarray, index: np.ndarray, flip: np.ndarray, max_value: float | None, inverse: bool
) -> np.ndarray:
    """Apply (or invert) gather ``index`` and ``flip``: 1-D for every image, or one row each."""
    dtype = batch.dtype
    vmax = default_max_value(dtype) if max_value is None else max_value
    flat = batch.reshape(batch.shape[0], -1)
    # Negative-positive as x * mul + add with mul = -1, add = max where flipped: two streaming
    # ops instead of a select. Exact: -x + max is the same rounding as max - x for floats, and
    # for unsigned integers the arithmetic wraps modulo 2^bits to the in-range max - x.
    minus_one = np.iinfo(dtype).max if dtype.kind == "u" else -1
    mul = np.where(flip, minus_one, 1).astype(dtype)
    add = np.where(flip, vmax, 0).astype(dtype)
    if inverse:
        unflipped = flat * mul
        unflipped += add
        if index.ndim == 1:
            # A gather through the inverse permutation is much faster than a scatter.
            return np.take(unflipped, np.argsort(index), axis=1).reshape(batch.shape)
        out = np.empty_like(flat)
        np.put_along_axis(out, index, unflipped, axis=1)
        return out.reshape(batch.shape)
    out = (
        np.take(flat, index, axis=1) if index.ndim == 1 else np.take_along_axis(flat, index, axis=1)
    )
    out *= mul
    out += add
    return out.reshape(batch.shape)


def sample_gathers(
    template: BlockKey, n: int, rng: np.random.Generator, layout: str = "NCHW"
) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices and flip masks of ``n`` random keys with ``template``'s settings, drawn at
    once (vectorised). The keys themselves are never formed, so nothing can decrypt the result.

    Returns:
        ``(index, flip)``, each ``(n, C*H*W)``; see ``BlockKey.gather``.
    """
    nb, length, c, g = template.num_blocks, template.block_len, template.channels, template.group
    rows = 1 if template.shared else nb
    if template.block_scramble:
        block_perm = rng.random((n, nb)).argsort(axis=1)
    else:
        block_perm = np.broadcast_to(np.arange(nb), (n, nb))
    pix = rng.random((n, rows, length // g, g)).argsort(axis=-1)
    pix = (pix + np.arange(0, length, g)[:, None]).reshape(n, rows, length)
    if template.channel_shuffle:
        chan = rng.random((n, rows, c)).argsort(axis=-1)
    else:
        chan = np.broadcast_to(np.arange(c), (n, rows, c))
    chan_map = np.arange(length) // c * c + np.tile(chan, (1, 1, length // c))
    perm = np.broadcast_to(np.take_along_axis(chan_map, pix, axis=-1), (n, nb, length))
    if template.negpos == "pixel":
        flip = np.broadcast_to(rng.random((n, rows, length)) < 0.5, (n, nb, length))
    elif template.negpos == "block":
        flip = np.broadcast_to(rng.random((n, nb, 1)) < 0.5, (n, nb, length))
    else:
        flip = np.zeros((n, nb, length), dtype=bool)
    pos = block_positions(template, layout)
    src = pos[block_perm[:, :, None], perm]
    index = np.empty((n, pos.size), dtype=np.intp)
    flips = np.empty((n, pos.size), dtype=bool)
    index[:, pos.ravel()] = src.reshape(n, -1)
    flips[:, pos.ravel()] = flip.reshape(n, -1)
    return index, flips


def encrypt_disposable(
    images: np.ndarray,
    template: BlockKey,
    rng: np.random.Generator,
    *,
    layout: str = "NCHW",
    max_value: float | None = None,
) -> np.ndarray:
    """Encrypt every image in a batch under its own random key with ``template``'s settings,
    forgetting the keys at once (nobody can decrypt the result).

    Faster than ``encrypt(x, template.spawn(n))``, whose keys can be re-derived from
    ``template.seed``. Applied to images already encrypted with keys of this family it gives
    another encryption under a random key of the family (permutations and flips compose), which
    is how ``train.fit`` augments encrypted training data without any key.
    """
    images = np.asarray(images)
    _check_shape(images, [template], layout)
    index, flip = sample_gathers(template, images.shape[0], rng, layout)
    return _gather(images, index, flip, max_value, inverse=False)


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
