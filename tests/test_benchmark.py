"""The benchmark's quick mode runs (so the script never rots); its numbers are not asserted."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_benchmark_quick_mode_prints_the_table() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    header, _, row = proc.stdout.strip().splitlines()[1:4]
    for column in ("keygen s", "eval s", "rot", "pt-mul", "ct-mul", "keys", "key MB", "ort ms"):
        assert column in header
    assert row.split()[0] == "cryptonets-digits"
