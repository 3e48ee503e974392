"""onnxruntime on the original model: the reference every hec result is compared with."""

from __future__ import annotations

import os

import numpy as np
import onnx

from hec.errors import ModelError

__all__ = ["onnxruntime_outputs"]


def onnxruntime_outputs(model: str | os.PathLike | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """First output of ``model`` on the batch ``x`` (float32, as exporters type inputs)."""
    import onnxruntime as ort

    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"onnxruntime cannot load {model}: {first}") from None
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, dtype=np.float32)})[0]
