"""The simulator against the definition of each slot op, and the artifact round trip."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hec.ir import CipherType, Graph, Layout
from hec.runtime.simulator import rotate, simulate_slots


@given(st.integers(1, 64), st.integers(-200, 200))
def test_rotate_is_cyclic_left_shift(slots: int, k: int) -> None:
    v = np.arange(slots, dtype=float)[None]
    out = rotate(v, k)[0]
    assert all(out[i] == v[0, (i + k) % slots] for i in range(slots))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=3), st.integers(0, 3))
def test_layout_pack_unpack_is_identity(shape: list[int], extra: int) -> None:
    size = int(np.prod(shape))
    layout = Layout(tuple(shape), 1 << (size.bit_length() + extra))
    x = np.random.default_rng(0).normal(size=(2, *shape))
    np.testing.assert_array_equal(layout.unpack(layout.pack(x)), x)


def test_matvec_semantics() -> None:
    S = 8
    g = Graph("m", "slot")
    x = g.add_input("x", CipherType(S, 0, 1, Layout((S,), S)))
    diags = np.random.default_rng(0).normal(size=(2, S))
    y = g.add(
        "matvec",
        [x],
        CipherType(S, 1, 1, Layout((S,), S)),
        {"offsets": (0, 3)},
        {"diags": diags, "bias": np.ones(S)},
    )
    g.outputs = [y]
    g.verify()
    v = np.arange(S, dtype=float)[None]
    expected = diags[0] * v + diags[1] * np.roll(v, -3) + 1
    np.testing.assert_allclose(simulate_slots(g, v)[0], expected)
