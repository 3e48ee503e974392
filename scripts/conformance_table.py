"""Run the ONNX conformance tier and write docs/conformance.json and docs/conformance.md.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/conformance_table.py            # run, write both
    OMP_NUM_THREADS=1 .venv/bin/python scripts/conformance_table.py --from-json  # re-render the .md

Each ONNX node case the tier selects (tests/conformance/cases.py) is adapted, compiled with hec
and simulated (tests/conformance/harness.py); the JSON holds every case's op type, status,
adaptations and message, and the Markdown page is rendered from the JSON alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conformance.table import render_markdown, results_json  # noqa: E402

DOCS = REPO / "docs"


def run_tier(only: str | None) -> dict:
    """Run every selected case (or those whose name contains ``only``) and return the JSON."""
    import onnx

    from conformance.cases import CNN_MLP_OPS, accepted_op_types, is_large, selected_cases
    from conformance.harness import run_case

    start = time.perf_counter()
    cases = selected_cases()
    names = [n for n in cases if only is None or only in n]
    results = []
    for i, name in enumerate(names, 1):
        r = _isolated(name) if is_large(cases[name]) else run_case(cases[name])
        results.append(r)
        if r.status in ("wrong", "crash") or r.seconds > 2:
            print(f"[{i}/{len(names)}] {name}: {r.status} ({r.seconds:.1f} s) {r.message}")
    seconds = time.perf_counter() - start
    slowest = sorted(results, key=lambda r: -r.seconds)[:5]
    print(f"{len(results)} cases in {seconds:.1f} s; slowest: ", end="")
    print(", ".join(f"{r.name} {r.seconds:.1f} s" for r in slowest))
    op_types = {"cnn_mlp": sorted(CNN_MLP_OPS), "accepted": sorted(accepted_op_types())}
    return results_json(results, onnx.__version__, op_types)


def _run_named(name: str):
    from conformance.cases import selected_cases
    from conformance.harness import run_case

    return run_case(selected_cases()[name])


def _isolated(name: str, tries: int = 2):
    """A large case in a forked process (a few GB at its peak, all returned when it ends); a
    process the OS kills is tried once more, then recorded as a crash saying so."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from conformance.cases import case_op_type, family, selected_cases
    from conformance.harness import Result

    for _ in range(tries):
        context = multiprocessing.get_context("fork")
        try:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                return pool.submit(_run_named, name).result()
        except BrokenProcessPool:
            time.sleep(10)
    op = case_op_type(selected_cases()[name])
    message = f"the process compiling it was killed {tries} times (out of memory?)"
    return Result(name, op, family(op), "crash", message=message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-json", action="store_true", help="only re-render the .md")
    parser.add_argument("--only", help="run only cases whose name contains this (no write)")
    args = parser.parse_args()
    json_path, md_path = DOCS / "conformance.json", DOCS / "conformance.md"
    if args.from_json:
        data = json.loads(json_path.read_text())
    else:
        data = run_tier(args.only)
        if args.only:
            print(render_markdown(data))
            return 0
        DOCS.mkdir(exist_ok=True)
        json_path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(render_markdown(data))
    counts = {}
    for c in data["cases"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    print(f"wrote {md_path.relative_to(REPO)}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
