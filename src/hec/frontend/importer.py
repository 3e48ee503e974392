"""Walk an ONNX graph once: fold what is constant, convert what touches the encrypted input.

Every tensor name ends up either a numpy constant (initializers, ``Constant`` nodes, shape
arithmetic, transposed weights: anything not depending on the input, evaluated with onnx's
reference evaluator) or an IR value of the tensor dialect. Exporters' shape plumbing
(``Shape → Gather → Concat → Reshape``) thus becomes a constant target shape, as it should.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hec.errors import ModelError, ShapeError, UnsupportedOpError
from hec.frontend import (  # noqa: F401 (each registers its converters)
    convert_activations,
    convert_linear,
    convert_ml,
    convert_norm,
    convert_resample,
    converters,
    movement,
)
from hec.frontend.context import Context
from hec.frontend.load import encrypted_input, has_fixed_batch
from hec.frontend.registry import BATCH_FREE, CONVERTERS, HINTS
from hec.ir import Graph, TensorType, Value, VerifyError

__all__ = ["build_graph"]


def build_graph(proto: onnx.ModelProto, name: str = "main") -> Graph:
    """Convert a loaded, shape-inferred ONNX model into a tensor-dialect graph.

    Every unsupported node is reported, not only the first: the import goes on past one
    (its outputs become opaque encrypted tensors of the ONNX-inferred shape) and one error
    lists them all at the end.
    """
    opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    ctx = Context(Graph(name), opset, fixed_batch=has_fixed_batch(proto))
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
    inferred = _inferred_shapes(proto)
    errors: list[ModelError] = []
    unknown: set[str] = set()  # outputs of failed nodes whose shape ONNX could not infer

    for node in proto.graph.node:
        ctx.node = node
        if any(i in unknown for i in node.input if i):
            unknown.update(o for o in node.output if o)
            continue
        try:
            _convert_node(ctx, node, inferred)
        except ModelError as exc:
            errors.append(exc)
            _opaque_outputs(ctx, node, inferred, unknown)
    ctx.node = None
    if errors:
        raise _combined(errors)

    for out in proto.graph.output:
        if out.name not in ctx.values:
            raise ModelError(
                f"output '{out.name}' does not depend on the input; nothing to encrypt"
            )
        v = ctx.values[out.name]
        if out.name in ctx.flat:
            raise ShapeError(
                f"output '{out.name}' (shape {list(v.shape)}) has lost the batch axis; hec "
                f"returns outputs with it in front: end the model with a reshape to "
                f"[1, ...]"
            )
        _check_inferred_shape(out, v)
        ctx.graph.outputs.append(v)
    try:
        ctx.graph.verify()
    except VerifyError as exc:
        raise ModelError(
            f"inconsistent model ({exc}); if onnxruntime runs it, please report it"
        ) from None
    return ctx.graph


def _convert_node(
    ctx: Context, node: onnx.NodeProto, inferred: dict[str, tuple[int, ...] | None]
) -> None:
    """Fold a constant node or convert one that touches the encrypted input."""
    # other domains' converters are registered as "domain::op" (e.g. ai.onnx.ml::Scaler)
    key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    if key != node.op_type and key not in CONVERTERS:
        raise UnsupportedOpError(ctx.where, key, "custom-domain ops cannot be compiled")
    encrypted = [i for i in node.input if i and ctx.is_encrypted(i)]
    if not encrypted:
        _fold(ctx, node)
        return
    convert = CONVERTERS.get(key)
    if convert is None:
        raise UnsupportedOpError(ctx.where, node.op_type, HINTS.get(node.op_type, ""))
    flat_in = [i for i in encrypted if i in ctx.flat]
    if flat_in and node.op_type not in BATCH_FREE:
        raise ctx.unsupported(
            f"its input '{flat_in[0]}' (shape {list(ctx.full(flat_in[0]))}) has lost the "
            f"batch axis; hec reads this op only on tensors with the batch axis in front"
        )
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    first_new = len(ctx.graph.ops)
    ctx.declared_flat.clear()
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
            f"node '{ctx.where}' ({node.op_type}): inconsistent operands or attributes ({first})"
        ) from None
    created = {id(r) for op in ctx.graph.ops[first_new:] for r in op.results}
    for out_name, out in zip(node.output, outputs, strict=False):
        if not out_name:
            continue
        if isinstance(out, Value):
            if id(out) in created:  # values keep the ONNX tensor name they stand for
                out.name = out_name
            ctx.values[out_name] = out
            if _is_flat(ctx, out_name, out, encrypted, inferred.get(out_name)):
                ctx.flat.add(out_name)
        else:
            ctx.consts[out_name] = np.asarray(out)


def _is_flat(
    ctx: Context, name: str, v: Value, inputs: list[str], onnx_shape: tuple[int, ...] | None
) -> bool:
    """Whether the ONNX tensor ``name`` lost its batch axis: the converter says so, else its
    inferred rank equals the IR rank, else it keeps its first encrypted input's state."""
    if name in ctx.declared_flat:
        return ctx.declared_flat[name]
    if onnx_shape is not None:
        if len(onnx_shape) == len(v.shape) + 1:
            return False
        if len(onnx_shape) == len(v.shape) and (ctx.fixed_batch or set(inputs) & ctx.flat):
            return True
        raise ShapeError(
            f"node '{ctx.where}': ONNX infers shape {list(onnx_shape)} for '{name}', hec "
            f"built {list(v.shape)} per sample; please report this model"
        )
    return any(i in ctx.flat and ctx.values[i].shape == v.shape for i in inputs)


def _inferred_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    """ONNX-inferred shapes by tensor name (``None`` where a dimension is unknown)."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    for info in [*proto.graph.value_info, *proto.graph.output, *proto.graph.input]:
        t = info.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [int(d.dim_value) for d in t.shape.dim if d.HasField("dim_value")]
        shapes[info.name] = tuple(dims) if len(dims) == len(t.shape.dim) else None
    return shapes


def _opaque_outputs(
    ctx: Context,
    node: onnx.NodeProto,
    inferred: dict[str, tuple[int, ...] | None],
    unknown: set[str],
) -> None:
    """Stand-ins for a failed node's outputs, so that the import can report later nodes too."""
    for out in node.output:
        if not out:
            continue
        shape = inferred.get(out)
        batched = shape is not None and len(shape) >= 2 and shape[0] == 1
        if shape is None or not (batched or ctx.fixed_batch):  # later nodes: skipped, unreported
            unknown.add(out)
        elif batched:
            ctx.values[out] = Value(out, TensorType(shape[1:]))
        else:
            ctx.values[out] = Value(out, TensorType(shape))
            ctx.flat.add(out)


def _combined(errors: list[ModelError]) -> ModelError:
    """One error for every failed node: a summary line, then one line per node."""
    if len(errors) == 1:
        return errors[0]
    lines = "\n".join(f"  {e}" for e in errors)
    unsupported = [e for e in errors if isinstance(e, UnsupportedOpError)]
    msg = (
        f"{len(errors)} nodes cannot be compiled (each listed below); replace or remove them "
        f"before export\n{lines}"
    )
    if len(unsupported) == len(errors):
        first = unsupported[0]
        err: ModelError = UnsupportedOpError(first.node, first.op_type)
        err.args = (msg,)
    else:
        err = ModelError(msg)
    err.errors = errors
    return err


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
