"""Walk an ONNX graph once: fold what is constant, convert what touches the encrypted input.

Every tensor name ends up either a numpy constant (initializers, ``Constant`` nodes, shape
arithmetic, transposed weights: anything not depending on the input, evaluated with onnx's
reference evaluator) or an IR value of the tensor dialect. Exporters' shape plumbing
(``Shape → Gather → Concat → Reshape``) thus becomes a constant target shape, as it should.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hec.errors import ModelError, ShapeError, UnsupportedOpError
from hec.frontend import convert_activations, convert_linear, convert_ml, convert_norm  # noqa: F401
from hec.frontend.converters import CONVERTERS, HINTS
from hec.frontend.load import encrypted_input
from hec.ir import Graph, TensorType, Value, VerifyError

__all__ = ["build_graph", "Context"]


@dataclass
class Context:
    """What a converter sees: the graph being built and the name → constant/value tables."""

    graph: Graph
    opset: int
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    node: onnx.NodeProto | None = None

    @property
    def where(self) -> str:
        n = self.node
        return (n.name or n.output[0]) if n is not None else "?"

    def is_encrypted(self, name: str) -> bool:
        return name in self.values

    def value(self, name: str) -> Value:
        return self.values[name]

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
        consts: dict[str, np.ndarray] | None = None,
    ) -> Value:
        assert self.node is not None
        consts = {k: np.asarray(v, dtype=np.float64) for k, v in (consts or {}).items()}
        return self.graph.add(
            kind,
            inputs,
            TensorType(tuple(int(d) for d in shape)),
            attrs,
            consts,
            origin=self.where,
            name=f"{self.node.output[0]}/{kind}",  # renamed to the ONNX name if it is one
        )

    def unsupported(self, why: str) -> UnsupportedOpError:
        assert self.node is not None
        return UnsupportedOpError(self.where, self.node.op_type, why)


def build_graph(proto: onnx.ModelProto, name: str = "main") -> Graph:
    """Convert a loaded, shape-inferred ONNX model into a tensor-dialect graph."""
    opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    ctx = Context(Graph(name), opset)
    for init in proto.graph.initializer:
        try:
            ctx.consts[init.name] = numpy_helper.to_array(init)
        except (ValueError, TypeError, MemoryError, OverflowError) as exc:
            raise ModelError(
                f"initializer '{init.name}': dims {list(init.dims)} do not match its data "
                f"({type(exc).__name__}); the file is damaged"
            ) from None
    inp = encrypted_input(proto)
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    ctx.values[inp.name] = ctx.graph.add_input(inp.name, TensorType(tuple(dims[1:])))

    for node in proto.graph.node:
        ctx.node = node
        # other domains' converters are registered as "domain::op" (e.g. ai.onnx.ml::Scaler)
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        if key != node.op_type and key not in CONVERTERS:
            raise UnsupportedOpError(ctx.where, key, "custom-domain ops cannot be compiled")
        if not any(ctx.is_encrypted(i) for i in node.input if i):
            _fold(ctx, node)
            continue
        convert = CONVERTERS.get(key)
        if convert is None:
            raise UnsupportedOpError(ctx.where, node.op_type, HINTS.get(node.op_type, ""))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        first_new = len(ctx.graph.ops)
        try:
            outputs = convert(ctx, node, attrs)
        except (
            ValueError,
            TypeError,
            IndexError,
            ZeroDivisionError,
            OverflowError,
            MemoryError,
        ) as exc:
            # numpy refusing the node's operands: a model ONNX's checker let through but no
            # runtime could execute (a bias that does not broadcast, a zero stride, ...).
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ModelError(
                f"node '{ctx.where}' ({node.op_type}): inconsistent operands or attributes "
                f"({first})"
            ) from None
        created = {id(r) for op in ctx.graph.ops[first_new:] for r in op.results}
        for out_name, out in zip(node.output, outputs, strict=False):
            if not out_name:
                continue
            if isinstance(out, Value):
                if id(out) in created:  # values keep the ONNX tensor name they stand for
                    out.name = out_name
                ctx.values[out_name] = out
            else:
                ctx.consts[out_name] = np.asarray(out)
    ctx.node = None

    for out in proto.graph.output:
        if out.name not in ctx.values:
            raise ModelError(
                f"output '{out.name}' does not depend on the input; nothing to encrypt"
            )
        v = ctx.values[out.name]
        _check_inferred_shape(out, v)
        ctx.graph.outputs.append(v)
    try:
        ctx.graph.verify()
    except VerifyError as exc:
        raise ModelError(
            f"inconsistent model ({exc}); if onnxruntime runs it, please report it"
        ) from None
    return ctx.graph


def _fold(ctx: Context, node: onnx.NodeProto) -> None:
    """Evaluate a node whose inputs are all constant."""
    feeds = {i: ctx.consts[i] for i in node.input if i}
    missing = [i for i in node.input if i and i not in ctx.consts]
    if missing:
        raise ModelError(f"node '{ctx.where}': input '{missing[0]}' is never defined")
    try:
        outs = ReferenceEvaluator(node, opsets={"": ctx.opset}).run(None, feeds)
    except Exception as exc:
        raise UnsupportedOpError(
            ctx.where, node.op_type, f"folding its constant inputs failed ({exc})"
        ) from None
    for name, arr in zip(node.output, outs, strict=False):
        if name:
            ctx.consts[name] = np.asarray(arr)


def _check_inferred_shape(out: onnx.ValueInfoProto, v: Value) -> None:
    dims = out.type.tensor_type.shape.dim
    onnx_shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    ours = [1, *v.shape]
    if onnx_shape and None not in onnx_shape and onnx_shape != ours:
        raise ShapeError(
            f"output '{out.name}': ONNX infers shape {onnx_shape}, hec built "
            f"{ours}; please report this model"
        )
