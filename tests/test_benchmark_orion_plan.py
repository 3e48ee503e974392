"""Orion's plan for ResNet-20 (benchmarks/peers/orion_plan.py) and its table in the benchmark.

The plan replaces Orion's ``packing.diagonalize`` by one that returns diagonal indices only;
that substitute is compared with Orion's own function in Orion's interpreter (skipped where
``.venv-orion`` is missing). The committed results file must render as the benchmark's plan
table, and its memory estimate must be the sum over layers that the script documents.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import peers  # noqa: E402
import peers_table  # noqa: E402
from run import PLAN_COLUMNS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results_orion_resnet20_plan.json"


def test_diagonal_indices_are_orions() -> None:
    python = peers.peer_python("orion", *peers.OWN_PYTHON["Orion"])
    if python is None:
        pytest.skip("Orion is not installed (make bench-peers)")
    check = "import orion_plan; orion_plan.check_diagonal_indices()"
    proc = subprocess.run(
        [python, "-c", check],
        cwd=REPO / "benchmarks" / "peers",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_plan_results_render_and_add_up() -> None:
    row = json.loads(RESULTS.read_text())
    table = peers_table.markdown([row], PLAN_COLUMNS).splitlines()
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    headers = [h for _, h, _ in PLAN_COLUMNS]
    assert cells[headers.index("bootstraps")] == str(row["bootstraps"])
    assert len(row["bootstrapper_slots"]) == len(row["bootstrappers"].split(", "))
    layers = row["linear_layers"]
    assert row["diagonals"] == sum(r["diagonals"] for r in layers)
    words = row["ring_dim"] * 8 / 2**30  # GiB per tower
    towers = [r["diagonals"] * (r["level"] + 1 + len(row["log_p"])) for r in layers]
    assert row["plaintext_gib"] == pytest.approx(sum(towers) * words, rel=1e-9)
    assert 0 <= row["input_level"] <= row["l_eff"] == len(row["log_q"]) - 1
    assert all(1 <= r["level"] <= row["l_eff"] for r in layers)


def test_plans_are_for_peers_that_exist() -> None:
    for peer, script, images in peers.PLANS.values():
        assert peer in peers.PEERS and images > 0
        assert (REPO / "benchmarks" / "peers" / script).is_file()
