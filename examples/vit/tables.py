"""Print the markdown tables of docs/vit.md from the experiment results.

    .venv/bin/python examples/vit/tables.py examples/vit/results/collaborative.json \
        [examples/vit/results/collaborative_per_block.json]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def accuracy_table(paths: list[str]) -> str:
    cells: dict = defaultdict(list)
    meta = None
    seen_plain: dict = defaultdict(set)
    for path in paths:
        data = json.loads(Path(path).read_text())
        meta = meta or data
        for r in data["rows"]:
            if r["scheme"] == "plain":
                key = (r["patch"], "plain")
                if r["seed"] in seen_plain[r["patch"]]:
                    continue  # every results file repeats the same plain runs
                seen_plain[r["patch"]].add(r["seed"])
            else:
                key = (r["patch"], r["scheme"], r["keys"], r["augment"])
            cells[key].append(r["accuracy"])

    def fmt(vals: list[float], plain: float) -> str:
        if not vals:
            return "–"
        m = 100 * np.mean(vals)
        spread = 100 * (np.max(vals) - np.min(vals)) / 2
        return f"{m:.1f} ± {spread:.1f} ({m - plain:+.1f})"

    lines = [
        "| patch | G | per-client keys | per-image keys | per-image keys, per-block shuffle "
        "| per-image keys, no key augmentation |",
        "|---|---|---|---|---|---|",
    ]
    for patch in sorted({k[0] for k in cells}):
        plain = 100 * np.mean(cells[(patch, "plain")])
        n = len(cells[(patch, "plain")])
        lines.append(f"| {patch} | plain training | {plain:.1f} (n={n}) | | | |")
        length = patch * patch
        for g in [g for g in range(1, length + 1) if length % g == 0]:
            row = [
                fmt(cells[(patch, f"G={g}", "per-client", True)], plain),
                fmt(cells[(patch, f"G={g}", "per-image", True)], plain),
                fmt(cells[(patch, f"G={g} per-block", "per-image", True)], plain),
                fmt(cells[(patch, f"G={g}", "per-image", False)], plain),
            ]
            full = " (full block)" if g == length else ""
            lines.append(f"| {patch} | {g}{full} | " + " | ".join(row) + " |")
        for name in ("G=2 +negpos(pixel)", "G=2 +block scrambling"):
            vals = cells[(patch, name, "per-image", True)]
            if vals:
                lines.append(
                    f"| {patch} | {name.replace('G=2 ', '2, ')} | | {fmt(vals, plain)} | | |"
                )
    return "\n".join(lines)


def communication_table(path: str) -> str:
    data = json.loads(Path(path).read_text())
    fed = data["fedavg"]
    lines = [
        f"Model: {fed['parameters']:,} parameters (float32); {data['clients']} clients, "
        f"{data['train']:,} training images of 64 one-byte pixels plus a one-byte label.",
        "",
        "| scheme | uploaded by all clients | downloaded by all clients |",
        "|---|---|---|",
    ]
    for name, up, down in data["communication"]:
        lines.append(f"| {name} | {up:,} B | {down:,} B |")
    hist = fed["history"]
    lines.append("")
    lines.append(
        f"FedAvg of the same model on the plain shares ({len(hist)} rounds, 2 local "
        f"epochs each) reached {100 * hist[-1]:.1f}% test accuracy."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(accuracy_table(sys.argv[1:]))
    print()
    print(communication_table(sys.argv[1]))
