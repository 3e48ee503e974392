"""Deterministic text form of a graph: what golden tests store and ``--dump-ir-after`` writes.

Values are numbered in definition order (``%0`` is the first input), so dumps do not depend on
exporter tensor names. Constants print as dtype, shape and a digest of their values rounded to
six decimals, which is stable across machines yet changes when the numbers do.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from hec.ir.core import Graph, Value

__all__ = ["print_graph", "digest"]

_LONG = 16  # attribute tuples longer than this print as a count and a digest


def digest(a: np.ndarray) -> str:
    """Eight hex digits identifying an array's shape and values (rounded to 1e-6)."""
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        arr = np.round(arr.astype(np.float64), 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    # crc32, not a cryptographic hash: programs hold thousands of constants to fingerprint.
    return (
        f"{zlib.crc32(arr.astype(np.float64).tobytes(), zlib.crc32(str(arr.shape).encode())):08x}"
    )


def _attr(v: Any) -> str:
    if isinstance(v, tuple | list):
        if len(v) > _LONG:
            return f"[{len(v)} items]#{digest(np.asarray(v, dtype=np.float64))}"
        return "[" + ", ".join(_attr(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _const(a: np.ndarray) -> str:
    dims = "x".join(map(str, a.shape)) or "scalar"
    return f"{a.dtype.kind}{a.dtype.itemsize * 8}[{dims}]#{digest(a)}"


def print_graph(graph: Graph) -> str:
    names: dict[int, str] = {}

    def name(v: Value) -> str:
        return names.setdefault(id(v), f"%{len(names)}")

    params = ", ".join(f"{name(v)}: {v.type}" for v in graph.inputs)
    lines = [f"{graph.dialect} graph {graph.name}({params}) {{"]
    for op in graph.ops:
        results = ", ".join(name(r) for r in op.results)
        args = ", ".join(name(v) for v in op.inputs)
        parts = [f"  {results} = {op.kind}({args})"]
        if op.attrs:
            parts.append(
                "{" + ", ".join(f"{k}={_attr(op.attrs[k])}" for k in sorted(op.attrs)) + "}"
            )
        parts.extend(f"{k}={_const(op.consts[k])}" for k in sorted(op.consts))
        types = ", ".join(str(r.type) for r in op.results)
        line = " ".join(parts) + f" : {types}"
        lines.append(line + (f"  # {op.origin}" if op.origin else ""))
    lines.append("  return " + ", ".join(name(v) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
