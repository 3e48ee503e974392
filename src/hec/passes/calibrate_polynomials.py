"""calibrate-polynomials: the range a model's own polynomial reads, measured on calibration data.

A polynomial that ``replace-activations`` fitted reads a value known to lie in ``[-1, 1]``: its
interval was taken from calibration data (plus margins) and mapped there. A polynomial the
model brings with it (``hec optimize``'s output compiled again, a network trained with ``x²`` or
``x + a·x²`` activations) has no such interval, and a worst-case propagation through a deep
network (19 layers and their residual joins) bounds its input at millions where the values
stay near 1, so ``check-ranges`` refused programs that run.

This pass runs the converted graph on the calibration inputs (hec's interpreter) and records,
on each such ``poly`` op, the range its input took, widened on each side by ``margin`` of its
width, as ``attrs["input_range"] = (low, high)``. ``check-ranges`` starts from it as it starts
from ``[-1, 1]`` for a fitted polynomial. The values are the converted graph's own (after any
fine-tuning), not the original model's.

Preserves: the graph's computation, exactly (an attribute only). Requires: a tensor graph after
``fuse-polynomials``; calibration inputs ``[N, *input shape]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from hec.ir import Graph, interpret

__all__ = ["CalibratePolynomials"]

_CHUNK = 64  # inputs interpreted at once (a ResNet's activations: ~1 GB per 64 at 16,384)


def _floor6(v: float) -> float:
    """``v`` rounded down at the sixth decimal (a range printed short, never narrowed)."""
    return math.floor(v * 1e6) / 1e6


@dataclass(frozen=True)
class CalibratePolynomials:
    """Record ``input_range`` on each ``poly`` op without a fitted interval.

    Args:
        samples: calibration inputs ``[N, *input shape]``.
        margin: fraction of the observed width added on each side.
    """

    samples: np.ndarray = field(repr=False)
    margin: float = 0.05
    name: ClassVar[str] = "calibrate-polynomials"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        polys = [
            op
            for op in graph.ops
            if op.kind == "poly" and "source" not in op.attrs and "input_range" not in op.attrs
        ]
        if not polys:
            return False
        probe = graph.clone()
        wanted = {op.inputs[0].name for op in polys}
        probe.outputs = [v for v in probe.values() if v.name in wanted]
        low = np.full(len(probe.outputs), np.inf)
        high = np.full(len(probe.outputs), -np.inf)
        for start in range(0, len(self.samples), _CHUNK):
            values = interpret(probe, self.samples[start : start + _CHUNK])
            low = np.minimum(low, [float(v.min()) for v in values])
            high = np.maximum(high, [float(v.max()) for v in values])
        seen = {v.name: (lo, hi) for v, lo, hi in zip(probe.outputs, low, high, strict=True)}
        for op in polys:
            lo, hi = seen[op.inputs[0].name]
            pad = self.margin * (hi - lo)
            op.attrs["input_range"] = (_floor6(lo - pad), -_floor6(-(hi + pad)))
        return True
