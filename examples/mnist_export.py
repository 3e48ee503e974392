"""What the MNIST examples' ``train.py`` scripts share after training: the data files, the
ONNX export checked against torch, and the summary they print.

Each script puts this folder on ``sys.path`` and calls ``save_and_check``; what it writes
does not depend on which script calls it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch


def save_and_check(
    model: torch.nn.Module,
    data: dict[str, np.ndarray],
    out: Path,
    export: Callable[[torch.nn.Module, Path], None],
    n_calib: int,
    opset: int,
    min_accuracy: float,
    show_initializers: bool = False,
) -> int:
    """Write ``test.npz``, ``calib.npz`` (the first ``n_calib`` training images),
    ``sample.npy`` and ``model.onnx`` into ``out``; check onnxruntime against torch on the test
    split and the accuracy against ``min_accuracy``. Returns the exit status (0: good)."""
    x_test, y_test = data["x_test"], data["y_test"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x_test)).numpy()
    acc_torch = float((ref.argmax(1) == y_test).mean())

    np.savez_compressed(out / "test.npz", x=x_test, y=y_test)
    calib = {"x": data["x_train"][:n_calib], "y": data["y_train"][:n_calib]}
    np.savez_compressed(out / "calib.npz", **calib)
    np.save(out / "sample.npy", x_test[:1])
    export(model, out / "model.onnx")

    proto = onnx.load(str(out / "model.onnx"))
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x_test})[0]
    acc_ort = float((got.argmax(1) == y_test).mean())
    diff = float(np.abs(got - ref).max())
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"ops: {', '.join(ops)}; IR {proto.ir_version}, opset {opset}")
    if show_initializers:
        print(f"initializers: {', '.join(t.name for t in proto.graph.initializer)}")
    for name in ("model.onnx", "test.npz", "calib.npz", "sample.npy"):
        print(f"{name}: {(out / name).stat().st_size:,} B")
    print(f"test accuracy: torch {acc_torch:.4f}, onnxruntime {acc_ort:.4f} ({len(y_test)} images)")
    print(f"largest |onnxruntime - torch| logit difference: {diff:.2e}")
    if acc_ort != acc_torch or diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
        print("error: onnxruntime and torch disagree", file=sys.stderr)
        return 1
    if acc_ort < min_accuracy:
        print(f"error: accuracy {acc_ort:.4f} < {min_accuracy}", file=sys.stderr)
        return 1
    return 0
