"""Running ``hec`` as a user does (a subprocess) and checking its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def generated_program_logits(artifact_dir, x, tmp_path):
    """Run the artifact's generated ``openfhe_program.py`` on one sample; its printed logits."""
    import numpy as np

    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, str(artifact_dir / "openfhe_program.py"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.split("logits:")[1].split("argmax:")[0]
    return np.array(line.replace("[", " ").replace("]", " ").split(), dtype=float)


def hec(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hec", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` as a user does; fail with its stderr if it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return proc
