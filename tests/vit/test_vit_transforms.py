"""Encryption: exact round trips, layouts, per-image keys, and what each transform does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hec.vit.errors import ImageShapeError
from hec.vit.keys import BlockKey, block_positions
from hec.vit.transforms import decrypt, encrypt, encrypt_disposable


def test_digits_round_trip_every_setting(digits: np.ndarray) -> None:
    x = digits[:64]
    for negpos in ("none", "pixel", "block"):
        for shared in (True, False):
            key = BlockKey(
                seed=1,
                image_size=(8, 8),
                channels=1,
                patch=2,
                negpos=negpos,
                shared=shared,
                restrict=2,
            )
            e = encrypt(x, key)
            assert not np.array_equal(e, x)
            np.testing.assert_array_equal(decrypt(e, key), x)  # digits/16 are exact in float32


def test_photo_patches_uint8_round_trip_and_nhwc(photo_patches: np.ndarray) -> None:
    key = BlockKey(seed=2, image_size=(16, 16), channels=3, patch=4)
    e = encrypt(photo_patches, key)
    assert e.dtype == np.uint8
    np.testing.assert_array_equal(decrypt(e, key), photo_patches)
    nhwc = photo_patches.transpose(0, 2, 3, 1)
    e_nhwc = encrypt(nhwc, key, layout="NHWC")
    np.testing.assert_array_equal(e_nhwc.transpose(0, 3, 1, 2), e)
    np.testing.assert_array_equal(decrypt(e_nhwc, key, layout="NHWC"), nhwc)


def test_per_image_keys_match_one_by_one(photo_patches: np.ndarray) -> None:
    keys = BlockKey(seed=3, image_size=(16, 16), channels=3, patch=4, restrict=6).spawn(8)
    x = photo_patches[:8]
    e = encrypt(x, keys)
    for i in range(8):
        np.testing.assert_array_equal(e[i], encrypt(x[i], keys[i]))
    np.testing.assert_array_equal(decrypt(e, keys), x)
    # Different keys give different encryptions of the same image.
    same = encrypt(np.repeat(x[:1], 8, axis=0), keys)
    assert len({s.tobytes() for s in same}) == 8


def test_each_transform_does_what_it_says(photo_patches: np.ndarray) -> None:
    x = photo_patches[:4]
    off = dict(block_scramble=False, pixel_shuffle=False, negpos="none", channel_shuffle=False)
    base = dict(seed=5, image_size=(16, 16), channels=3, patch=4)
    assert np.array_equal(encrypt(x, BlockKey(**base, **off)), x)
    key = BlockKey(**base, **{**off, "block_scramble": True})
    pos = block_positions(key)
    blocks_x = x.reshape(4, -1)[:, pos]
    blocks_e = encrypt(x, key).reshape(4, -1)[:, pos]
    np.testing.assert_array_equal(blocks_e, blocks_x[:, key.material().block_perm])
    neg = encrypt(x, BlockKey(**base, **{**off, "negpos": "block"}))
    flipped = key.material().flip  # all false here; use the negpos key's own mask
    flipped = BlockKey(**base, **{**off, "negpos": "block"}).material().flip
    np.testing.assert_array_equal(
        neg.reshape(4, -1)[:, pos], np.where(flipped, 255 - blocks_x, blocks_x)
    )
    chan = encrypt(x, BlockKey(**base, **{**off, "channel_shuffle": True}))
    assert sorted(chan[:, :, 0, 0].tolist()[0]) == sorted(x[:, :, 0, 0].tolist()[0])
    # Pixel shuffling keeps each block's multiset of values.
    pix = encrypt(x, BlockKey(**base, **{**off, "pixel_shuffle": True})).reshape(4, -1)[:, pos]
    np.testing.assert_array_equal(np.sort(pix, axis=-1), np.sort(blocks_x, axis=-1))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64),
    p=st.sampled_from([1, 2, 4]),
    c=st.integers(1, 3),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    data=st.data(),
)
def test_round_trip_property(seed: int, p: int, c: int, grid: tuple[int, int], data) -> None:  # noqa: ANN001
    length = p * p * c
    g = data.draw(st.sampled_from([d for d in range(1, length + 1) if length % d == 0]))
    key = BlockKey(
        seed=seed,
        image_size=(grid[0] * p, grid[1] * p),
        channels=c,
        patch=p,
        restrict=g,
        negpos=data.draw(st.sampled_from(["none", "pixel", "block"])),
        shared=data.draw(st.booleans()),
    )
    x = np.random.default_rng(seed % 1000).integers(0, 256, (3, *key.image_shape), dtype=np.uint8)
    e = encrypt(x, key)
    np.testing.assert_array_equal(decrypt(e, key), x)
    index, _ = key.gather()
    assert sorted(index) == list(range(x[0].size))  # a permutation of the pixels


def test_bad_images_get_one_clear_line() -> None:
    key = BlockKey(seed=1, image_size=(8, 8), channels=3, patch=2)
    with pytest.raises(ImageShapeError, match="NHWC"):
        encrypt(np.zeros((2, 8, 8, 3), np.float32), key)
    with pytest.raises(ImageShapeError, match=r"expected \(N, 3, 8, 8\)"):
        encrypt(np.zeros((2, 3, 8, 9), np.float32), key)
    with pytest.raises(ImageShapeError, match="dtype int32"):
        encrypt(np.zeros((2, 3, 8, 8), np.int32), key)
    with pytest.raises(ImageShapeError, match="3 keys for 2 images"):
        encrypt(np.zeros((2, 3, 8, 8), np.float32), key.spawn(3))


def test_key_augmentation_stays_in_the_key_family(digits: np.ndarray) -> None:
    x = np.round(digits[:50] * 16).astype(np.uint8)
    family = BlockKey(
        seed=0,
        image_size=(8, 8),
        channels=1,
        patch=2,
        restrict=2,
        block_scramble=False,
        negpos="none",
        channel_shuffle=False,
    )
    keys = family.spawn(len(x))
    twice = encrypt_disposable(
        encrypt(x, keys, max_value=16), family, np.random.default_rng(0), max_value=16
    )
    # Still only swaps inside each pair of neighbours in a row: pairs keep their values.
    pairs = lambda a: np.sort(a.reshape(len(a), 8, 4, 2), axis=-1)  # noqa: E731
    np.testing.assert_array_equal(pairs(twice), pairs(x))
    assert not np.array_equal(twice, encrypt(x, keys, max_value=16))
    np.testing.assert_array_equal(decrypt(encrypt(x, keys, max_value=16), keys, max_value=16), x)
