"""The plan travels: ``hec optimize`` records the decisions its pruning counted under in the
ONNX model (``metadata_props``), and ``hec compile`` replays them without options repeated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests.replay.cases import CASES

import hec
from hec.errors import ModelError
from hec.optimize import optimize
from hec.options import CompileOptions
from hec.plan import PLAN_KEY, Plan, read_plan, replay_plan, write_plan
from hec.prune import PruneOptions

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cryptonets_digits"


def test_plan_round_trips_through_onnx_metadata() -> None:
    model = onnx.load(str(EXAMPLE / "model.onnx"))
    assert read_plan(model) is None
    plan = Plan(input_layout="replicated", output_layouts="anchored", readout="copies", slots=256)
    write_plan(model, plan)
    write_plan(model, plan)  # replaces, never duplicates
    assert [p.key for p in model.metadata_props].count(PLAN_KEY) == 1
    again = onnx.load_from_string(model.SerializeToString())
    assert read_plan(again) == plan


def test_unknown_plan_version_is_one_clear_error() -> None:
    model = onnx.load(str(EXAMPLE / "model.onnx"))
    entry = model.metadata_props.add()
    entry.key, entry.value = PLAN_KEY, json.dumps({"version": 99, "readout": "copies"})
    with pytest.raises(ModelError, match="--no-plan"):
        read_plan(model, "m.onnx")


def test_options_at_their_defaults_take_the_plan() -> None:
    plan = Plan(input_layout="im2col", readout="copies")
    options, exact = replay_plan(CompileOptions(), plan)
    assert exact == plan
    assert (options.input_layout, options.readout) == ("im2col", "copies")
    # an option given otherwise overrides the plan: the search decides again
    options, exact = replay_plan(CompileOptions(readout="auto"), plan)
    assert exact is None and options.readout == "auto" and options.input_layout == "im2col"
    # batch packing asked for: the slot plan does not apply
    options, exact = replay_plan(CompileOptions(packing="batch"), plan)
    assert exact is None and options.packing == "batch"


def test_compile_replays_what_optimize_pruned_for(tmp_path: Path) -> None:
    """CryptoNets under a budget of 12 rotations with the copies readout: a plain compile of
    the optimized model gets the copies program within the budget; without the plan it would
    lower the output layer as a matrix."""
    x = np.load(EXAMPLE / "calib.npz")["x"][:256]
    out = tmp_path / "opt.onnx"
    report = optimize(
        EXAMPLE / "model.onnx",
        out,
        x,
        options=CompileOptions(readout="copies"),
        prune=PruneOptions(0.0, rotation_budget=12),
    )
    assert report["plan"]["readout"] == "copies"
    plan = read_plan(onnx.load(str(out)))
    assert plan is not None and plan.readout == "copies"
    art = hec.compile(out, tmp_path / "replayed")
    assert art.report.readout.kind == "copies"
    assert art.report.readout.choice == "recorded plan"
    assert art.report.totals.rotations == report["pruning"]["totals"]["after"]["rotations"]
    assert art.report.totals.rotations <= 12
    fresh = hec.compile(out, tmp_path / "searched", use_plan=False)
    assert fresh.report.readout.kind == "matrix"
    # the replayed program computes what the model does
    got = hec.simulate(art, x[:4])
    want = hec.simulate(fresh, x[:4])
    assert np.allclose(got, want, atol=1e-3 * np.abs(want).max())


BUDGET20_COPIES = next(c for c in CASES if c.name == "lenet5-budget20-copies")


def test_lenet5_budget20_copies_stays_within_its_budget(tmp_path: Path) -> None:
    """The issue's case: ``hec optimize --rotation-budget 20 --readout copies`` on LeNet-5
    (the committed output, ``tests/replay/make_goldens.py --full`` remakes it), then a plain
    ``hec compile``: 20 rotations or fewer (before the plan travelled: 24, a matrix readout)."""
    model = onnx.load(str(BUDGET20_COPIES.optimized))
    plan = read_plan(model)
    assert plan is not None and plan.readout == "copies"
    art = hec.compile(BUDGET20_COPIES.optimized, tmp_path / "art")
    assert art.report.readout.kind == "copies"
    assert art.report.totals.rotations <= 20
