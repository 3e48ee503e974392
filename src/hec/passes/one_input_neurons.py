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

``one_input_channel`` does the same for convolutions, for the copies readout
(``expand_copies``), whose copies must fit one ciphertext: the first convolution keeps its
``channels`` strongest filters, each later one reads one distinct live input channel a filter
(depthwise). Strided output layouts put such a filter's outputs on its input's grid, so the
filters share their taps' diagonals: LeNet-5 with 2 channels, conv2 at 4 taps, fc1 and fc2
at one input a neuron, fine-tuned 100 epochs: 95.56% (degree 2) at 14 rotations.
"""

from __future__ import annotations

import numpy as np

from hec.ir import Graph, Op
from hec.recover import prunable_ops

__all__ = ["hidden_dense_ops", "one_input_per_neuron", "one_input_channel", "conv_ops"]


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


def conv_ops(graph: Graph) -> list[Op]:
    """The convolutions before the network's last conv/matmul, in graph order."""
    ops = prunable_ops(graph)
    return [op for op in ops[:-1] if op.kind == "conv"]


def one_input_channel(graph: Graph, channels: int) -> None:
    """Keep the ``channels`` filters of largest norm in the first convolution and one input
    channel a filter in each later one (in place): filters in order of their strongest
    weight on a live channel take the live channel of largest norm not taken yet; a filter
    left with none is zeroed (so at most ``channels`` live filters each)."""
    convs = conv_ops(graph)
    if not convs:
        return
    w = convs[0].consts["weight"]
    norms = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1))
    live = np.zeros(w.shape[0], dtype=bool)
    live[np.argsort(-norms, kind="stable")[:channels]] = True
    convs[0].consts = {**convs[0].consts, "weight": np.where(live[:, None, None, None], w, 0.0)}
    for op in convs[1:]:
        w = op.consts["weight"]  # [filters, channels, kh, kw]
        if live.shape != (w.shape[1],):
            return  # another branch feeds it: left as it is
        strength = np.sqrt((w.reshape(w.shape[0], w.shape[1], -1) ** 2).sum(2))
        first = np.where(live[None, :], strength, -1.0).max(axis=1)
        taken = np.zeros(w.shape[1], dtype=bool)
        keep = np.zeros(w.shape[:2], dtype=bool)
        for f in np.argsort(-first, kind="stable"):
            free = np.flatnonzero(live & ~taken)
            if free.size == 0:
                break
            choice = free[np.argmax(strength[f, free])]
            keep[f, choice] = taken[choice] = True
        op.consts = {**op.consts, "weight": np.where(keep[:, :, None, None], w, 0.0)}
        live = np.any(keep, axis=1)
