"""Train the bootstrapping example: an 8-convolution VGG-style network on scikit-learn's digits.

    .venv/bin/python examples/deep_digits/train.py     # needs the train extra (torch)

Writes ``model.onnx`` (TorchScript exporter, opset 17, dynamic batch), ``calib.npz`` (300
training digits with labels), ``test.npz`` (the 497 held-out digits) and ``sample.npy`` (one
test digit) next to this file, and prints the test accuracy. Seeded, one thread,
deterministic: a second run writes the same weights.

The network is deliberately deep for its size: 8 convolutions 3×3 with ReLU (8 channels on the
8×8 grid, then 16 on 4×4 after an average pool), a global average pool and a dense layer. As
polynomials of degree 5 (3 levels each) that is 33 levels, more than the 21 a bootstrapping
chain holds between fresh input and the first refresh: ``hec compile --bootstrap on`` places 3
bootstraps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
TRAIN = 1300  # the rest of the 1,797 digits is the test split


def network() -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]

    return nn.Sequential(
        *block(1, 8), *block(8, 8), *block(8, 8), *block(8, 8),
        nn.AvgPool2d(2),
        *block(8, 16), *block(16, 16), *block(16, 16), *block(16, 16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xt, yt = torch.from_numpy(x[:TRAIN]), torch.from_numpy(y[:TRAIN])
    net = network()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        perm = torch.randperm(TRAIN)
        for i in range(0, TRAIN, 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(torch.from_numpy(x[TRAIN:])).argmax(1).numpy() == y[TRAIN:]).mean()
    print(f"test accuracy {acc:.4f} on {len(y) - TRAIN} digits")
    torch.onnx.export(
        net,
        (xt[:1],),
        str(HERE / "model.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    np.savez(HERE / "calib.npz", x=x[:300], y=y[:300].astype(np.int64))
    np.savez(HERE / "test.npz", x=x[TRAIN:], y=y[TRAIN:].astype(np.int64))
    np.save(HERE / "sample.npy", x[TRAIN : TRAIN + 1])


if __name__ == "__main__":
    main()
