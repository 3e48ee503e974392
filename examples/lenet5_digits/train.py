"""Train a LeNet-5 (ReLU, average pooling) on scikit-learn digits upscaled to 28x28; export to ONNX.

Run from the repository root:

    .venv/bin/python examples/lenet5_digits/train.py [--out DIR]

Writes, next to this file (or into DIR): model.onnx (TorchScript exporter, opset 13),
model_dynamo.onnx (dynamo exporter, opset 18), test.npz, calib.npz, train.npz, sample.npy and
activation_ranges.json (the value range of every ReLU's input on the calibration set, measured
with onnxruntime on both ONNX files and with torch hooks). Needs torch and onnxscript
(``pip install 'hec[train]'``); the shared steps are in ``hec.train.digits_fixtures``.

Upscaling: each 8x8 image (pixel / 16, in [0, 1]) is resized to 28x28 with
``torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)``
and clipped to [0, 1] (bilinear interpolation is a convex combination, so the clip only guards
rounding). See ``upscale`` below; the same function regenerates every image in the .npz files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
SIZE = 28
EPOCHS = 30
MAX_SHIFT = 1  # augmentation: random integer translation of up to +-1 pixel (zero fill)
N_CALIB = 512
ACT_DESC = "ReLU (the input of its ONNX Relu node)"
ACT_OP = "Relu"


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


# (module name, what feeds it) in graph order; the ONNX Relu nodes appear in the same order.
ACTIVATIONS = [
    ("act1", "conv1 output [N,6,28,28]"),
    ("act2", "conv2 output [N,16,10,10]"),
    ("act3", "fc1 output [N,120]"),
    ("act4", "fc2 output [N,84]"),
]


def upscale(x8: np.ndarray) -> np.ndarray:
    """[N,1,8,8] float32 in [0,1] -> [N,1,28,28] float32 in [0,1], bilinear, no corner align."""
    with torch.no_grad():
        x = F.interpolate(
            torch.from_numpy(x8), size=(SIZE, SIZE), mode="bilinear", align_corners=False
        )
    return np.clip(x.numpy(), 0.0, 1.0).astype(np.float32)


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


def main(argv: list[str] | None = None) -> int:
    from hec.train.digits_fixtures import Recipe, build_fixture

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    out = ap.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(epochs=EPOCHS, augment=shift_batch)
    acts = (ACTIVATIONS, ACT_OP, ACT_DESC)
    return build_fixture(out, LeNet5, recipe, N_CALIB, upscale, activations=acts)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
