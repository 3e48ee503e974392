"""The image data the ViT experiments use: only what ships inside scikit-learn (no downloads).

* ``load_digits``: 1,797 grey 8x8 digits with values 0..16 (BSD-3, UCI ML hand-written digits).
* ``load_sample_images``: two 427x640 RGB photos (CC BY 2.0, see scikit-learn's
  ``datasets/images/README.txt``), cut here into small patches. Decoding the JPEGs needs Pillow.
"""

from __future__ import annotations

import numpy as np

from hec.errors import EnvironmentProblem

__all__ = ["digits", "photo_patches"]


def digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: ``(1797, 1, 8, 8)`` uint8 with values 0..16 and ``(1797,)`` labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images[:, None].astype(np.uint8), data.target.astype(np.int64)


def photo_patches(n: int = 64, size: int = 16, seed: int = 0, min_std: float = 0.0) -> np.ndarray:
    """``n`` random ``size x size`` RGB patches of the two sample photos, ``(n, 3, size, size)``
    uint8, half from each photo; patches whose pixel standard deviation (on 0..255) is below
    ``min_std`` are drawn again (flat sky hides nothing an attack could recover)."""
    try:
        from sklearn.datasets import load_sample_images

        photos = load_sample_images().images
    except ImportError as exc:
        raise EnvironmentProblem(
            f"reading scikit-learn's sample photos needs Pillow ({exc}); pip install pillow"
        ) from None
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        img = photos[len(out) % 2]
        y = rng.integers(0, img.shape[0] - size + 1)
        x = rng.integers(0, img.shape[1] - size + 1)
        patch = img[y : y + size, x : x + size]
        if patch.std() >= min_std:
            out.append(patch.transpose(2, 0, 1))
    return np.stack(out).astype(np.uint8)
