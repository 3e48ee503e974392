"""The replay tier: each reference model compiles to the program and report figures stored in
``goldens/`` (see ``cases.py``). A difference means the compiler's behaviour changed: if that
is intended, regenerate the goldens (``python tests/replay/make_goldens.py``) in the commit that
changes it and say why."""

from __future__ import annotations

import json

import pytest
from tests.replay.cases import CASES, GOLDENS, onnx_fingerprint, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_replay_is_identical(case, tmp_path):
    want = json.loads((GOLDENS / f"{case.name}.json").read_text())
    got = run_case(case, tmp_path)
    # the robust fingerprint: the same, floats rounded (CI may run another CPU's BLAS); the
    # exact bytes are compared by `python tests/replay/make_goldens.py --check`
    want, got = want["robust"], got["robust"]
    for name, sha in want["files"].items():
        assert got["files"][name] == sha, f"{case.name}: {name} changed"
    assert got["constants"] == want["constants"], f"{case.name}: the program's constants changed"
    assert got["report"] == want["report"], f"{case.name}: report.json's figures changed"
    if case.optimize_args is not None:
        # hec optimize recorded the plan it pruned for: hec compile lowers it, nothing else
        assert got["report"]["search"] == {"lowerings": 1, "plan": "recorded"}


@pytest.mark.parametrize("case", [c for c in CASES if c.optimize_args], ids=lambda c: c.name)
def test_committed_optimized_models_are_the_goldens(case):
    """CI replays the compile of the committed ``hec optimize`` outputs: they are the ones the
    goldens were made from (``make_goldens.py --full`` reruns the optimization)."""
    want = json.loads((GOLDENS / f"{case.name}.json").read_text())
    assert onnx_fingerprint(case.optimized) == want["optimized"]
