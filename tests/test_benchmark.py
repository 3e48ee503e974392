"""The benchmark's quick mode runs (so the script never rots); its numbers are not asserted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_benchmark_quick_mode_prints_the_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    header, _, row = lines[1:4]
    for column in ("keygen s", "eval s", "rot", "pt-mul", "ct-mul", "keys", "key MB", "ort ms"):
        assert column in header
    assert row.split()[:2] == ["cryptonets-digits", "slots"]
    # Batch packing: a throughput row beside the latency row of the same model.
    for column in ("packing", "ms/img", "sc-mul", "cts", "peak MB", "pred MB"):
        assert column in header
    assert lines[4].split()[:2] == ["cryptonets-digits", "batch"]
    # The deployment table: sizes, the round trip through hec serve, sample-block throughput.
    deploy = lines[lines.index("", 4) + 1 :]
    for column in (
        "pk MB",
        "eval keys MB",
        "ct in MB",
        "ct out MB",
        "round trip s",
        "samples/ct",
        "img/s single",
        "img/s batch",
    ):
        assert column in deploy[0]
    assert deploy[2].split()[0] == "cryptonets-digits"
