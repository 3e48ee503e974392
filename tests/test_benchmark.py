"""The benchmark's quick mode runs (so the script never rots); its numbers are not asserted."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from cli_helpers import run_benchmark
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from peers import peer_python  # noqa: E402


@pytest.mark.slow
def test_benchmark_quick_mode_prints_the_table() -> None:
    proc = run_benchmark("run.py", "--quick")
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
    # The peers table: hec beside TenSEAL (run when tenseal imports, else a row saying so).
    peers = deploy[deploy.index("", 3) + 1 :]
    for column in ("tool", "parameters", "eval s", "hec/peer lat", "hec/peer mem", "status"):
        assert column in peers[0]
    assert peers[2].split()[:2] == ["cryptonets-digits", "hec"]
    assert peers[3].split()[:2] == ["cryptonets-digits", "TenSEAL"]
    if peer_python("tenseal") is None:  # .venv-peers, $HEC_PEERS_PYTHON or this interpreter
        assert peers[3].endswith("not installed: make bench-peers")
    else:
        assert peers[3].endswith(" ok") and "N=8192, log Q 218" in peers[3]


@pytest.mark.slow
def test_benchmark_writes_results_json_and_says_whether_it_plotted(tmp_path) -> None:
    out = tmp_path / "bench" / "results.json"
    proc = run_benchmark(
        "run.py",
        "--quick",
        "--packing",
        "slots",
        "--no-deploy",
        "--peers",
        "none",
        "--json",
        str(out),
    )
    results = json.loads(out.read_text())
    assert (
        results["meta"]["omp_threads"] == "1" and len(results["meta"]["load_average_before"]) == 3
    )
    assert [r["model"] for r in results["rows"]] == ["cryptonets-digits"]
    assert results["peers"] == []
    png = out.with_suffix(".png")
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib not installed" in proc.stdout and not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
