"""Fine-tune an HE-friendly tensor graph on labelled data (weights and polynomial coefficients).

MOFHEI recovers the accuracy lost to polynomial activations by training them with the network.
Here: cross-entropy on the logits, Adam with the learning rate decayed to zero along a cosine
over the epochs, a fixed seed, a few epochs; the graph keeps its structure (so its depth and HE
cost do not change), only its constants move.

The decay matters most after pruning: a network thinned to a few diagonals a layer swings by
several points of accuracy from one epoch to the next at a constant rate. On LeNet-5 digits
pruned to 22 rotations, 15 epochs at a constant 1e-3 ended at 91.4% (three seeds: 91.9, 90.8,
91.4), with the cosine decay at 93.9% (94.2, 93.9, 93.6).
"""

from __future__ import annotations

import numpy as np

from hec.errors import ParameterError
from hec.ir import Graph
from hec.progress import ProgressFn, no_progress
from hec.train import require_torch

__all__ = ["fine_tune"]


def fine_tune(
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    masks: dict[int, np.ndarray] | None = None,
    range_penalty: float = 0.0,
) -> list[float]:
    """Train ``graph``'s constants in place; returns the mean loss of each epoch.

    ``lr``: the starting learning rate, decayed to 0 along a cosine by the last epoch.

    ``masks``: ``id(op) -> bool array`` over an op's ``weight``; weights outside the mask stay
    exactly zero (pruned blocks stay pruned, so the HE cost does not change).

    ``range_penalty``: adds this times the mean squared excess of every polynomial's input
    beyond its interval to the loss, which keeps the activations where their polynomials were
    fitted (and where the compiled program's ranges hold).
    """
    torch = require_torch()
    from hec.train.torch_graph import TorchGraph

    torch.manual_seed(seed)
    model = TorchGraph(graph)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    fixed = [
        (model.params[f"op{i}_weight"], torch.tensor(masks[id(op)]))
        for i, op in enumerate(graph.ops)
        if masks and id(op) in masks
    ]
    xt = torch.tensor(np.asarray(x, dtype=np.float32))
    yt = torch.tensor(np.asarray(y, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            logits = model(xt[idx]).reshape(len(idx), -1)
            loss = torch.nn.functional.cross_entropy(logits, yt[idx])
            if range_penalty and model.outside:
                loss = loss + range_penalty * sum(model.outside)
            if not torch.isfinite(loss):  # raised before write_back: the graph is unchanged
                raise ParameterError(
                    f"fine-tuning diverged in epoch {epoch + 1} (the loss is not finite: "
                    "activations left their polynomials' intervals); lower --lr "
                    f"(now {lr:g}), fine-tune fewer epochs, or keep the activations in "
                    "their intervals with --range-penalty (e.g. 10)"
                )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                for param, keep in fixed:
                    param.mul_(keep)
            total += loss.item() * len(idx)
        decay.step()
        losses.append(total / len(xt))
        progress("fine-tune", epoch + 1, epochs)
    model.write_back()
    return losses
