"""Train the bundled CryptoNets-style example on scikit-learn digits and export it to ONNX.

Run from the repository root:

    .venv/bin/python examples/cryptonets_digits/train.py [--out DIR]

Writes, next to this file (or into DIR): model.onnx (TorchScript exporter, opset 13),
model_dynamo.onnx (dynamo exporter, opset 18), test.npz, calib.npz, sample.npy. Needs torch and
onnxscript (``pip install 'hec[train]'``); the shared steps are in ``hec.train.digits_fixtures``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RECIPE_EPOCHS = 60
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


def main(argv: list[str] | None = None) -> int:
    from hec.train.digits_fixtures import Recipe, build_fixture

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    out = ap.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(epochs=RECIPE_EPOCHS, cosine=False)
    return build_fixture(out, CryptoNet, recipe, N_CALIB, with_train=False)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
