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
predicted evaluation time (``cost_model``), measured key generation and evaluation per image,
the speed-up over ``plain`` and the largest deviation from onnxruntime. Measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import hec  # noqa: E402
from hec.backend_openfhe.cost_model import estimated_seconds  # noqa: E402
from hec.frontend.reference import onnxruntime_outputs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
MODELS = {
    "cryptonets-digits": (EXAMPLES / "cryptonets_digits", None),
    "lenet5-digits (ReLU, deg 2)": (EXAMPLES / "lenet5_digits", 2),
    "cnn-silu-maxpool (deg 2)": (EXAMPLES / "cnn_silu_digits", 2),
}
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
    ("keygen_s", "keygen s", "{:.1f}"),
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
    totals = art.report["totals"]
    row = {
        "model": name,
        "variant": variant,
        "input_layout": art.input_layout.kind,
        **{k: totals[k] for k in ("rotations", "hoisted_rotations", "diagonals", "rotation_keys")},
        "key_mb": totals["rotation_key_bytes"] / 1e6,
        "ring_dim": art.params.ring_dim,
        "predicted_s": estimated_seconds(art.report),
    }
    if n == 0:
        return row
    x = np.load(folder / "test.npz")["x"][:n]
    result = hec.run(art, x)
    ref = onnxruntime_outputs(model, x) if degree is None else hec.simulate(art, x)
    row.update(
        keygen_s=result.timings["keygen"],
        evaluate_s=result.timings["evaluate"],
        max_abs_err=float(np.abs(result.logits - ref).max()),
        images=n,
    )
    return row


def print_table(rows: list[dict]) -> None:
    cells = [[h for _, h, _ in COLUMNS]] + [
        [f.format(r[k]) if k in r else "-" for k, _, f in COLUMNS] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


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
        for name, (folder, degree) in MODELS.items():
            if args.model not in name:
                continue
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
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"date": stamp, "load": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
