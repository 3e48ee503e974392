"""Run a slot program on numpy vectors: the encrypted program's semantics without encryption.

Values are ``[B, slots]`` arrays, one row per sample. ``rescale`` and ``level_reduce`` only
change HE bookkeeping, so they are identities here; everything else is exact arithmetic, which
makes the simulator the oracle that catches compiler bugs free of CKKS noise.
"""

from __future__ import annotations

import numpy as np

from hec.ir import Graph, Op

__all__ = ["simulate_slots", "rotate"]


def rotate(v: np.ndarray, k: int) -> np.ndarray:
    """``rot(v, k)[i] = v[(i + k) mod slots]`` along the last axis."""
    return np.roll(v, -k, axis=-1)


def _matvec(op: Op, x: np.ndarray) -> np.ndarray:
    y = np.zeros_like(x)
    for k, d in zip(op.attrs["offsets"], op.consts["diags"], strict=True):
        y += d * rotate(x, k)
    return y + op.consts["bias"]


_SEMANTICS = {
    "rotate": lambda op, x: rotate(x, op.attrs["k"]),
    "mul_plain": lambda op, x: x * op.consts["p"],
    "add_plain": lambda op, x: x + op.consts["p"],
    "add": lambda op, x, y: x + y,
    "mul": lambda op, x, y: x * y,
    "rescale": lambda op, x: x,
    "level_reduce": lambda op, x: x,
    "matvec": _matvec,
    "poly": lambda op, x: np.polynomial.chebyshev.chebval(x, op.attrs["coeffs"]),
}


def simulate_slots(graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run a slot graph on packed inputs ``[B, slots]``; returns packed outputs."""
    env = {
        id(v): np.asarray(x, dtype=np.float64) for v, x in zip(graph.inputs, inputs, strict=True)
    }
    last, keep = graph.last_uses(), {id(v) for v in graph.outputs}
    for i, op in enumerate(graph.ops):
        env[id(op.result)] = _SEMANTICS[op.kind](op, *(env[id(v)] for v in op.inputs))
        for v in op.inputs:  # free what no later op reads: programs hold thousands of values
            if last[id(v)] == i and id(v) not in keep:
                env.pop(id(v), None)
    return [env[id(v)] for v in graph.outputs]
