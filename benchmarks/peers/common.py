"""What every peer adapter shares: reading the model and images, timing, memory, the result file.

Adapters run in the peers' own interpreter (``.venv-peers``, see ``requirements.txt``), which
has numpy and onnx but not hec: this module imports nothing else from the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def parse_args(description: str, options=None) -> argparse.Namespace:
    """The arguments every adapter takes; ``options(parser)`` adds an adapter's own."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model-dir", type=Path, required=True, help="examples/<model>/")
    ap.add_argument("--images", type=int, default=10, help="encrypted test images")
    ap.add_argument("--json", type=Path, required=True, help="result file to write")
    ap.add_argument("--threads", type=int, default=1, help="threads the peer library may use")
    if options is not None:
        options(ap)
    return ap.parse_args()


def load_model(folder: Path) -> onnx.ModelProto:
    return onnx.load(folder / "model.onnx")


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def load_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(folder / "test.npz")
    return data["x"], data["y"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process (the peer's whole run), in MB.

    Linux's ``ru_maxrss`` keeps the high-water mark of the image ``exec`` replaced, i.e. the
    parent's when the benchmark forked this process; ``VmHWM`` is this program's own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CannotExpress(Exception):
    """The peer's documented approach has no way to run this model; the message says why."""


def write_result(path: Path, row: dict) -> None:
    row.setdefault("status", "ok")
    row["peak_rss_mb"] = peak_rss_mb()
    row["python"] = platform.python_version()
    row["omp_threads"] = os.environ.get("OMP_NUM_THREADS")
    path.write_text(json.dumps(row, indent=2) + "\n")


def run(main, description: str, options=None) -> int:
    """Run an adapter's ``main(args) -> row``; a model it cannot express is a result too."""
    args = parse_args(description, options)
    try:
        row = main(args)
    except CannotExpress as e:
        row = {"status": f"cannot express: {e}"}
    write_result(args.json, row)
    return 0


if __name__ == "__main__":  # pragma: no cover - a library module
    sys.exit("run one of the adapters in this folder instead")
