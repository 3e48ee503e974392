"""Calibration: what values each activation's input takes on representative data.

The original model runs in onnxruntime with the needed intermediate tensors exposed as extra
outputs (the reference, as the user's own runtime would compute it). A tensor that exists only
in hec's IR (a converter's intermediate) is computed with hec's interpreter instead, which
matches onnxruntime to float32 rounding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from hec.errors import InputError
from hec.ir import Graph, Op, interpret
from hec.ir.tensor_ops import evaluate_op
from hec.passes.calibrate_norms import NormStats, norm_statistics
from hec.passes.elementwise import find_regions
from hec.passes.replace_activations import ValueStats
from hec.progress import ProgressFn, no_progress

__all__ = ["load_dataset", "calibrate", "observe", "check_samples", "activation_roots"]

_BATCH = 256


def load_dataset(
    path: str | os.PathLike,
    sample_shape: tuple[int, ...] | None = None,
    what: str = "calibration data",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``x`` (and ``y`` if present) from an ``.npz``; ``x`` gets a batch axis checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: no such file; {what} is an .npz with an array x (and optionally labels y)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npz ({type(exc).__name__})") from None
    if "x" not in arrays:
        raise InputError(f"{path}: has arrays {sorted(arrays)}, needs one named x (inputs)")
    x, y = arrays["x"].astype(np.float64), arrays.get("y")
    if sample_shape is not None and x.shape[1:] != tuple(sample_shape):
        raise InputError(
            f"{path}: x has shape {list(x.shape)}, the model takes "
            f"[N, {', '.join(map(str, sample_shape))}]"
        )
    if y is not None and len(y) != len(x):
        raise InputError(f"{path}: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise InputError(f"{path}: x is empty")
    return x, y


def activation_roots(graph: Graph) -> list[str]:
    """Names of the values whose distribution replace-activations needs."""
    regions = find_regions(graph, lambda r: "activation" in r.kinds)
    return list(dict.fromkeys(r.root.name for r in regions))


def check_samples(x: np.ndarray, graph: Graph, what: str = "calibration data") -> None:
    """Refuse inputs ``x`` whose shape is not ``[N, *model input shape]`` (one line, no trace)."""
    want = tuple(graph.inputs[0].shape)
    got = tuple(np.shape(x))
    if got[1:] != want or len(got) == 0:
        raise InputError(
            f"{what}: x has shape {list(got)}, the model takes [N, {', '.join(map(str, want))}] "
            f"(N inputs of shape {list(want)})"
        )


def calibrate(
    model: str | os.PathLike | onnx.ModelProto,
    graph: Graph,
    x: np.ndarray,
    max_samples: int = 20000,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> dict[str, ValueStats | NormStats]:
    """Statistics of every activation root and max-pool input of ``graph`` over ``x``."""
    pools = {op.inputs[0].name: op for op in graph.ops if op.kind == "maxpool"}
    values = observe(
        model, graph, x, list(dict.fromkeys([*activation_roots(graph), *pools])), progress
    )
    rng = np.random.default_rng(seed)
    stats: dict[str, ValueStats | NormStats] = {}
    for n, batch in values.items():
        allv = batch.ravel()
        sample = allv if allv.size <= max_samples else rng.choice(allv, max_samples, replace=False)
        fit = _max_from_average(pools[n], batch) if n in pools else None
        stats[n] = ValueStats(n, float(allv.min()), float(allv.max()), sample, int(allv.size), fit)
    return {**stats, **norm_statistics(graph, x)}  # normalizations: calibrated constants


def observe(
    model: str | os.PathLike | onnx.ModelProto,
    graph: Graph,
    x: np.ndarray,
    names: list[str],
    progress: ProgressFn = no_progress,
) -> dict[str, np.ndarray]:
    """The values ``[N, ...]`` the tensors ``names`` of ``graph`` take on the inputs ``x``.

    Tensors of the ONNX model come from onnxruntime (the reference); the graph input is ``x``
    itself, as onnxruntime sees it (float32), never asked of onnxruntime, whose copy of an
    input may live in a buffer it frees when the call returns. IR-only tensors come from
    hec's interpreter.
    """
    check_samples(x, graph)
    if not names:
        return {}
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    graph_inputs = {i.name for i in proto.graph.input} - {t.name for t in proto.graph.initializer}
    onnx_names = {o for n in proto.graph.node for o in n.output}
    values: dict[str, np.ndarray] = {}
    for n in names:
        if n in graph_inputs:
            values[n] = np.asarray(x, np.float32).astype(np.float64)
    in_onnx = [n for n in names if n in onnx_names and n not in values]
    if in_onnx:
        import onnxruntime as ort

        from hec.frontend.reference import run_session

        exposed = onnx.ModelProto.FromString(proto.SerializeToString())
        present = {o.name for o in exposed.graph.output}
        for n in in_onnx:
            if n not in present:
                exposed.graph.output.append(
                    helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                )
        sess = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
        outs = run_session(sess, in_onnx, x, _BATCH, lambda d, t: progress("calibrate", d, t))
        for n, arr in zip(in_onnx, outs, strict=True):
            values[n] = arr.astype(np.float64)
    rest = [n for n in names if n not in values]
    if rest:  # IR-only values: probe them as extra outputs of a copy of the graph
        probe = graph.clone()
        probe.outputs = [v for v in probe.values() if v.name in rest]
        for arr, v in zip(interpret(probe, x), probe.outputs, strict=True):
            values[v.name] = arr
    return {n: values[n] for n in names}


def _max_from_average(maxpool: Op, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel ``a, b`` with ``max-pool ≈ a · average-pool + b`` (least squares).

    Average pooling alone underestimates a maximum by a channel-dependent factor; this affine
    correction is linear, so it fuses into the next layer for free.
    """
    average = Op("avgpool", maxpool.inputs, [maxpool.result.type], maxpool.attrs)
    mx, av = evaluate_op(maxpool, inputs), evaluate_op(average, inputs)
    scale, shift = np.ones(mx.shape[1]), np.zeros(mx.shape[1])
    for c in range(mx.shape[1]):
        design = np.stack([av[:, c].ravel(), np.ones(av[:, c].size)], axis=1)
        scale[c], shift[c] = np.linalg.lstsq(design, mx[:, c].ravel(), rcond=None)[0]
    return scale, shift
