"""Sweep: sparsity vs accuracy and HE cost for packing-aware block pruning (issue 8).

    python benchmarks/prune_sweep.py                    # LeNet-5 digits, slots and batch
    python benchmarks/prune_sweep.py --packing slots --sparsities 0,0.5,0.9
    python benchmarks/prune_sweep.py --quick            # CryptoNets digits, 3 points: seconds

For every sparsity and packing, three variants of the HE-friendly model are compiled and
counted (``report.json`` figures of the compiled program, never estimates from the weights):

- ``blocks``: ``prune-blocks`` (diagonals for slots, filters + culling for batch), no recovery;
- ``blocks+refit``: the same, then the layer-wise least-squares refit;
- ``random+refit``: the same number of weights zeroed uniformly at random (unstructured), then
  the same refit: what pruning saves when the block shape ignores the packing;
- with ``--rotation-budgets``, slots only: ``budget N+refit`` prunes whole baby/giant-step
  groups until the compiled program needs at most ``N`` rotations, the budget shared among
  the maps by the calibration loss, then refits; ``budget N global+refit`` cuts one global
  removal order instead (the former method), for comparison.

Accuracy is the interpreter's top-1 on the labelled held-out split (the simulator computes the
same function to 1e-9; tests check that). Latency is ``cost_model.estimated_seconds`` of the
compiled counts (one thread, rough). Prints a table, writes JSON and, when matplotlib is
installed (``pip install hec[bench]``), a PNG plot. Figures are measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from hec.frontend import import_onnx  # noqa: E402
from hec.ir import Graph, interpret  # noqa: E402
from hec.optimize import make_he_friendly  # noqa: E402
from hec.options import CompileOptions  # noqa: E402
from hec.prune import PruneOptions, compiled_figures, prune_graph  # noqa: E402
from hec.recover import prunable_ops, refit  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
FULL_SPARSITIES = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
QUICK_SPARSITIES = (0.0, 0.5, 0.9)
COLUMNS = (
    "rotations",
    "plaintext_multiplies",
    "he_operations",
    "max_live_ciphertexts",
    "estimated_seconds",
)


def he_friendly(folder: Path, n_calib: int, degree: int | None) -> tuple[Graph, np.ndarray]:
    calib = np.load(folder / "calib.npz")["x"][:n_calib]
    graph = import_onnx(folder / "model.onnx")
    make_he_friendly(folder / "model.onnx", graph, CompileOptions(degree=degree), calib)
    return graph, calib


def accuracy(graph: Graph, x: np.ndarray, y: np.ndarray) -> float:
    from hec.metrics import accuracy, graph_ends_with_sigmoid

    return accuracy(interpret(graph, x)[0], y, graph_ends_with_sigmoid(graph))


def random_prune(graph: Graph, sparsity: float, seed: int = 0) -> None:
    """Zero a uniformly random ``sparsity`` fraction of all conv/matmul weights (unstructured)."""
    ops = prunable_ops(graph)
    sizes = [op.consts["weight"].size for op in ops]
    rng = np.random.default_rng(seed)
    dead = np.zeros(sum(sizes), dtype=bool)
    dead[rng.choice(dead.size, int(round(sparsity * dead.size)), replace=False)] = True
    for op, part in zip(ops, np.split(dead, np.cumsum(sizes)[:-1]), strict=True):
        w = op.consts["weight"]
        op.consts = {**op.consts, "weight": np.where(part.reshape(w.shape), 0.0, w)}


def counts(graph: Graph, packing: str) -> dict:
    fig = compiled_figures(graph, CompileOptions(), packing)
    from hec.backend_openfhe.cost_model import estimated_seconds

    t = fig.totals
    out = {k: getattr(t, k) for k in ("rotations", "plaintext_multiplies", "rotation_keys")}
    out["he_operations"] = sum(
        getattr(t, k) or 0
        for k in (
            "plaintext_multiplies",
            "scalar_multiplies",
            "additions",
            "plaintext_additions",
            "ciphertext_multiplies",
        )
    )
    out["max_live_ciphertexts"] = fig.memory.max_live_ciphertexts if fig.memory else 1
    if fig.memory is not None:
        out["peak_bytes"] = fig.memory.program_bytes
    out["estimated_seconds"] = round(estimated_seconds(fig), 3)
    return out


def sweep(
    base: Graph,
    calib: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    packing: str,
    sparsities: tuple[float, ...],
    log,
) -> list[dict]:
    rows = []
    for s in sparsities:
        variants: list[tuple[str, Graph]] = []
        g = base.clone()
        if s > 0:
            rep = prune_graph(g, calib, PruneOptions(s, packing, recover=False), count=False)
            achieved = rep["sparsity"]
        else:
            achieved = 0.0
        variants.append(("blocks", g))
        if s > 0:
            r = g.clone()
            refit(r, base, calib)
            variants.append(("blocks+refit", r))
            u = base.clone()
            random_prune(u, achieved)
            refit(u, base, calib)
            variants.append(("random+refit", u))
        for name, graph in variants:
            t0 = time.perf_counter()
            row = {
                "packing": packing,
                "target": s,
                "sparsity": round(achieved, 4),
                "variant": name if s > 0 else "unpruned",
                "accuracy": accuracy(graph, x, y),
                **counts(graph, packing),
            }
            rows.append(row)
            log(
                f"  {packing} {s:.2f} {row['variant']}: acc {row['accuracy']:.4f}, "
                f"{time.perf_counter() - t0:.1f} s"
            )
    return rows


def budget_row(
    base: Graph,
    calib: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    budget: int,
    log,
    allocation: str = "loss",
) -> dict:
    """Slots: whole baby/giant-step groups pruned to ``budget`` rotations, then the refit."""
    t0 = time.perf_counter()
    g = base.clone()
    options = PruneOptions(
        0.0, "slots", rotation_budget=budget, recover=False, allocation=allocation
    )
    rep = prune_graph(g, calib, options, count=False)
    refit(g, base, calib)
    name = "" if allocation == "loss" else f" {allocation}"
    row = {
        "packing": "slots",
        "target": 0.0,
        "sparsity": round(rep["sparsity"], 4),
        "variant": f"budget {budget}{name}+refit",
        "accuracy": accuracy(g, x, y),
        **counts(g, "slots"),
    }
    log(
        f"  slots budget {budget}{name}: acc {row['accuracy']:.4f}, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return row


def print_table(rows: list[dict]) -> None:
    heads = [
        "packing",
        "target",
        "sparsity",
        "variant",
        "accuracy",
        "rot",
        "pt-mul",
        "HE ops",
        "live cts",
        "peak GB",
        "est. s",
    ]
    body = [
        [
            r["packing"],
            f"{r['target']:.2f}",
            f"{100 * r['sparsity']:.1f}%",
            r["variant"],
            f"{100 * r['accuracy']:.2f}%",
            r["rotations"],
            r["plaintext_multiplies"],
            r["he_operations"],
            r["max_live_ciphertexts"],
            f"{r['peak_bytes'] / 1e9:.2f}" if "peak_bytes" in r else "-",
            f"{r['estimated_seconds']:.1f}",
        ]
        for r in rows
    ]
    widths = [max(len(str(v)) for v in col) for col in zip(heads, *body, strict=True)]
    for line in [heads, ["-" * w for w in widths], *body]:
        print("  ".join(str(v).rjust(w) for v, w in zip(line, widths, strict=True)))


def plot(rows: list[dict], path: Path) -> bool:
    """Accuracy vs HE cost per packing and variant; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    packings = sorted({r["packing"] for r in rows})
    fig, axes = plt.subplots(1, len(packings), figsize=(6 * len(packings), 4.5), squeeze=False)
    for ax, packing in zip(axes[0], packings, strict=True):
        cost = "rotations" if packing == "slots" else "he_operations"
        base = [r for r in rows if r["packing"] == packing and r["variant"] == "unpruned"]
        for variant, style in (("blocks", "o--"), ("blocks+refit", "o-"), ("random+refit", "x:")):
            pts = base + [r for r in rows if r["packing"] == packing and r["variant"] == variant]
            pts.sort(key=lambda r: r["sparsity"])
            ax.plot(
                [r[cost] for r in pts], [100 * r["accuracy"] for r in pts], style, label=variant
            )
            for r in pts:
                ax.annotate(
                    f"{100 * r['sparsity']:.0f}%",
                    (r[cost], 100 * r["accuracy"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        ax.set_xscale("log")
        ax.set_xlabel(f"{cost.replace('_', ' ')} (compiled program, log scale)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{packing} packing")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="CryptoNets digits, sparsities 0/0.5/0.9, 64 calibration images",
    )
    ap.add_argument("--example", default=None, help="examples/ folder (default lenet5_digits)")
    ap.add_argument("--packing", choices=["slots", "batch", "both"], default="both")
    ap.add_argument("--sparsities", default=None, help="comma-separated, e.g. 0,0.5,0.9")
    ap.add_argument(
        "--rotation-budgets",
        type=lambda s: [int(v) for v in s.split(",") if v],
        default=[],
        help="slots: also prune to these rotation budgets (comma-separated), then refit",
    )
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "prune_sweep.json")
    ap.add_argument("--png", type=Path, default=REPO / "benchmarks" / "prune_sweep.png")
    args = ap.parse_args(argv)
    example = args.example or ("cryptonets_digits" if args.quick else "lenet5_digits")
    sparsities = (
        tuple(float(v) for v in args.sparsities.split(","))
        if args.sparsities
        else (QUICK_SPARSITIES if args.quick else FULL_SPARSITIES)
    )
    n_calib = 64 if args.quick else args.calib_images
    folder = EXAMPLES / example

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    base, calib = he_friendly(folder, n_calib, None)
    test = np.load(folder / "test.npz")
    x, y = test["x"], test["y"]
    packings = ["slots", "batch"] if args.packing == "both" else [args.packing]
    rows = []
    for packing in packings:
        rows += sweep(base, calib, x, y, packing, sparsities, log)
    for budget in args.rotation_budgets:
        for allocation in ("loss", "global"):
            rows.append(budget_row(base, calib, x, y, budget, log, allocation))
    print_table(rows)
    meta = {
        "example": example,
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": 1,
        "load_average": os.getloadavg()[0],
        "seconds": round(time.perf_counter() - start, 1),
        "calibration_images": int(len(calib)),
        "test_images": int(len(x)),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")
    if plot(rows, args.png):
        print(f"wrote {args.png}")
    else:
        print("matplotlib not installed (pip install 'hec[bench]'): no plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
