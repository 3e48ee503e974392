"""replace-norms: normalization layers with calibrated statistics instead of per-sample ones.

A ``normalize`` op (LayerNormalization, InstanceNormalization, GroupNormalization; see
``ir/norm_ops.py``) is ``scale · (x - mean) / std + shift`` per group of its ``[G, n]`` input.
The centering ``x - mean`` is linear and stays exact (one matrix ``I - 1/n`` on each row, or a
mean, its broadcast and a subtraction for long rows). The division by each sample's standard
deviation needs a reciprocal square root of encrypted data, which CKKS cannot afford; it is
replaced by a constant per group, calibrated on data: the least-squares ``k_g`` with
``(x - mean) · k_g ≈ (x - mean) / std``, i.e. ``k_g = Σ_s v_sg / std_sg / Σ_s v_sg`` over the
calibration samples ``s`` (``v`` the squared norm of the centred row). The whole op becomes affine.

What it costs is measured on the calibration data (``norm_statistics``, run by calibration): the
relative RMS error of the op's output, how much the per-sample scale varies (std / mean of the
standard deviation across samples, worst group) and the model's argmax agreement with every
normalization replaced (activations exact). Above ``tolerance`` the pass refuses the model.

Preserves: the centering exactly; the op's output to the measured relative RMS error on the
calibration data (approximately elsewhere: inputs whose scale differs from the calibration
data's are mis-scaled by that ratio). Requires: statistics from ``norm_statistics``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hec.errors import ModelError
from hec.ir import Graph, Op, TensorType, interpret
from hec.ir.norm_ops import normalize_rows
from hec.passes.replace_activations import CalibrationMissing, ValueStats

__all__ = [
    "CalibrationStats",
    "NormStats",
    "NormalizationRefused",
    "ReplaceNorms",
    "norm_key",
    "norm_statistics",
    "normalization_rows",
]

DEFAULT_TOLERANCE = 0.1  # largest relative RMS error of a replaced normalization's output
_DENSE_CENTERING = 1024  # rows up to this length are centred by one n×n matrix


class NormalizationRefused(ModelError):
    """A normalization whose per-sample scale varies too much to be replaced by constants."""


@dataclass(frozen=True, eq=False)
class NormStats:
    """What calibration measured for one ``normalize`` op."""

    name: str
    source: str  # the ONNX op type
    inv_std: np.ndarray  # [G]: the calibrated constant replacing 1 / std of each group
    relative_error: float  # relative RMS error of the op's output with the constants
    normalized_error: float  # the same before the op's scale and bias
    scale_variation: float  # largest std / mean of a group's standard deviation over samples
    agreement: float  # argmax agreement of the model with every normalization replaced
    samples: int


# What calibration measured (``hec.calibrate.calibrate``): a value's distribution by its name,
# a normalization's constants by ``norm_key`` of its op.
CalibrationStats = Mapping[str, ValueStats | NormStats]


def norm_key(op: Op) -> str:
    """Where a ``normalize`` op's statistics sit in the calibration statistics."""
    return f"norm:{op.result.name}"


def norm_statistics(graph: Graph, x: np.ndarray) -> dict[str, NormStats]:
    """Calibrate every ``normalize`` op of ``graph`` on inputs ``x`` (hec's interpreter, which
    matches onnxruntime to float32 rounding)."""
    norms = [op for op in graph.ops if op.kind == "normalize"]
    if not norms:
        return {}
    probe = graph.clone()
    probe.outputs = [op.inputs[0] for op in probe.ops if op.kind == "normalize"]
    inputs = interpret(probe, x)
    measured = {}
    for op, rows in zip(norms, inputs, strict=True):
        measured[norm_key(op)] = _measure(op, rows)
    replaced = graph.clone()
    for op in [op for op in replaced.ops if op.kind == "normalize"]:
        _replace(replaced, op, measured[norm_key(op)][0], {})
    exact = interpret(graph, x)[0].reshape(len(x), -1).argmax(1)
    approx = interpret(replaced, x)[0].reshape(len(x), -1).argmax(1)
    agreement = float(np.mean(exact == approx))
    return {
        key: NormStats(key, op.attrs["source"], *values, agreement, len(x))
        for (key, values), op in zip(measured.items(), norms, strict=True)
    }


