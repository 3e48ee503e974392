"""Train the bundled CryptoNets-style example on scikit-learn digits and export it to ONNX.

Run from the repository root:

    .venv/bin/python examples/cryptonets_digits/train.py

Writes, next to this file: model.onnx (TorchScript exporter, opset 13), model_dynamo.onnx
(dynamo exporter, opset 18), test.npz, calib.npz, sample.npy. Needs torch and onnxscript.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
# The exporters write IR 7 (TorchScript, opset 13) and IR 10 (dynamo, opset 18); onnxruntime 1.23
# reads up to IR 11. Keep what the exporter wrote, but cap it explicitly so a newer torch/onnx
# cannot write a file the pinned onnxruntime refuses.
MAX_IR_VERSION = 10
SEED = 0
EPOCHS = 60
BATCH = 32
LR = 2e-3
WEIGHT_DECAY = 1e-4
CLIP = 1.0
N_CALIB = 200


class CryptoNet(nn.Module):
    """CryptoNets-style network for 8x8 digits.

    Conv(1->8, 3x3, pad 1) -> x*x -> AvgPool(2) -> flatten -> Linear(128, 32) -> x*x
    -> Linear(32, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3, stride=1, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(128, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x * x
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = x * x
        return self.fc2(x)


def load_data():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8] in [0,1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_tr, x_te, y_tr, y_te


def train(x_tr: np.ndarray, y_tr: np.ndarray) -> CryptoNet:
    torch.manual_seed(SEED)
    model = CryptoNet()
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at epoch {epoch}")
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            total += loss.item() * len(idx)
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(xt):.4f}")
    model.eval()
    return model


def set_ir(path: Path) -> None:
    """Cap the IR version; shorten absolute paths in the dynamo exporter's per-node stack traces."""
    m = onnx.load(str(path))
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    prefixes = {}  # the Python installation first: the venv may live inside the repo
    for site_dir in (Path(torch.__file__).resolve().parents[1], Path(os.__file__).resolve().parent):
        prefixes[str(site_dir) + os.sep] = "<python>/"
    prefixes[str(HERE.parents[1]) + os.sep] = ""
    for node in m.graph.node:
        for prop in node.metadata_props:
            for old, new in prefixes.items():
                prop.value = prop.value.replace(old, new)
    onnx.checker.check_model(m, full_check=True)
    onnx.save_model(m, str(path))


def export(model: CryptoNet, sample: torch.Tensor) -> list[Path]:
    ts_path = HERE / "model.onnx"
    torch.onnx.export(
        model,
        (sample,),
        str(ts_path),
        dynamo=False,
        opset_version=13,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    set_ir(ts_path)
    paths = [ts_path]

    dyn_path = HERE / "model_dynamo.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(
        model,
        (sample.repeat(2, 1, 1, 1),),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
        optimize=True,
        verify=False,
    )
    prog.save(str(dyn_path), external_data=False)
    set_ir(dyn_path)
    paths.append(dyn_path)
    return paths


def main() -> int:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_tr, x_te, y_tr, y_te = load_data()
    model = train(x_tr, y_tr)

    with torch.no_grad():
        ref = model(torch.from_numpy(x_te)).numpy()
    acc = float((ref.argmax(1) == y_te).mean())
    print(f"torch test accuracy: {acc:.4f} ({int((ref.argmax(1) == y_te).sum())}/{len(y_te)})")

    np.savez_compressed(HERE / "test.npz", x=x_te.astype(np.float32), y=y_te.astype(np.int64))
    np.save(HERE / "sample.npy", x_te[:1].astype(np.float32))
    # calibration: the first N_CALIB training images of the fixed split
    np.savez_compressed(
        HERE / "calib.npz", x=x_tr[:N_CALIB].astype(np.float32), y=y_tr[:N_CALIB].astype(np.int64)
    )

    sample = torch.from_numpy(x_te[:1])
    ok = True
    for path in export(model, sample):
        m = onnx.load(str(path))
        ops = sorted({n.op_type for n in m.graph.node})
        opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x_te})[0]
        one = sess.run(None, {sess.get_inputs()[0].name: x_te[:1]})[0]
        err = float(np.abs(got - ref).max())
        rel = err / float(np.abs(ref).max())
        ort_acc = float((got.argmax(1) == y_te).mean())
        close = np.allclose(got, ref, rtol=1e-5, atol=1e-5) and np.allclose(
            one, ref[:1], rtol=1e-5, atol=1e-5
        )
        ok &= close
        print(
            f"{path.name}: ir {m.ir_version} opset {opset} ops {ops} "
            f"size {path.stat().st_size} B  max|ort-torch| {err:.2e} (rel {rel:.1e})  "
            f"ort accuracy {ort_acc:.4f}  {'OK' if close else 'MISMATCH'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
