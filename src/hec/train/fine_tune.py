"""Fine-tune an HE-friendly tensor graph on labelled data (weights and polynomial coefficients).

MOFHEI recovers the accuracy lost to polynomial activations by training them with the network.
Here: cross-entropy on the logits, Adam, a fixed seed, a few epochs; the graph keeps its
structure (so its depth and HE cost do not change), only its constants move.
"""

from __future__ import annotations

import numpy as np

from hec.ir import Graph
from hec.progress import ProgressFn, no_progress
from hec.train import require_torch

__all__ = ["fine_tune"]


def fine_tune(graph: Graph, x: np.ndarray, y: np.ndarray, epochs: int = 5, lr: float = 1e-3,
              batch_size: int = 64, seed: int = 0, progress: ProgressFn = no_progress
              ) -> list[float]:
    """Train ``graph``'s constants in place; returns the mean loss of each epoch."""
    torch = require_torch()
    from hec.train.torch_graph import TorchGraph

    torch.manual_seed(seed)
    model = TorchGraph(graph)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt = torch.tensor(np.asarray(x, dtype=np.float32))
    yt = torch.tensor(np.asarray(y, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            logits = model(xt[idx]).reshape(len(idx), -1)
            loss = torch.nn.functional.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(xt))
        progress("fine-tune", epoch + 1, epochs)
    model.write_back()
    return losses
