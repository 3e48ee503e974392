"""Hidden dense layers reduced to one input a neuron: what a small rotation budget wants.

Under slot packing a dense layer costs rotations for every offset ``read slot - output slot``
its weights use. With one input a neuron and anchored output layouts (``output_layouts``: each
neuron on the slot it reads) a layer is the single diagonal 0 and needs no rotation, so a
small budget goes to the convolutions and the output layer instead. Diagonal pruning does not
find that structure by itself: under contiguous outputs one input a neuron is still one
offset a neuron. On LeNet-5 digits (degree 2) under a budget of 20 the allocation kept 20
rotations at 64% after fine-tuning; with fc1 and fc2 reduced to one input a neuron first, 17
rotations at 91% (``hec.prune`` tries both, see there).

The matching: neurons in order of their largest weight on a live input each take the input
of largest weight not taken yet, live inputs first (those that still depend on the network's
input after a first pruning: a neuron on a constant input is a constant); a neuron left with
no input keeps none. The output layer (the last conv/matmul) stays as it is.
"""

from __future__ import annotations

import numpy as np

from hec.ir import Graph, Op
from hec.recover import prunable_ops

__all__ = ["hidden_dense_ops", "one_input_per_neuron"]


def hidden_dense_ops(graph: Graph) -> list[Op]:
    """The dense layers (``matmul``) before the network's last conv/matmul, in graph order."""
    ops = prunable_ops(graph)
    return [op for op in ops[:-1] if op.kind == "matmul"]


def one_input_per_neuron(graph: Graph, live: np.ndarray) -> int:
    """Keep one weight a neuron in each hidden dense layer of ``graph`` (in place).

    ``live``: over the first hidden dense layer's inputs, those to match first; each later
    layer's live inputs are the neurons before it that took a live input. Returns how many
    neurons of the last hidden dense layer read a live input.
    """
    live = np.asarray(live, dtype=bool)
    for op in hidden_dense_ops(graph):
        w = op.consts["weight"]  # [inputs, neurons]
        if live.shape != (w.shape[0],):
            raise ValueError(f"{op.origin}: {live.size} live flags for {w.shape[0]} inputs")
        strength = np.abs(w)
        first = np.where(live[:, None], strength, -1.0).max(axis=0)
        taken = np.zeros(w.shape[0], dtype=bool)
        keep = np.zeros(w.shape, dtype=bool)
        for neuron in np.argsort(-first, kind="stable"):
            for pool in (live, np.ones_like(live)):
                free = np.flatnonzero(pool & ~taken)
                if free.size:
                    choice = free[np.argmax(strength[free, neuron])]
                    keep[choice, neuron] = taken[choice] = True
                    break
        op.consts = {**op.consts, "weight": np.where(keep, w, 0.0)}
        live = keep[live].any(axis=0)
    return int(live.sum())
