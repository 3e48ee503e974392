"""Plain ``hec compile --calib --prune S`` (slot packing, least-squares refit only) against the
unpruned compile: rotations, plaintext multiplies, depth and simulated accuracy on test.npz.

    python benchmarks/prune_sparsity.py --work /tmp/prune-sparsity \\
        --json benchmarks/prune_sparsity.json

Each point is ``hec compile MODEL --calib calib.npz [--prune S] -o WORK/<model>_<S>`` then
``hec run WORK/<model>_<S> --input test.npz --simulate``; a point whose artifact and run output
are in ``--work`` already is read, not run again. The counts come from each artifact's
``report.json``, the accuracy from ``hec run``'s own line. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEC = [sys.executable, "-m", "hec.cli.main"]
ACCURACY = re.compile(r"accuracy on (\d+) labelled inputs: simulated ([\d.]+)%")


def point(model: str, sparsity: float, work: Path) -> dict:
    """Compile (unless done) and simulate (unless done) one point; its row."""
    example = ROOT / "examples" / model
    tag = f"{model}_{sparsity:g}"
    art, log, run = work / tag, work / f"{tag}.log", work / f"{tag}.run"
    if not (art / "report.json").exists():
        prune = ["--prune", f"{sparsity:g}"] if sparsity else []
        args = ["compile", str(example / "model.onnx"), "--calib", str(example / "calib.npz")]
        start = time.time()
        with log.open("w") as f:
            subprocess.run([*HEC, *args, *prune, "-o", str(art)], stdout=f, stderr=f, check=True)
            f.write(f"compile_s {time.time() - start:.0f}\n")
    if not run.exists() or not ACCURACY.search(run.read_text()):
        with run.open("w") as f:
            subprocess.run(
                [*HEC, "run", str(art), "--input", str(example / "test.npz"), "--simulate"],
                stdout=f,
                stderr=f,
                check=True,
            )
    return read_point(model, sparsity, art, run)


def read_point(model: str, sparsity: float, art: Path, run: Path, note: str = "") -> dict:
    """The row of an artifact ``art`` and the output ``run`` of ``hec run --simulate`` on it."""
    found = ACCURACY.search(run.read_text())
    if found is None:
        raise SystemExit(f"{run}: no simulated accuracy line; run it again")
    report = json.loads((art / "report.json").read_text())
    totals, pruning = report["totals"], report.get("pruning") or {}
    row = {
        "model": model,
        "prune": sparsity,
        "rotations": totals["rotations"],
        "plaintext_multiplies": totals["plaintext_multiplies"],
        "depth": totals["depth"],
        "accuracy": float(found.group(2)) / 100,
        "test_images": int(found.group(1)),
        "sparsity": pruning.get("sparsity", 0.0),
    }
    if "rotation_budget_from_sparsity" in pruning:
        row["rotation_budget"] = pruning["rotation_budget_from_sparsity"]["rotation_budget"]
    if "structures" in pruning:
        row["structure"] = pruning["structures"]["kept"]
    if note:
        row["note"] = note
    return row


def table(rows: list[dict]) -> str:
    """Markdown: each point against its model's unpruned row."""
    base = {r["model"]: r for r in rows if r["prune"] == 0}
    lines = [
        "| model | `--prune` | budget | rotations | pt-mul | depth | weights pruned "
        "| simulated accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = base.get(r["model"])

        def cut(key: str, r: dict = r, b: dict | None = b) -> str:
            if b is None or r is b:
                return f"{r[key]:,}"
            return f"{r[key]:,} ({100 * (r[key] / b[key] - 1):+.1f}%)"

        acc = f"{100 * r['accuracy']:.2f}%"
        if b is not None and r is not b:
            acc += f" ({100 * (r['accuracy'] - b['accuracy']):+.2f})"
        lines.append(
            f"| {r['model']} | {r['prune'] or 'unpruned'}{r.get('note', '')} "
            f"| {r.get('rotation_budget', '-')} "
            f"| {cut('rotations')} | {cut('plaintext_multiplies')} | {r['depth']} "
            f"| {100 * r['sparsity']:.1f}% | {acc} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet5_mnist,lenet5_digits")
    ap.add_argument("--sparsities", default="0,0.5,0.8,0.9")
    ap.add_argument("--work", type=Path, required=True, help="artifacts and run outputs")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="MODEL:S:ART:NOTE",
        help="a row read from an artifact made otherwise (ART/report.json, ART.run: the "
        "output of hec run --simulate), NOTE saying how; repeatable",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [
        point(model, float(s), args.work)
        for model in args.models.split(",")
        for s in args.sparsities.split(",")
    ]
    for also in args.also:
        model, s, art, note = also.split(":", 3)
        rows.append(read_point(model, float(s), Path(art), Path(art + ".run"), f" ({note})"))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
