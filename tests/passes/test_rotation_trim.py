"""rotation_allocation.trim: from the whole network down to a rotation budget, each removal
from the map whose loss rises least per rotation saved (synthetic chains and loss)."""

from __future__ import annotations

import numpy as np

from hec.passes.rotation_allocation import MapChain, trim


def _chain(index: int, rotations: list[int], kept: list[int]) -> MapChain:
    steps = [np.array([index * 100 + p]) for p in range(len(rotations) - 1)]
    return MapChain(index, steps, np.asarray(rotations), np.asarray(kept))


def test_trim_cuts_the_cheap_map_first_and_stops_at_the_budget() -> None:
    # map 0: each rotation removed costs 1.0 of loss; map 1: 0.1 a rotation
    chains = [
        _chain(0, [8, 6, 4, 2, 1], [50, 40, 30, 20, 10]),
        _chain(1, [8, 6, 4, 2, 1], [9, 7, 5, 3, 1]),
    ]
    cost = (1.0, 0.1)
    seen = []

    def loss(prefix: list[int], start: int) -> tuple[float, list[int]]:
        value = sum(
            c * (8 - int(ch.rotations[p])) for c, ch, p in zip(cost, chains, prefix, strict=True)
        )
        return value, list(prefix)

    prefix = trim(chains, 2, 12, loss, seen.append, {0: 0, 1: 1})
    used = 2 + sum(int(c.rotations[p]) for c, p in zip(chains, prefix, strict=True))
    assert used <= 12
    assert prefix[1] > 0 and prefix[0] == 0  # only the cheap map lost rotations
    assert seen[-1] == prefix  # the chosen state is the one accepted last


def test_trim_then_removes_weights_down_to_max_kept() -> None:
    chains = [_chain(0, [4, 4, 4, 2], [30, 20, 10, 5])]

    def loss(prefix: list[int], start: int) -> tuple[float, None]:
        return float(prefix[0]), None

    prefix = trim(chains, 0, 10, loss, lambda s: None, {0: 0}, max_kept=15)
    assert int(chains[0].kept[prefix[0]]) <= 15
    assert prefix[0] == 2  # no further than the weights asked for
