"""Deterministic text form of a graph: what golden tests store and ``--dump-ir-after`` writes.

Values are numbered in definition order (``%0`` is the first input), so dumps do not depend on
exporter tensor names. By default constants print as dtype, shape and a digest of their values
rounded to six decimals, which is stable across machines yet changes when the numbers do; long
attribute tuples print as a count and a digest, floats with six significant digits and gathered
layouts with a checksum of their source map.

``exact=True`` prints everything in full instead (constants inline, floats as ``repr``, layouts
with their source map), so that ``hec.ir.parser`` rebuilds the same graph from the text.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from hec.ir.types import CipherType, Layout

if TYPE_CHECKING:
    from hec.ir.core import Graph, Value

__all__ = ["print_graph", "digest", "digest_table"]

_LONG = 16  # attribute tuples longer than this print as a count and a digest by default


def digest(a: np.ndarray) -> str:
    """Eight hex digits identifying an array's shape and values (rounded to 1e-6)."""
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        arr = np.round(arr.astype(np.float64), 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    # crc32, not a cryptographic hash: programs hold thousands of constants to fingerprint.
    return (
        f"{zlib.crc32(arr.astype(np.float64).tobytes(), zlib.crc32(str(arr.shape).encode())):08x}"
    )


def _layout_crc(layout: Layout) -> str:
    """The checksum the default form prints after a gathered layout (see ``Layout.__str__``)."""
    return str(layout).rsplit("#", 1)[1]


def digest_table(graph: Graph) -> dict[str, Any]:
    """Every digest the default form of ``graph`` prints, mapped to what it stands for.

    Constants map to their arrays, long attribute tuples to the tuples and gathered layouts (by
    their checksum) to their source maps: the ``constants`` that ``hec.ir.parser.parse_graph``
    needs to rebuild ``graph`` exactly from its default dump.
    """
    table: dict[str, Any] = {}

    def attrs(values: Mapping[str, Any]) -> None:
        for v in values.values():
            if isinstance(v, tuple | list) and len(v) > _LONG:
                table[digest(np.asarray(v, dtype=np.float64))] = tuple(v)

    attrs(graph.attrs)
    for v in graph.values():
        layout = v.type.layout if isinstance(v.type, CipherType) else None
        if layout is not None and layout.source is not None:
            table[_layout_crc(layout)] = layout.source
    for op in graph.ops:
        attrs(op.attrs)
        for arr in op.consts.values():
            table[digest(arr)] = arr
    return table


class _Printer:
    """One print: the mode and, for stand-ins of a structure-only parse, the digests to show."""

    def __init__(self, exact: bool, digests: Mapping[str, Any] | None) -> None:
        self.exact = exact
        self.shown = {id(obj): key for key, obj in (digests or {}).items()}

    def attr(self, v: Any) -> str:
        if isinstance(v, tuple | list):
            if len(v) > _LONG and not self.exact:
                key = self.shown.get(id(v)) or digest(np.asarray(v, dtype=np.float64))
                return f"[{len(v)} items]#{key}"
            return "[" + ", ".join(self.attr(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(float(v)) if self.exact else f"{v:.6g}"
        if isinstance(v, str):
            return repr(v)
        return str(v)

    def attrs(self, values: Mapping[str, Any]) -> str:
        return "{" + ", ".join(f"{k}={self.attr(values[k])}" for k in sorted(values)) + "}"

    def const(self, a: np.ndarray) -> str:
        dims = "x".join(map(str, a.shape)) or "scalar"
        head = f"{a.dtype.kind}{a.dtype.itemsize * 8}[{dims}]"
        if self.exact:
            return head + "{" + ", ".join(map(repr, a.ravel().tolist())) + "}"
        return f"{head}#{self.shown.get(id(a)) or digest(a)}"

    def type(self, t: Any) -> str:
        layout = t.layout if isinstance(t, CipherType) else None
        if layout is None or layout.source is None:
            return str(t)
        dims = "x".join(map(str, layout.shape))
        if self.exact:
            held = f"{layout.kind}<{dims}, source={self.attr(tuple(layout.source))}>"
        elif id(layout.source) in self.shown:
            used = np.count_nonzero(np.asarray(layout.source) >= 0)
            held = f"{layout.kind}<{dims}, {used} slots used>#{self.shown[id(layout.source)]}"
        else:
            held = str(layout)
        return f"cipher<{t.slots}, {held}, level={t.level}, scale=Δ^{t.scale_deg}>"


def print_graph(graph: Graph, exact: bool = False, digests: Mapping[str, Any] | None = None) -> str:
    """The text of ``graph``; ``exact=True`` loses nothing (see the module docstring).

    ``digests`` maps a digest to the object (constant array, long attribute tuple, layout source
    map) that stands for it: that object prints as this digest instead of its own. It is how the
    zero stand-ins of ``parse_graph(..., structure_only=True)`` print back as the digests read.
    """
    p = _Printer(exact, digests)
    names: dict[int, str] = {}

    def name(v: Value) -> str:
        return names.setdefault(id(v), f"%{len(names)}")

    params = ", ".join(f"{name(v)}: {p.type(v.type)}" for v in graph.inputs)
    attributes = f" attributes {p.attrs(graph.attrs)}" if graph.attrs else ""
    lines = [f"{graph.dialect} graph {graph.name}({params}){attributes} {{"]
    for op in graph.ops:
        results = ", ".join(name(r) for r in op.results)
        args = ", ".join(name(v) for v in op.inputs)
        parts = [f"  {results} = {op.kind}({args})"]
        if op.attrs:
            parts.append(p.attrs(op.attrs))
        parts.extend(f"{k}={p.const(op.consts[k])}" for k in sorted(op.consts))
        types = ", ".join(p.type(r.type) for r in op.results)
        line = " ".join(parts) + f" : {types}"
        lines.append(line + (f"  # {op.origin}" if op.origin else ""))
    lines.append("  return " + ", ".join(name(v) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
