"""Keys: determinism, independence of components, restricted shuffles, files, key space."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hec.errors import HecError
from hec.vit.errors import KeyFileError
from hec.vit.keys import BlockKey, load_key, save_key


def _key(**kw: object) -> BlockKey:
    base = dict(seed=11, image_size=(8, 8), channels=3, patch=2)
    return BlockKey(**{**base, **kw})  # type: ignore[arg-type]


def test_same_seed_same_material_and_different_seed_differs() -> None:
    a, b, c = _key(), _key(), _key(seed=12)
    for x, y in zip(a.gather(), b.gather(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.gather()[0], c.gather()[0])


def test_components_are_drawn_independently() -> None:
    with_flip, without = _key(), _key(negpos="none")
    np.testing.assert_array_equal(with_flip.material().perm, without.material().perm)
    np.testing.assert_array_equal(with_flip.material().block_perm, without.material().block_perm)
    assert not without.material().flip.any()


@pytest.mark.parametrize("g", [1, 2, 3, 4, 6, 12])
def test_restricted_shuffle_stays_inside_groups(g: int) -> None:
    mat = _key(restrict=g, channel_shuffle=False, shared=False).material()
    groups = np.arange(12) // g
    assert (groups[mat.perm] == groups[None, :]).all()
    for row in mat.perm:
        assert sorted(row) == list(range(12))
    if g == 1:
        assert (mat.perm == np.arange(12)).all()


def test_shared_key_is_uniform_and_per_block_is_not() -> None:
    assert _key().material().uniform
    assert not _key(shared=False).material().uniform
    assert not _key(negpos="block", seed=3).material().uniform


def test_spawned_keys_are_distinct_and_reproducible() -> None:
    kids = _key().spawn(5)
    assert len({k.seed for k in kids}) == 5
    assert [k.seed for k in kids] == [k.seed for k in _key().spawn(5)]
    assert all(k.restrict == _key().restrict for k in kids)


def test_key_space_counts() -> None:
    space = _key(restrict=4).key_space()
    expected = math.log2(math.factorial(16)) + 3 * math.log2(math.factorial(4)) + 12 + math.log2(6)
    assert space.log2_total == pytest.approx(expected)
    assert (
        _key(block_scramble=False, pixel_shuffle=False, negpos="none", channel_shuffle=False)
        .key_space()
        .log2_total
        == 0
    )


def test_file_round_trip(tmp_path) -> None:  # noqa: ANN001
    key = BlockKey.generate((16, 32), 3, 4, restrict=6, negpos="block", shared=False)
    save_key(key, tmp_path / "k.json")
    assert load_key(tmp_path / "k.json") == key


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("seed"),
        lambda d: d.update(patch="2"),
        lambda d: d.update(format="other"),
        lambda d: d.update(restrict=5),
        lambda d: d.update(negpos="sometimes"),
        lambda d: d.update(image_size=[9, 8]),
    ],
)
def test_corrupt_key_files_name_the_file(tmp_path, edit) -> None:  # noqa: ANN001
    path = tmp_path / "k.json"
    data = _key().to_json()
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match="k.json") as info:
        load_key(path)
    assert isinstance(info.value, HecError)
    assert "\n" not in str(info.value)
