"""Compile this LeNet-5 with the accuracy budget, with and without ``--precision 0.01``;
measure the programs (degrees chosen with the linear layers refitted, ``refit-layers``).

Run from the repository root (a few minutes; no encryption):

    .venv/bin/python examples/lenet5_mnist/measure_refit.py [--out FILE]

Records per configuration the chosen degrees, the refit's per-layer errors, the program's
depth, ring dimension, rotations, estimated time per image (the cost model's reference table:
``HEC_COST_TABLE`` is pointed at nothing) and the simulator's top-1 accuracy on ``test.npz``
beside onnxruntime's and the calibration accuracy. Writes ``refit.json`` next to this file.
"""

from __future__ import annotations

import argparse
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

CONFIGS = {  # name -> (CompileOptions fields, calibration: calib.npz or the first N of train.npz)
    "accuracy budget, 1 point": ({"max_accuracy_loss": 1.0, "precision": None}, "calib"),
    "accuracy budget, 1 point, --precision 0.01": (
        {"max_accuracy_loss": 1.0, "precision": 0.01},
        "calib",
    ),
    "--degree 2 (no refit)": ({"degree": 2, "precision": None}, "calib"),
    "accuracy budget, 1 point, 1,000 training images": (
        {"max_accuracy_loss": 1.0, "precision": None},
        1000,
    ),
    "accuracy budget, 1 point, 1,000 training images, --precision 0.01": (
        {"max_accuracy_loss": 1.0, "precision": 0.01},
        1000,
    ),
    # `hec compile model.onnx --calib train.npz`: every option at its default (the accuracy
    # budget applies: 3,800 labelled images; precision 0.01)
    "defaults, all 3,800 training images": ({}, 3800),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "refit.json")
    ap.add_argument("--keep", type=Path, help="keep the default artifact in this folder")
    ap.add_argument(
        "--experiments-only",
        action="store_true",
        help="only (re)measure the refit experiments, into the existing results file",
    )
    args = ap.parse_args(argv)
    if args.experiments_only:
        results = json.loads(args.out.read_text())
        results["refit_experiments"] = experiments()
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
        return 0
    os.environ["HEC_COST_TABLE"] = str(Path(tempfile.gettempdir()) / "no-such-cost-table.json")
    import hec
    from hec.frontend.reference import onnxruntime_outputs

    model = HERE / "model.onnx"
    calib, test = np.load(HERE / "calib.npz"), np.load(HERE / "test.npz")
    train = np.load(HERE / "train.npz")
    ort_pred = onnxruntime_outputs(str(model), test["x"]).argmax(1)
    results: dict = {
        "model": "examples/lenet5_mnist/model.onnx",
        "calibration": f"calib.npz ({len(calib['y'])} labelled images)",
        "test": f"test.npz ({len(test['y'])} images)",
        "onnxruntime_test_accuracy": float(np.mean(ort_pred == test["y"])),
        "configs": {},
    }
    for name, (fields, source) in CONFIGS.items():
        cx, cy = (
            (calib["x"], calib["y"])
            if source == "calib"
            else (train["x"][:source], train["y"][:source])
        )
        with tempfile.TemporaryDirectory() as tmp:
            where = args.keep if args.keep and not fields else None
            where = where or Path(tmp) / "art"
            start = time.perf_counter()
            art = hec.compile(
                model,
                where,
                hec.CompileOptions(**fields),
                calibration=cx,
                labels=cy,
            )
            seconds = time.perf_counter() - start
            pred = hec.simulate(art, test["x"]).argmax(1)
        row = config_row(art, fields, seconds, pred, test["y"], ort_pred)
        row = {
            "options": row.pop("options"),
            "calibration": "calib.npz" if source == "calib" else f"train.npz[:{source}]",
            **row,
        }
        results["configs"][name] = row
        tail = f"; calibration {row['calibration_accuracy']}"
        print_row(name, row, results["onnxruntime_test_accuracy"], tail)
    results["refit_experiments"] = experiments()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def experiments() -> dict:
    """Without encryption, on calib.npz: the per-layer errors of the default refit; degree 2
    everywhere refitted with the ridge toward the trained weights (``refit_to_reference``)
    against the pruning refit's ridge toward zero (``recover.refit``), test accuracy of each."""
    from hec.frontend import build_graph, load_model
    from hec.ir import interpret
    from hec.optimize import calibrated_stats
    from hec.passes import PassManager, ReplaceActivations, he_friendly_pipeline
    from hec.passes.elementwise import find_regions
    from hec.passes.refit_layers import RefitLayers
    from hec.recover import refit, refit_to_reference

    model = str(HERE / "model.onnx")
    calib, test = np.load(HERE / "calib.npz"), np.load(HERE / "test.npz")
    original = build_graph(load_model(model))
    stats = calibrated_stats(model, original, calib["x"])

    def accuracy(graph) -> float:
        return float(np.mean(interpret(graph, test["x"])[0].argmax(1) == test["y"]))

    graph = original.clone()
    passes = he_friendly_pipeline(hec_options(), stats, calib["x"], calib["y"])
    PassManager(passes).run(graph)
    rows = next(p for p in passes if isinstance(p, RefitLayers)).rows
    out: dict = {"default_refit_layers": rows, "degree_2_everywhere": {}}
    for name, fit in {
        "no refit": None,
        "ridge toward the trained weights (refit_to_reference)": refit_to_reference,
        "ridge 1e-4 toward zero (recover.refit)": refit,
    }.items():
        g = original.clone()
        for region in find_regions(g, lambda r: "activation" in r.kinds):
            for op in region.ops:
                if op.kind == "activation":
                    op.attrs["degree"] = 2
        ReplaceActivations(stats).run(g)
        if fit is not None:
            fit(g, original, calib["x"])
        out["degree_2_everywhere"][name] = {"test_accuracy": accuracy(g)}
        print(f"degree 2 everywhere, {name}: test accuracy {accuracy(g):.3f}", flush=True)
    # the refit's reach grows with the calibration set: degree 2 everywhere, polynomials and
    # refit from the first N training images
    train = np.load(HERE / "train.npz")
    out["degree_2_by_calibration_size"] = {}
    for n in (200, 1000, 2000, len(train["y"])):
        cx = train["x"][:n]
        g = original.clone()
        for region in find_regions(g, lambda r: "activation" in r.kinds):
            for op in region.ops:
                if op.kind == "activation":
                    op.attrs["degree"] = 2
        ReplaceActivations(calibrated_stats(model, original, cx)).run(g)
        refit_to_reference(g, original, cx)
        out["degree_2_by_calibration_size"][str(n)] = {"test_accuracy": accuracy(g)}
        print(f"degree 2 everywhere, refit on {n} training images: {accuracy(g):.3f}", flush=True)
    return out


def hec_options():
    import hec

    return hec.CompileOptions(max_accuracy_loss=1.0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
