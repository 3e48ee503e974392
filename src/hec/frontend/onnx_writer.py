"""The node and initializer writer that ``export`` and ``export_linear`` share.

A tensor op may become several ONNX nodes: the last one carries the op's origin as its name,
the helper nodes before it are named ``<origin>#<step>``, so that a re-import can tell which
op each node came from (``HELPER`` is the ``#``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["HELPER", "OnnxWriter"]

HELPER = "#"  # helper nodes are named "<origin>#<step>"; origins drop the suffix on import


class OnnxWriter:
    """The nodes and initializers of an ONNX graph being written, under fresh unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._node_names: set[str] = set()
        self.taken: set[str] = set()  # the graph's own value names (a re-imported hec export)

    def fresh(self, hint: str) -> str:
        while True:
            self._n += 1
            name = f"{hint}_{self._n}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(
        self, op_type: str, inputs: list[str], out: str | None = None, name: str = "", **attrs
    ) -> str:
        out = out or self.fresh(op_type.lower())
        name = name or out
        if name in self._node_names:  # ONNX wants unique node names; keep the origin readable
            name = self.fresh(name)
        self._node_names.add(name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out
