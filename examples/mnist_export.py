"""What the MNIST examples' ``train.py`` scripts share: the training loop, the ONNX export,
and after training the data files, the export checked against torch and the summary they print.

Each script puts this folder on ``sys.path`` and calls ``train_epochs``, ``export_onnx`` and
``save_and_check``; what they write does not depend on which script calls them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

MAX_IR_VERSION = 10  # onnxruntime 1.23 reads up to IR 11; cap what a newer exporter writes


def train_epochs(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    opt: torch.optim.Optimizer,
    epochs: int,
    batch: int,
    seed: int,
    clip: float | None = None,
) -> None:
    """Cross-entropy training with ``opt`` and a cosine decay over every step, shuffled by a
    ``seed``ed generator; a loss that is not finite stops the script (lower the rate)."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            loss = loss_fn(model(xt[idx]), yt[idx])
            if not torch.isfinite(loss):
                raise SystemExit(f"epoch {epoch + 1}: the loss is {loss.item()}; lower the lr")
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xt):.4f}", flush=True)
    model.eval()


def export_onnx(
    model: nn.Module, path: Path, input_shape: tuple[int, ...], opset: int, **options
) -> None:
    """TorchScript exporter, dynamic batch, input ``input`` and output ``logits``, the IR
    version capped for onnxruntime and the model checked; ``options`` go to the exporter."""
    torch.onnx.export(
        model,
        (torch.zeros(1, *input_shape),),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        **options,
    )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


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
