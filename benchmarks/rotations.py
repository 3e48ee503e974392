"""Benchmark: rotation scheduling variants of the same model, measured in one run.

    python benchmarks/rotations.py                       # CryptoNets digits, 3 images a variant
    python benchmarks/rotations.py --model lenet --counts-only   # LeNet-5: counts, predictions

Variants (all compiled from the same model, compared on the same images):

- ``plain``: the plain diagonal method: one unhoisted rotation per non-zero diagonal
  (``--baby-step 1``, direct input layout): what a compiler without BSGS does;
- ``bsgs``: baby-step/giant-step searched per map, hoisted baby steps, direct input layout;
- ``bsgs+fold``: and maps with few outputs folded (merged diagonals and a block sum);
- ``default``: all of that and the input layout ``auto`` picks;
- ``pow2-keys``: the default with rotation keys capped to powers of two (``--rotation-keys
  pow2``): fewer keys, more rotations.

Columns: rotations (hoisted), diagonals, rotation keys and their memory (report.json),
predicted evaluation time (``cost_model``), measured key generation, the first evaluation
(which also encodes the plaintexts) and the later ones (mean over the images: what the
prediction is for), the speed-up over ``plain`` and the largest deviation from onnxruntime
(the simulator for converted models). Per-operation costs are measured right before each
variant runs (``hec calibrate-costs``' measurement, kept for this run only), so the
prediction and the run share the machine's conditions; the JSON holds predicted and measured
time per layer too. Measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from run import MODELS, print_table  # noqa: E402  (benchmarks/run.py: the bundled models)

import hec  # noqa: E402
from hec.backend_openfhe.cost_model import estimated_seconds, predicted_layer_ms  # noqa: E402
from hec.backend_openfhe.report_schema import CkksParameters  # noqa: E402
from hec.frontend.reference import onnxruntime_outputs  # noqa: E402
from hec.runtime import Client, Server  # noqa: E402

BASE = hec.CompileOptions()
VARIANTS = {
    "plain": replace(BASE, baby_step=1, input_layout="direct", fold_short_maps=False),
    "bsgs": replace(BASE, input_layout="direct", fold_short_maps=False),
    "bsgs+fold": replace(BASE, input_layout="direct"),
    "default": BASE,
    "pow2-keys": replace(BASE, rotation_keys="pow2"),
}
COLUMNS = [
    ("model", "model", "{}"),
    ("variant", "variant", "{}"),
    ("input_layout", "input", "{}"),
    ("rotations", "rot", "{}"),
    ("hoisted_rotations", "hoisted", "{}"),
    ("diagonals", "diag", "{}"),
    ("rotation_keys", "keys", "{}"),
    ("key_mb", "key MB", "{:.0f}"),
    ("ring_dim", "ring", "{}"),
    ("predicted_s", "pred s", "{:.2f}"),
    ("pred_over_meas", "pred/meas", "{:.2f}"),
    ("keygen_s", "keygen s", "{:.1f}"),
    ("first_evaluate_s", "1st eval s", "{:.2f}"),
    ("evaluate_s", "eval s", "{:.2f}"),
    ("speedup", "x plain", "{:.1f}"),
    ("max_abs_err", "max |diff|", "{:.1e}"),
]


def bench_variant(
    name: str, folder: Path, degree: int | None, variant: str, n: int, work: Path
) -> dict:
    model = folder / "model.onnx"
    calibration = np.load(folder / "calib.npz")["x"] if degree is not None else None
    options = replace(VARIANTS[variant], degree=degree)
    out = work / f"{name.split()[0]}-{variant}"
    art = hec.compile(model, out, options, calibration=calibration)
    totals = art.report.totals
    row = {
        "model": name,
        "variant": variant,
        "input_layout": art.input_layout.kind,
        **{k: getattr(totals, k) for k in ("rotations", "hoisted_rotations", "diagonals")},
        "rotation_keys": totals.rotation_keys,
        "key_mb": totals.rotation_key_bytes / 1e6,
        "ring_dim": art.params.ring_dim,
    }
    if n == 0:
        row["predicted_s"] = estimated_seconds(art.report)
        return row
    _calibrate(art.report.ckks)  # per-op costs measured now, in this run's conditions
    row["predicted_s"] = estimated_seconds(art.report)
    x = np.load(folder / "test.npz")["x"][:n]
    t = time.perf_counter()
    client = Client(art)
    keygen = time.perf_counter() - t
    server = Server(art, client.context, key_files=client.key_files)
    t = time.perf_counter()
    server.evaluate(client.encrypt(x[0]))  # warm-up: encodes the program's plaintexts once
    first = time.perf_counter() - t
    evaluate, layers, logits = 0.0, np.zeros(len(art.report.layers)), []
    for sample in x:
        ct = client.encrypt(sample)
        t = time.perf_counter()
        seconds: list[float] = []
        out = server.evaluate(ct, None, seconds)
        evaluate += time.perf_counter() - t
        layers += seconds
        logits.append(client.decrypt(out).values)
    ref = onnxruntime_outputs(model, x) if degree is None else hec.simulate(art, x)
    row.update(
        keygen_s=keygen,
        first_evaluate_s=first,
        evaluate_s=evaluate / n,
        max_abs_err=float(np.abs(np.stack(logits) - ref).max()),
        images=n,
        pred_over_meas=row["predicted_s"] / (evaluate / n),
        layer_ms=(layers / n * 1e3).round(3).tolist(),
        # with the costs calibrated in this run
        predicted_layer_ms=predicted_layer_ms(art.report),
    )
    return row


def _calibrate(ckks: CkksParameters) -> None:
    """Measure per-op costs at this ring and depth right before the variant runs: on a shared
    machine the load moves between variants, and the prediction should see the same load."""
    from hec.backend_openfhe.measure_costs import measure_op_costs, store_op_costs

    store_op_costs(measure_op_costs(ckks.depth, ckks.ring_dim, repeats=9))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cryptonets", help="models whose name contains this")
    ap.add_argument("--images", type=int, default=3, help="encrypted images per variant")
    ap.add_argument("--counts-only", action="store_true", help="compile only: counts, predictions")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    n = 0 if args.counts_only else args.images
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEC_COST_TABLE"] = str(Path(tmp) / "op_costs.json")  # this run's own
        for name, bench in MODELS.items():
            if args.model not in name or bench.prune is not None:
                continue
            folder, degree = bench.folder, bench.degree
            for variant in args.variants.split(","):
                print(f"{name}: {variant} ...", file=sys.stderr, flush=True)
                rows.append(bench_variant(name, folder, degree, variant, n, Path(tmp)))
            plain = next((r for r in rows if r["model"] == name and r["variant"] == "plain"), {})
            for r in rows:
                if r["model"] == name and "evaluate_s" in r and "evaluate_s" in plain:
                    r["speedup"] = plain["evaluate_s"] / r["evaluate_s"]
    load = os.getloadavg()[0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"rotation variants, {stamp}, {os.cpu_count()} CPUs, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}, load {load:.1f}, {n} image(s) a variant"
    )
    print_table(rows, COLUMNS)
    if args.json:
        args.json.write_text(json.dumps({"date": stamp, "load": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