def _measure(op: Op, rows: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """``(k, output error, normalized error, scale variation)`` of one op on its inputs."""
    eps = float(op.attrs["epsilon"])
    centered = rows - rows.mean(axis=-1, keepdims=True)
    v = (centered**2).sum(axis=-1)  # [N, G]
    std = np.sqrt(v / rows.shape[-1] + eps)
    k = (v / std).sum(axis=0) / np.maximum(v.sum(axis=0), 1e-300)
    exact = normalize_rows(rows, eps)
    approx = centered * k[:, None]
    scale, shift = op.consts["scale"], op.consts["shift"]
    y, y_approx = exact * scale + shift, approx * scale + shift
    output_error = _relative_rms(y_approx - y, y)
    normalized_error = _relative_rms(approx - exact, exact)
    variation = float((std.std(axis=0) / np.maximum(std.mean(axis=0), 1e-300)).max())
    return k, output_error, normalized_error, variation


def _relative_rms(error: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(error**2)) / max(float(np.sqrt(np.mean(reference**2))), 1e-300))


def _replace(graph: Graph, op: Op, inv_std: np.ndarray, attrs: dict[str, Any]) -> None:
    """``op`` → exact centering, then one affine map with the calibrated constants."""
    (groups, n), name = op.result.shape, op.result.name
    x = op.inputs[0]
    shape = TensorType((groups, n))
    new: list[Op] = []
    if n <= _DENSE_CENTERING:
        centering = np.eye(n) - 1.0 / n
        new.append(Op("matmul", [x], [shape], {}, {"weight": centering}, op.origin, [f"{name}/c"]))
    else:  # x - broadcast(mean(x)): no n×n matrix for long rows
        mean = Op(
            "reduce",
            [x],
            [TensorType((groups, 1))],
            {"axes": (1,), "keepdims": 1, "mode": "mean"},
            None,
            op.origin,
            [f"{name}/mean"],
        )
        spread = Op(
            "matmul",
            [mean.result],
            [shape],
            {},
            {"weight": -np.ones((1, n))},
            op.origin,
            [f"{name}/-mean"],
        )
        subtract = Op("add", [x, spread.result], [shape], {}, None, op.origin, [f"{name}/c"])
        new += [mean, spread, subtract]
    affine = Op(
        "scale_shift",
        [new[-1].result],
        [shape],
        attrs,
        {"scale": op.consts["scale"] * inv_std[:, None], "shift": op.consts["shift"]},
        op.origin,
        [name],
    )
    new.append(affine)
    graph.replace_op(op, new, affine.result)


@dataclass(frozen=True)
class ReplaceNorms:
    """Replace each ``normalize`` op with exact centering and a calibrated affine map.

    Args:
        stats: calibration statistics; the ops' entries come from ``norm_statistics``.
        tolerance: largest relative RMS error of a replaced op's output accepted.
    """

    stats: CalibrationStats = field(default_factory=dict, hash=False, compare=False)
    tolerance: float = DEFAULT_TOLERANCE
    name: ClassVar[str] = "replace-norms"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        norms = [op for op in graph.ops if op.kind == "normalize"]
        for op in norms:
            st = self.stats.get(norm_key(op))
            if not isinstance(st, NormStats):
                raise CalibrationMissing(
                    f"node '{op.origin}': {op.attrs['source']} divides by each input's standard "
                    f"deviation, which CKKS cannot compute; pass --calib DATA.npz (array x of "
                    f"typical inputs) so hec can replace it by calibrated constants"
                )
            if st.relative_error > self.tolerance:
                raise NormalizationRefused(
                    f"node '{op.origin}' ({st.source}): per-sample scale varies by "
                    f"{100 * st.scale_variation:.0f}% across {st.samples} calibration inputs, "
                    f"so constants put its output off by {100 * st.relative_error:.1f}% "
                    f"(relative RMS; tolerance {100 * self.tolerance:.1f}%, "
                    f"--norm-tolerance); "
                    f"normalization cannot be replaced by constants"
                )
            attrs = {
                "replaces": st.source,
                "relative_error": round(st.relative_error, 6),
                "normalized_error": round(st.normalized_error, 6),
                "scale_variation": round(st.scale_variation, 6),
                "agreement": round(st.agreement, 6),
                "samples": st.samples,
            }
            _replace(graph, op, st.inv_std, attrs)
        return bool(norms)


_NORM_SOURCES = ("LayerNormalization", "InstanceNormalization", "GroupNormalization")


def normalization_rows(graph: Graph) -> list[dict[str, Any]]:
    """One row per replaced normalization, for the report next to the activations' rows."""
    return [
        {
            "name": op.origin,
            "replaces": op.attrs["replaces"],
            "by": "centering + calibrated affine map",
            "depth": 0,
            "relative_error": op.attrs["relative_error"],
            "normalized_error": op.attrs["normalized_error"],
            "scale_variation": op.attrs["scale_variation"],
            "model_agreement": op.attrs["agreement"],
            "samples": op.attrs["samples"],
        }
        for op in graph.ops
        if op.kind == "scale_shift" and op.attrs.get("replaces") in _NORM_SOURCES
    ]
