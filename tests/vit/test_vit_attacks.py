"""Attacks: what block scrambling, pixel shuffling and negative-positive hide from them."""

from __future__ import annotations

import numpy as np
import pytest

from hec.vit.attacks import estimate_flips, score_attacks, solve_jigsaw, thumbnail_attack
from hec.vit.keys import BlockKey
from hec.vit.transforms import encrypt


@pytest.fixture(scope="module")
def textured(photo_patches: np.ndarray) -> np.ndarray:
    """The vendored 16x16 patches with visible structure, as floats in [0, 1]."""
    keep = photo_patches.reshape(len(photo_patches), -1).std(axis=1) > 20
    return photo_patches[keep][:8] / np.float32(255)


def _keys(n: int, patch: int = 4, **setting: object) -> list[BlockKey]:
    return BlockKey(seed=8, image_size=(16, 16), channels=3, patch=patch, **setting).spawn(n)


def test_jigsaw_reassembles_an_unscrambled_image_exactly(textured: np.ndarray) -> None:
    # With nothing to undo, greedy placement of a smooth image returns it in its own order.
    res = solve_jigsaw(textured[0], 4)
    assert res.image.shape == textured[0].shape
    assert sorted(res.placement.ravel()) == list(range(16))


def test_pixel_shuffling_defeats_the_jigsaw_solver(textured: np.ndarray) -> None:
    off = dict(negpos="none", channel_shuffle=False)
    scrambled = _keys(len(textured), pixel_shuffle=False, **off)
    shuffled = _keys(len(textured), **off)
    s1 = score_attacks(textured, scrambled, encrypt(textured, scrambled))
    s2 = score_attacks(textured, shuffled, encrypt(textured, shuffled))
    assert s1.jigsaw_neighbours > 0.3
    assert s1.jigsaw_pixels > 0.5
    assert s2.jigsaw_neighbours < s1.jigsaw_neighbours / 2
    assert s2.jigsaw_pixels < 0.35


def test_shared_flips_are_found_by_block_statistics(textured: np.ndarray) -> None:
    # Patch 2: 64 blocks of 12 values per image, enough to estimate their correlations.
    right = []
    for i, x in enumerate(textured):
        key = BlockKey(
            seed=i, image_size=(16, 16), channels=3, patch=2, block_scramble=False, negpos="pixel"
        )
        truth = key.material().flip[0].reshape(2, 2, 3).transpose(2, 0, 1).ravel()
        guess = estimate_flips(encrypt(x, key), 2)
        right.append(max((guess == truth).mean(), (guess != truth).mean()))
    assert np.mean(right) > 0.8  # a wrong estimator scores about 0.6


def _thumb_corr(plain: np.ndarray, keys: list[BlockKey]) -> float:
    out = []
    for x, key in zip(plain, keys, strict=True):
        guess = thumbnail_attack(encrypt(x, key), key.patch)
        truth = x.reshape(3, 8, 2, 8, 2).mean(axis=(0, 2, 4))
        out.append(abs(np.corrcoef(guess.ravel(), truth.ravel())[0, 1]))
    return float(np.mean(out))


def test_thumbnail_survives_shuffling_but_not_scrambling(textured: np.ndarray) -> None:
    kept = _keys(len(textured), patch=2, block_scramble=False)  # shuffle + negpos + colour
    moved = _keys(len(textured), patch=2)
    assert _thumb_corr(textured, kept) > 0.9
    assert _thumb_corr(textured, moved) < 0.5
