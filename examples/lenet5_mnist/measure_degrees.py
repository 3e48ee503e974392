"""Compile this LeNet-5 with each way of choosing the activations' degrees; measure the programs.

Run from the repository root (a few minutes; no encryption):

    .venv/bin/python examples/lenet5_mnist/measure_degrees.py [--out FILE]

For the accuracy budget (the default of ``hec compile --calib``) and the fit-error budget
(``--error-budget 0.05``, the default before it), it compiles ``model.onnx`` with
``calib.npz`` and records the chosen degrees, the program's depth, ring dimension, rotations,
estimated time per image (the cost model's reference table: ``HEC_COST_TABLE`` is pointed at
nothing, so the figures do not depend on this machine's calibration) and the simulator's top-1
accuracy on ``test.npz`` beside onnxruntime's. With ``--exhaustive`` it also converts the model
with every assignment of the candidate degrees (2, 5, 13, 27: 256 of them) and records, per
number of polynomial levels, the assignment most accurate on the calibration data: how far the
greedy search is from the best. Writes ``degree_choice.json`` next to this file (or FILE).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure_rows import config_row, print_row  # noqa: E402

CONFIGS = {  # name -> CompileOptions fields
    "accuracy budget, 1.0 point": {"max_accuracy_loss": 1.0, "precision": None},
    "fit-error budget 0.05": {"error_budget": 0.05, "precision": None},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "degree_choice.json")
    ap.add_argument("--exhaustive", action="store_true", help="also try every assignment")
    args = ap.parse_args(argv)
    out = args.out
    os.environ["HEC_COST_TABLE"] = str(Path(tempfile.gettempdir()) / "no-such-cost-table.json")
    import hec
    from hec.frontend.reference import onnxruntime_outputs

    model = HERE / "model.onnx"
    calib, test = np.load(HERE / "calib.npz"), np.load(HERE / "test.npz")
    ort_pred = onnxruntime_outputs(str(model), test["x"]).argmax(1)
    results: dict = {
        "model": "examples/lenet5_mnist/model.onnx",
        "calibration": f"calib.npz ({len(calib['y'])} labelled images)",
        "test": f"test.npz ({len(test['y'])} images)",
        "onnxruntime_test_accuracy": float(np.mean(ort_pred == test["y"])),
        "configs": {},
    }
    for name, fields in CONFIGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            art = hec.compile(
                model,
                Path(tmp) / "art",
                hec.CompileOptions(**fields),
                calibration=calib["x"],
                labels=calib["y"],
            )
            seconds = time.perf_counter() - start
            pred = hec.simulate(art, test["x"]).argmax(1)
        row = config_row(art, fields, seconds, pred, test["y"], ort_pred)
        results["configs"][name] = row
        print_row(name, row, results["onnxruntime_test_accuracy"])
    if args.exhaustive:
        results["exhaustive"] = exhaustive(model, calib, test)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def exhaustive(model: Path, calib, test) -> list[dict]:
    """Per number of polynomial levels, the assignment most accurate on the calibration data."""
    from hec.frontend import build_graph, load_model
    from hec.ir import interpret
    from hec.optimize import calibrated_stats, conversion_layers
    from hec.passes import ReplaceActivations
    from hec.passes.elementwise import find_regions

    graph = build_graph(load_model(str(model)))
    stats = calibrated_stats(str(model), graph, calib["x"])
    replace = ReplaceActivations(stats)  # one instance: its fits are reused
    best: dict[int, dict] = {}
    for degrees in itertools.product((2, 5, 13, 27), repeat=4):
        copy = graph.clone()
        regions = find_regions(copy, lambda r: "activation" in r.kinds)
        for region, degree in zip(regions, degrees, strict=True):
            for op in region.ops:
                if op.kind == "activation":
                    op.attrs["degree"] = degree
        replace.run(copy)
        levels = sum(r["depth"] for r in conversion_layers(copy, stats))
        acc = float(np.mean(interpret(copy, calib["x"])[0].argmax(1) == calib["y"]))
        if levels not in best or acc > best[levels]["calibration_accuracy"]:
            test_acc = float(np.mean(interpret(copy, test["x"])[0].argmax(1) == test["y"]))
            best[levels] = {
                "polynomial_levels": levels,
                "degrees": list(degrees),
                "calibration_accuracy": acc,
                "test_accuracy": test_acc,
            }
    for levels in sorted(best):
        print(f"exhaustive: {levels} levels: {best[levels]}", flush=True)
    return [best[k] for k in sorted(best)]


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
