"""The client's last step: the model's tail (``tail.onnx``) on the decrypted logits.

Runs in the clear, after decryption, with onnxruntime: exactly the nodes of the original
model that follow the logits (Softmax, ArgMax, labels, ZipMap, ...). The server never sees
their results. Artifacts without a tail return the logits under the output's name.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from hec.backend_openfhe.artifact import Artifact
from hec.errors import ArtifactError

__all__ = ["apply_tail", "concat_outputs"]

_SESSIONS: dict[str, Any] = {}


def _session(tail: bytes):
    key = hashlib.sha256(tail).hexdigest()
    if key not in _SESSIONS:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            _SESSIONS[key] = ort.InferenceSession(tail, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ArtifactError(f"tail.onnx: onnxruntime cannot load it ({first})") from None
    return _SESSIONS[key]


def apply_tail(artifact: Artifact, logits: np.ndarray) -> dict[str, Any]:
    """The model's outputs, by name, from the decrypted logits ``[B, *output_shape]``.

    Arrays have the batch axis first; a ZipMap output is a list of ``B`` dicts.
    """
    logits = np.asarray(logits)
    if artifact.tail is None:
        return {next(iter(artifact.output_kinds)): logits}
    sess = _session(artifact.tail)
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    x = logits.astype(np.float32)
    try:
        outs = sess.run(names, {name: x})
    except Exception:
        # an exporter that wrote the batch of 1 into a reshape: one sample at a time
        rows = [sess.run(names, {name: x[i : i + 1]}) for i in range(len(x))]
        outs = [concat_outputs([r[k] for r in rows]) for k in range(len(names))]
    return dict(zip(names, outs, strict=True))


def concat_outputs(parts: list) -> Any:
    """One output of several batches joined: arrays along axis 0, lists (ZipMap) extended."""
    if parts and isinstance(parts[0], list):
        return [row for part in parts for row in part]
    return np.concatenate([np.asarray(p) for p in parts], axis=0)
