"""schedule-rotations against the baby-step/giant-step optimum, computed by brute force.

The optimum (``tests/bsgs_reference.py``) is computed independently of the scheduler; the
scheduler's count is read off the program it emits (``rotate`` ops).
"""

from __future__ import annotations

import numpy as np
import pytest

from hec.ir import Graph
from hec.ir.slot_ops import rotation_amounts
from hec.passes import PassManager, ScheduleRotations
from hec.runtime.simulator import simulate_slots

from bsgs_reference import bsgs_optimum, matvec_graph


def _scheduled_rotations(g: Graph) -> int:
    PassManager([ScheduleRotations()]).run(g)
    return sum(len(rotation_amounts(op)) for op in g.ops)  # rotate_sum terms included


def _random_sets(seed: int) -> list[tuple[int, np.ndarray]]:
    """Uniform sparse sets, and sets clustered around 0 like a convolution's ``±row ± col``."""
    rng = np.random.default_rng(seed)
    cases = []
    for slots in (32, 64, 128, 256):
        for size in (3, 7, 20, slots // 3):
            cases.append((slots, np.sort(rng.choice(slots, size, replace=False))))
        row = int(rng.integers(3, 9))
        taps = [r * row + c for r in range(-2, 3) for c in range(-2, 3)]
        channels = int(rng.integers(1, 4))
        conv = {(t - ch * slots // 4) % slots for t in taps for ch in range(channels)}
        cases.append((slots, np.array(sorted(conv))))
    return cases


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scheduler_is_within_ten_percent_of_the_brute_force_optimum(seed: int) -> None:
    for slots, offsets in _random_sets(seed):
        g = matvec_graph(slots, offsets, seed)
        v = np.random.default_rng(seed).normal(size=(2, slots))
        before = simulate_slots(g, v)[0]
        rotations = _scheduled_rotations(g)
        optimum = bsgs_optimum(offsets, slots)
        assert rotations <= 1.1 * optimum, (slots, offsets.tolist(), rotations, optimum)
        np.testing.assert_allclose(simulate_slots(g, v)[0], before, atol=1e-9)


def test_signed_offsets_split_a_convolution_better() -> None:
    # a 5x5 convolution on rows of 9 in 64 slots: offsets r·9 + c for |r|, |c| <= 2
    offsets = np.array(sorted({(r * 9 + c) % 64 for r in range(-2, 3) for c in range(-2, 3)}))
    unsigned_best = min(
        np.count_nonzero(np.unique(offsets % n1)) + np.count_nonzero(np.unique(offsets // n1))
        for n1 in range(1, 65)
    )
    rotations = _scheduled_rotations(matvec_graph(64, offsets))
    assert rotations == bsgs_optimum(offsets, 64) == 9
    assert unsigned_best == 11
