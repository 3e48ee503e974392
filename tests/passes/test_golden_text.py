"""Golden IR text per pass: ``golden_text/<pass>/<name>.in.txt`` (exact text, hand-written or
written by ``make_inputs.py``) is parsed, the pass runs on it alone, and the default dump
must equal ``<name>.out.txt``; a refusal's one-line message stands in for the dump.
``HEC_UPDATE_GOLDENS=1`` rewrites the outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hec.errors import HecError
from hec.ir.parser import parse_graph
from hec.passes import (
    ComposeRotations,
    FusePolynomials,
    LazyRelinearize,
    LowerToBatch,
    LowerToSlots,
    PassManager,
    ScheduleRotations,
)
from hec.passes.check_ranges import CheckRanges
from hec.passes.drop_channels import DropDeadChannels
from hec.passes.expand_copies import ExpandCopies

from golden import check_golden

HERE = Path(__file__).parent / "golden_text"

PASSES = {
    p.name: p
    for p in (
        FusePolynomials(),
        LowerToSlots(),
        ScheduleRotations(),
        ExpandCopies(),
        ComposeRotations(),
        DropDeadChannels(),
        LowerToBatch(16),
        LazyRelinearize(),
        CheckRanges(input_range=(-1.0, 1.0)),
    )
}
CASES = sorted(HERE.glob("*/*.in.txt"))


def test_every_listed_pass_has_a_case() -> None:
    assert {p.parent.name for p in CASES} == set(PASSES)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name[:-7]}")
def test_pass_on_parsed_text_matches_its_golden(path: Path) -> None:
    graph = parse_graph(path.read_text())
    try:
        PassManager([PASSES[path.parent.name]]).run(graph)
        text = str(graph)
    except HecError as e:
        text = f"refused: {type(e).__name__}: {e}\n"
    check_golden(text, path.with_name(path.name.replace(".in.txt", ".out.txt")))
