"""What ``hec run`` and ``hec decrypt`` print of the model's own outputs (the client tail's).

The program computes the logits; an artifact with a client tail (Softmax, labels, ZipMap, ...)
returns the ONNX model's outputs after decryption. This prints them, and with
``--compare-onnx`` compares each with the same output of the ONNX model in onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from hec.backend_openfhe.artifact import Artifact

__all__ = ["print_model_outputs", "onnx_model_outputs", "onnx_logits"]

_SHOWN = 3


def onnx_model_outputs(model: Path, x: np.ndarray) -> dict[str, Any]:
    """Every output of the ONNX model in onnxruntime on ``x``, by name (ZipMap: lists)."""
    import onnxruntime as ort

    from hec.errors import ModelError
    from hec.frontend.reference import run_session

    try:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"onnxruntime cannot load {model}: {first}") from None
    names = [o.name for o in sess.get_outputs()]
    outs = run_session(sess, names, x)
    return {n: list(o) if o.dtype == object else o for n, o in zip(names, outs, strict=True)}


def onnx_logits(model: Path, x: np.ndarray) -> np.ndarray:
    """The ONNX model's logits in onnxruntime: its tensor before the client tail (what the
    compiled program computes)."""
    import onnx
    import onnxruntime as ort

    from hec.frontend import load_model
    from hec.frontend.client_tail import split_tail, with_batch_of
    from hec.frontend.reference import run_session

    head = with_batch_of(split_tail(load_model(model)).head, onnx.load(str(model)))
    sess = ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"])
    return run_session(sess, [sess.get_outputs()[0].name], x)[0]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v:.4g}" for k, v in value.items()) + "}"
    a = np.asarray(value)
    if a.dtype.kind in "iub" or a.dtype.kind in "OSU":
        return str(a.tolist())
    if a.ndim >= 2:  # one sample per row, on one line
        return ", ".join(_show(row) for row in a)
    return np.array2string(a, precision=4, suppress_small=True, max_line_width=10_000)


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return np.array([[row[k] for k in sorted(row)] for row in value])
    return np.asarray(value)


def print_model_outputs(
    art: Artifact, outputs: dict[str, Any], reference: dict[str, Any] | None = None
) -> None:
    """The model's outputs (first rows), and how each compares with onnxruntime's."""
    if art.tail is None:
        return
    click.echo(
        f"client tail ({', '.join(art.client_tail)}) on the decrypted logits; the model's outputs:"
    )
    kinds = art.output_kinds
    for name, value in outputs.items():
        rows = value[:_SHOWN]
        more = f" ... ({len(value)} rows)" if len(value) > _SHOWN else ""
        shown = _show(rows) if not isinstance(rows, list) else ", ".join(map(_show, rows))
        click.echo(f"  {name} ({kinds.get(name, '?')}): {shown}{more}")
        if reference is None or name not in reference:
            continue
        ours, theirs = _as_array(value), _as_array(reference[name])
        if ours.shape != theirs.shape:
            click.echo(f"    onnxruntime's {name} has shape {theirs.shape}, ours {ours.shape}")
        elif ours.dtype.kind in "f" and theirs.dtype.kind in "f":
            click.echo(f"    max |diff| from onnxruntime: {np.abs(ours - theirs).max():.2e}")
        else:
            same = ours.reshape(len(ours), -1) == theirs.reshape(len(theirs), -1)
            click.echo(f"    agrees with onnxruntime on {int(same.all(axis=1).sum())}/{len(ours)}")
