"""onnxruntime on the original model: the reference every hec result is compared with."""

from __future__ import annotations

import os

import numpy as np
import onnx

from hec.errors import ModelError

__all__ = ["onnxruntime_outputs", "run_session"]


def onnxruntime_outputs(model: str | os.PathLike | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """First output of ``model`` on the batch ``x`` (float32, as exporters type inputs)."""
    import onnxruntime as ort

    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"onnxruntime cannot load {model}: {first}") from None
    return run_session(sess, [sess.get_outputs()[0].name], x)[0]


def run_session(
    sess, names: list[str], x: np.ndarray, batch: int = 256, progress=None
) -> list[np.ndarray]:
    """Outputs ``names`` of an onnxruntime session on ``x`` ``[N, ...]``, in chunks of ``batch``.

    A model exported with a fixed batch (torch's default: 1) gets chunks of exactly that size,
    the last one padded. Every array is copied: onnxruntime may return views of buffers it
    frees when ``run`` returns (a graph input asked for as an output, for one).
    ``progress(done, total)`` is called after each chunk.
    """
    fixed = sess.get_inputs()[0].shape[0] if sess.get_inputs()[0].shape else None
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return [np.array(o, copy=True) for o in sess.run(names, {sess.get_inputs()[0].name: x})]
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        n = len(chunk)
        if step == fixed and n < step:
            chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
        outs = sess.run(names, {sess.get_inputs()[0].name: chunk})
        for part, out in zip(parts, outs, strict=True):
            part.append(np.array(out[:n], copy=True))
        if progress is not None:
            progress(start + n, len(x))
    return [np.concatenate(p) for p in parts]
