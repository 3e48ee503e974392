"""benchmarks/rotations.py runs (so the script never rots); its numbers are not asserted."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_rotation_benchmark_prints_every_variant_counts_only() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "rotations.py"), "--counts-only"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    for column in ("variant", "rot", "hoisted", "diag", "keys", "key MB", "pred s", "x plain"):
        assert column in lines[1]
    variants = [line.split()[1] for line in lines[3:]]
    assert variants == ["plain", "bsgs", "bsgs+fold", "default", "pow2-keys"]
