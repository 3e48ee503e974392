"""benchmarks/rotations.py runs (so the script never rots); its numbers are not asserted."""

from __future__ import annotations

from cli_helpers import run_benchmark


def test_rotation_benchmark_prints_every_variant_counts_only() -> None:
    proc = run_benchmark("rotations.py", "--counts-only")
    lines = proc.stdout.strip().splitlines()
    for column in ("variant", "rot", "hoisted", "diag", "keys", "key MB", "pred s", "x plain"):
        assert column in lines[1]
    variants = [line.split()[1] for line in lines[3:]]
    assert variants == ["plain", "bsgs", "bsgs+fold", "default", "pow2-keys"]
