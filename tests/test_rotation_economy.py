"""Rotations and rotation keys of whole models: the scheduled programs against the BSGS optimum.

LeNet-5 (unpruned, ReLU → degree 2) is the issue's yardstick: per linear layer, the rotations
the report gives are within 10% of the brute-force optimum for that layer's own diagonal set
(``tests/bsgs_reference.py``), and all rotations together are at most a third
of its non-zero diagonals. Keys: the program rotates by exactly the amounts it has keys for.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import hec
from hec.calibrate import load_dataset
from hec.frontend import import_onnx
from hec.ir.slot_ops import rotation_amounts
from hec.optimize import make_he_friendly
from hec.passes import PassManager, slot_packing_pipeline
from hec.passes.lower_to_slots import LowerToSlots

from bsgs_reference import bsgs_optimum
from conftest import EXAMPLE, REPO

LENET = REPO / "examples" / "lenet5_digits"


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    options = hec.CompileOptions(degree=2)
    x, y = load_dataset(LENET / "calib.npz")
    art = hec.compile(
        LENET / "model.onnx", tmp_path_factory.mktemp("lenet"), options, calibration=x
    )
    graph = import_onnx(LENET / "model.onnx")
    make_he_friendly(LENET / "model.onnx", graph, options, x)
    chosen = replace(options, input_layout=art.report.input_layout.kind)
    lower = next(p for p in slot_packing_pipeline(chosen) if isinstance(p, LowerToSlots))
    PassManager([lower]).run(graph)  # the maps schedule-rotations receives
    return art, [op for op in graph.ops if op.kind == "matvec"]


def test_lenet5_rotations_per_layer_are_within_ten_percent_of_the_optimum(lenet) -> None:
    art, maps = lenet
    layers = {layer.name: layer for layer in art.report.layers}
    assert len(maps) == 5
    for op in maps:
        layer = layers[op.origin]
        offsets = np.asarray(op.attrs["offsets"])
        optimum = bsgs_optimum(offsets, op.inputs[0].type.slots)
        assert layer.diagonals == len(offsets)
        assert layer.rotations <= 1.1 * optimum, (op.origin, layer.rotations, optimum)


def test_lenet5_rotations_are_at_most_a_third_of_its_diagonals(lenet) -> None:
    totals = lenet[0].report.totals
    assert totals.rotation_key_bytes > 0
    assert totals.diagonals == sum(len(op.attrs["offsets"]) for op in lenet[1])
    assert 3 * totals.rotations <= totals.diagonals


def _used_rotations(art) -> set[int]:
    return {k for op in art.program.ops for k in rotation_amounts(op)}


def test_every_rotation_has_a_key_and_every_key_is_used(lenet, tmp_path) -> None:
    cryptonets = hec.compile(EXAMPLE / "model.onnx", tmp_path)
    for art in (lenet[0], cryptonets):
        assert _used_rotations(art) == set(art.params.rotation_indices)
        assert art.report.totals.rotation_keys == len(art.params.rotation_indices)


@pytest.mark.slow
def test_openfhe_holds_exactly_the_keys_the_program_rotates_by(tmp_path) -> None:
    from hec.runtime import Client

    art = hec.compile(EXAMPLE / "model.onnx", tmp_path)
    client = Client(art)
    cc = client.context
    used = {cc.FindAutomorphismIndex(k) for k in _used_rotations(art)}
    assert set(cc.GetExistingEvalAutomorphismKeyIndices(client.key_tag)) == used
