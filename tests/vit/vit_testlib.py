"""Helpers of the ViT image-encryption tests (a module of its own: ``conftest`` is ambiguous)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

__all__ = ["FIXTURES", "run_onnx"]

FIXTURES = Path(__file__).parent / "fixtures"


def run_onnx(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Logits of ``model`` on ``images`` with onnxruntime, graph optimisations off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images.astype(np.float32)})[0]
