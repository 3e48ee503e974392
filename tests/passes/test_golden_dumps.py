"""IR dumps of small models after each stage, compared with stored goldens."""

from __future__ import annotations

from pathlib import Path

import pytest

from hec.frontend import import_onnx
from hec.passes import LowerToSlots, PassManager, ScheduleRotations

from golden import check_golden
from op_cases import CASES

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["cryptonets_like", "residual_across_levels"])
def test_pipeline_dumps(name: str, tmp_path) -> None:
    model, _ = CASES[name]()
    graph = import_onnx(model, name)
    check_golden(str(graph), GOLDEN / f"{name}.tensor.txt")
    PassManager([LowerToSlots(), ScheduleRotations()], dump_dir=tmp_path).run(graph)
    check_golden(
        (tmp_path / "01-lower-to-slots.txt").read_text(), GOLDEN / f"{name}.lower-to-slots.txt"
    )
    check_golden(
        (tmp_path / "02-schedule-rotations.txt").read_text(),
        GOLDEN / f"{name}.schedule-rotations.txt",
    )


def test_copies_readout_dumps(tmp_path) -> None:
    """The output layer as a ``readout`` op, then the program widened to its copies."""
    from hec.passes.expand_copies import ExpandCopies

    model, _ = CASES["cryptonets_like"]()
    graph = import_onnx(model, "cryptonets_like")
    passes = [LowerToSlots(readout="copies"), ScheduleRotations(), ExpandCopies()]
    PassManager(passes, dump_dir=tmp_path).run(graph)
    for stage in ("01-lower-to-slots", "03-expand-copies"):
        check_golden(
            (tmp_path / f"{stage}.txt").read_text(),
            GOLDEN / f"cryptonets_like.copies.{stage[3:]}.txt",
        )
