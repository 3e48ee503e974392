"""Train a small CNN (BatchNorm, SiLU, max pooling) on scikit-learn 8x8 digits; export to ONNX.

Run from the repository root:

    .venv/bin/python examples/cnn_silu_digits/train.py [--out DIR]

Writes, next to this file (or into DIR): model.onnx (TorchScript exporter, opset 13),
model_dynamo.onnx (dynamo exporter, opset 18), test.npz, calib.npz, train.npz, sample.npy and
activation_ranges.json (the value range of every SiLU's input on the calibration set, measured
with onnxruntime on both ONNX files and with torch hooks). Needs torch and onnxscript
(``pip install 'hec[train]'``); the shared steps are in ``hec.train.digits_fixtures``.

Inputs are the 8x8 images with pixels divided by 16 (in [0, 1]), as in examples/cryptonets_digits.
Both exports are taken in eval mode (BatchNorm uses its running statistics).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
EPOCHS = 40
N_CALIB = 512
# SiLU(x) = x * Sigmoid(x): both exporters write Sigmoid + Mul; the SiLU input is the Sigmoid input.
ACT_OP = "Sigmoid"
ACT_DESC = "SiLU (the input of its ONNX Sigmoid node; the Mul reads it too)"


class CnnSilu(nn.Module):
    """CNN for 1x8x8 inputs with BatchNorm, SiLU and max pooling.

    Conv(1->8, 3x3, pad 1) -> BN(8) -> SiLU -> MaxPool(2) -> Conv(8->16, 3x3, pad 1) -> BN(16)
    -> SiLU -> MaxPool(2) -> flatten (64) -> Linear(64, 32) -> SiLU -> Linear(32, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.SiLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = nn.SiLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64, 32)
        self.act3 = nn.SiLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))  # [N,8,4,4]
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))  # [N,16,2,2]
        x = torch.flatten(x, 1)
        x = self.act3(self.fc1(x))
        return self.fc2(x)


# (module name, what feeds it) in graph order; the ONNX Sigmoid nodes appear in the same order.
ACTIVATIONS = [
    ("act1", "bn1(conv1) output [N,8,8,8]"),
    ("act2", "bn2(conv2) output [N,16,4,4]"),
    ("act3", "fc1 output [N,32]"),
]


def silu_pattern_ok(path: Path, m: onnx.ModelProto) -> bool:
    """Every Sigmoid(x) feeds one node only, a Mul whose other input is x (x * sigmoid(x))."""
    for sig in (n for n in m.graph.node if n.op_type == ACT_OP):
        users = [n for n in m.graph.node if sig.output[0] in n.input]
        pair = sorted([sig.input[0], sig.output[0]])
        if len(users) != 1 or users[0].op_type != "Mul" or sorted(users[0].input) != pair:
            print(f"{path.name}: a Sigmoid is not the x * Sigmoid(x) half of a SiLU")
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    from hec.train.digits_fixtures import Recipe, build_fixture

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    out = ap.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    acts = (ACTIVATIONS, ACT_OP, ACT_DESC)
    recipe = Recipe(epochs=EPOCHS)
    return build_fixture(
        out, CnnSilu, recipe, N_CALIB, activations=acts, extra_check=silu_pattern_ok
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
