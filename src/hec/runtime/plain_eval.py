"""Run a program graph on numpy arrays in place of ciphertexts: what both simulators share.

A simulator maps each op kind of its dialect to the op's semantics, a function of the op and its
operands' arrays (one row per sample); the kinds both dialects have are ``COMMON_SEMANTICS``.
``evaluate_plain`` runs the ops in order and drops each value after its last reader: programs
hold thousands of values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from hec.ir import Graph

__all__ = ["COMMON_SEMANTICS", "Semantics", "evaluate_plain"]

Semantics = Callable[..., np.ndarray]

COMMON_SEMANTICS: dict[str, Semantics] = {
    "add": lambda op, x, y: x + y,
    "mul": lambda op, x, y: x * y,
    # HE bookkeeping (scale and level): identities on the values, but for the drift of a
    # rescale whose prime is not exactly the scale, where recorded (backend_openfhe.scale_drift)
    "rescale": lambda op, x: x * op.attrs["factor"] if "factor" in op.attrs else x,
    "level_reduce": lambda op, x: x,
    "bootstrap": lambda op, x: x,
    "poly": lambda op, x: np.polynomial.chebyshev.chebval(x, op.attrs["coeffs"]),
}


def evaluate_plain(
    graph: Graph, semantics: Mapping[str, Semantics], inputs: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """The arrays of ``graph``'s outputs, given its inputs' arrays."""
    env = dict(zip((id(v) for v in graph.inputs), inputs, strict=True))
    last, keep = graph.last_uses(), {id(v) for v in graph.outputs}
    for i, op in enumerate(graph.ops):
        env[id(op.result)] = semantics[op.kind](op, *(env[id(v)] for v in op.inputs))
        for v in op.inputs:
            if last[id(v)] == i and id(v) not in keep:
                env.pop(id(v), None)
    return [env[id(v)] for v in graph.outputs]
