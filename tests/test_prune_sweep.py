"""The pruning sweep's quick mode runs (so the script never rots) and prints its table."""

from __future__ import annotations

import json

from cli_helpers import run_benchmark


def test_prune_sweep_quick_mode(tmp_path) -> None:
    out = tmp_path / "sweep.json"
    proc = run_benchmark(
        "prune_sweep.py", "--quick", "--json", str(out), "--png", str(tmp_path / "sweep.png")
    )
    header = proc.stdout.splitlines()[0]
    for column in ("packing", "sparsity", "variant", "accuracy", "rot", "pt-mul", "HE ops"):
        assert column in header
    rows = json.loads(out.read_text())["rows"]
    assert {r["variant"] for r in rows} == {"unpruned", "blocks", "blocks+refit", "random+refit"}
    assert {r["packing"] for r in rows} == {"slots", "batch"}
    # the counts come from compiled programs: block pruning removes operations
    for packing, key in (("slots", "plaintext_multiplies"), ("batch", "he_operations")):
        base = next(r for r in rows if r["packing"] == packing and r["variant"] == "unpruned")
        pruned = [r for r in rows if r["packing"] == packing and r["variant"] == "blocks"]
        assert all(r[key] < base[key] for r in pruned)
