"""The state a converter works on while the importer walks an ONNX graph.

The importer owns the walk; the converter modules only read and extend this state, so both
import it from here (and the converters need nothing of the importer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from numpy.typing import ArrayLike

from hec.errors import UnsupportedOpError
from hec.ir import Graph, TensorType, Value

__all__ = ["Context"]


@dataclass
class Context:
    """What a converter sees: the graph being built and the name → constant/value tables.

    ONNX tensors carry the batch axis in front, IR values do not: an encrypted tensor's ONNX
    shape is ``(1, *value.shape)``. Exception: in a model whose batch is fixed at 1, data
    movement may drop the batch axis (dynamo writes ``Reshape`` to ``[16]`` of one sample);
    such tensors are in ``flat`` and their IR shape is their ONNX shape.
    """

    graph: Graph
    opset: int
    fixed_batch: bool = False
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    flat: set[str] = field(default_factory=set)
    emitted_names: set[str] = field(default_factory=set)
    declared_flat: dict[str, bool] = field(default_factory=dict)
    node: onnx.NodeProto | None = None

    @property
    def where(self) -> str:
        n = self.node
        return (n.name or n.output[0]) if n is not None else "?"

    def is_encrypted(self, name: str) -> bool:
        return name in self.values

    def value(self, name: str, what: str = "") -> Value:
        """The encrypted value behind ``name``; a constant here is an unsupported use."""
        if name in self.values:
            return self.values[name]
        assert self.node is not None
        pos = list(self.node.input).index(name) if name in self.node.input else "?"
        raise UnsupportedOpError(
            self.where,
            self.node.op_type,
            f"its input {pos}{f' ({what})' if what else ''} is a constant where hec needs the "
            f"encrypted tensor (only the encrypted-data operand order is supported)",
        )

    def full(self, name: str) -> tuple[int, ...]:
        """The ONNX shape of the encrypted tensor ``name`` (batch axis included unless flat)."""
        v = self.value(name)
        return tuple(v.shape) if name in self.flat else (1, *v.shape)

    def emit_full(
        self,
        kind: str,
        inputs: list[Value],
        full: tuple[int, ...],
        out: str,
        attrs: dict[str, Any] | None = None,
        consts: Mapping[str, ArrayLike] | None = None,
    ) -> Value:
        """Emit an op whose ONNX output ``out`` has shape ``full``; decides its batch axis."""
        shape = self.per_sample_shape(full, out)
        attrs = dict(attrs or {})
        if "shape" in attrs:
            attrs["shape"] = shape
        return self.emit(kind, inputs, shape, attrs, consts)

    def per_sample_shape(self, full: tuple[int, ...], out: str) -> tuple[int, ...]:
        """IR shape of an ONNX tensor of shape ``full``: a leading 1 (rank >= 2) is the batch."""
        full = tuple(int(d) for d in full)
        if len(full) >= 2 and full[0] == 1:
            self.declared_flat[out] = False
            return full[1:]
        if not self.fixed_batch:
            raise self.unsupported(
                f"its result of shape {list(full)} changes the batch axis; export with a "
                f"fixed batch of 1 (torch: no dynamic_shapes) to compile per-sample reshapes"
            )
        self.declared_flat[out] = True
        return full

    def const(self, name: str, what: str = "operand") -> np.ndarray:
        """The constant behind ``name``; an encrypted one here is an unsupported use."""
        if name in self.consts:
            return self.consts[name]
        assert self.node is not None
        raise UnsupportedOpError(
            self.where,
            self.node.op_type,
            f"its {what} must be a constant, not derived from the input",
        )

    def optional_const(self, index: int) -> np.ndarray | None:
        assert self.node is not None
        ins = self.node.input
        return self.const(ins[index], f"input {index}") if len(ins) > index and ins[index] else None

    def emit(
        self,
        kind: str,
        inputs: list[Value],
        shape: tuple[int, ...],
        attrs: dict[str, Any] | None = None,
        consts: Mapping[str, ArrayLike] | None = None,
    ) -> Value:
        assert self.node is not None
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in (consts or {}).items()}
        # unique: calibration statistics are keyed by value name, and a converter may emit
        # several ops of one kind (Max of three operands: two ReLUs on different roots)
        name = base = f"{self.node.output[0]}/{kind}"
        while name in self.emitted_names:
            name = f"{base}.{len(self.emitted_names)}"
        self.emitted_names.add(name)
        return self.graph.add(
            kind,
            inputs,
            TensorType(tuple(int(d) for d in shape)),
            attrs,
            arrays,
            origin=self.where,
            name=name,  # renamed to the ONNX name if it is one
        )

    def unsupported(self, why: str) -> UnsupportedOpError:
        assert self.node is not None
        return UnsupportedOpError(self.where, self.node.op_type, why)
