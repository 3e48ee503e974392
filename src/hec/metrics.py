"""Model outputs → predicted classes, and accuracy: the one place hec decides what a model predicts.

Several outputs per input: the predicted class is the argmax. One output per input (a binary
classifier): the class is 1 when the output exceeds a threshold, 0.5 when the output is a
probability (the model ends with a Sigmoid) and 0 when it is a logit; the two agree, since
``sigmoid(z) > 0.5`` exactly when ``z > 0``. An argmax of one output would always say class 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

__all__ = [
    "predictions",
    "accuracy",
    "as_classes",
    "ends_with_sigmoid",
    "graph_ends_with_sigmoid",
    "artifact_output_is_probability",
]


def predictions(
    outputs: np.ndarray, probability: bool = False, threshold: float | None = None
) -> np.ndarray:
    """Predicted class of each input of ``outputs`` ``[B, ...]`` (int64 ``[B]``).

    Args:
        outputs: the model's outputs, one row per input.
        probability: with one output per input, whether it is a probability (threshold 0.5)
            rather than a logit (threshold 0).
        threshold: with one output per input, this threshold instead.
    """
    flat = np.asarray(outputs).reshape(len(outputs), -1)
    if flat.shape[1] > 1:
        return flat.argmax(axis=1)
    cut = threshold if threshold is not None else (0.5 if probability else 0.0)
    return (flat[:, 0] > cut).astype(np.int64)


def as_classes(labels: np.ndarray) -> np.ndarray:
    """Labels ``[B]``, ``[B, 1]`` (class numbers, 0/1 floats) or one-hot ``[B, k]`` → ``[B]``."""
    flat = np.asarray(labels).reshape(len(labels), -1)
    if flat.shape[1] > 1:
        return flat.argmax(axis=1)
    return np.rint(flat[:, 0]).astype(np.int64)


def accuracy(
    outputs: np.ndarray,
    labels: np.ndarray,
    probability: bool = False,
    threshold: float | None = None,
) -> float:
    """Fraction of inputs whose prediction (see ``predictions``) equals its label."""
    return float(np.mean(predictions(outputs, probability, threshold) == as_classes(labels)))


def ends_with_sigmoid(model: str | os.PathLike | onnx.ModelProto) -> bool:
    """Whether the ONNX model's (first) output is made by a Sigmoid: its outputs are
    probabilities."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    if not proto.graph.output:
        return False
    out = proto.graph.output[0].name
    producer = next((n for n in proto.graph.node if out in n.output), None)
    return producer is not None and producer.op_type == "Sigmoid"


def graph_ends_with_sigmoid(graph: Any) -> bool:
    """Whether a tensor-IR graph's output is a Sigmoid (or the polynomial that replaced one)."""
    op = graph.outputs[0].producer
    if op is None:
        return False
    return "sigmoid" in (op.attrs.get("source"), op.attrs.get("fn"))


def artifact_output_is_probability(
    artifact: Any, model: str | os.PathLike | onnx.ModelProto | None = None
) -> bool:
    """Whether a compiled program's decrypted outputs are probabilities.

    Read, in order: what the artifact records (``io["output_is_probability"]``; an artifact
    with a ``client_tail`` runs the model's final Sigmoid/Softmax on the client after
    decryption, so the program's own outputs are logits); else the last node of ``model``
    (e.g. ``--compare-onnx``) or of the ONNX model the artifact was compiled from, when that
    file is at hand; else a logit.
    """
    io = getattr(artifact, "io", {}) or {}
    if "output_is_probability" in io:
        return bool(io["output_is_probability"])
    if "client_tail" in io:
        return False
    for path in (model, io.get("model")):
        if isinstance(path, onnx.ModelProto):
            return ends_with_sigmoid(path)
        if path is not None and Path(path).is_file():
            try:
                return ends_with_sigmoid(path)
            except Exception:  # an unreadable model says nothing about the outputs
                continue
    return False
