"""Split an ONNX model where the server's work ends: what follows the logits runs on the client.

A classifier's last steps — Softmax, LogSoftmax, ArgMax, a final Sigmoid, a scikit-learn
classifier's post-transform and label, ZipMap, Cast — read only the logits and constants. The
server need not compute them (CKKS could only approximate them): ``split_tail`` cuts the model
at the last tensor the server must compute and returns two ONNX models, the *head* (the
encrypted input to the logits, compiled) and the *tail* (the logits to the model's outputs,
stored in the artifact and run by the client with onnxruntime on the decrypted logits).

Exact: head followed by tail computes the same function as the model (the tail is the
model's own nodes; a ``LinearClassifier`` becomes its affine scores on the head and the same
classifier on identity weights on the tail, which onnxruntime evaluates identically).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hec.errors import ModelError
from hec.frontend.convert_ml import ML_DOMAIN, linear_classifier_weights

__all__ = ["Split", "split_tail", "with_batch_of", "head_reference", "append_tail"]

# The steps that end a classifier: at least one of them starts every tail.
_FINAL = {
    ("", "Softmax"),
    ("", "LogSoftmax"),
    ("", "ArgMax"),
    ("", "Sigmoid"),
    (ML_DOMAIN, "LinearClassifier"),
    (ML_DOMAIN, "ZipMap"),
    (ML_DOMAIN, "Normalizer"),
    (ML_DOMAIN, "ArrayFeatureExtractor"),
}
# What exporters put after them (labels, the other class's probability, reshapes, casts);
# in the tail only downstream of a final step, so a model's own last linear steps stay on
# the server.
_AFTER = {
    ("", op)
    for op in (
        "Cast",
        "Identity",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Add",
        "Sub",
        "Mul",
        "Div",
    )
}
_PROBABILITY_POSTS = {"LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"}


@dataclass
class Split:
    """A model cut at its logits. ``tail`` is None when nothing runs on the client."""

    head: onnx.ModelProto
    tail: onnx.ModelProto | None = None
    ops: list[str] = field(default_factory=list)  # op types of the tail, in order
    logits: str = ""  # the tensor the server computes (the tail's input)
    outputs: list[dict[str, str]] = field(default_factory=list)  # name and kind per output


def _key(node: onnx.NodeProto) -> tuple[str, str]:
    return ("" if node.domain == "ai.onnx" else node.domain, node.op_type)


def _tail_op(node: onnx.NodeProto) -> bool:
    """May run on the client: never a step holding the model's weights (a classifier's own
    coefficients stay on the server; only its identity-weight copy is a tail step)."""
    if _key(node) == (ML_DOMAIN, "LinearClassifier"):
        return _is_identity(node)
    return _key(node) in _FINAL | _AFTER


def split_tail(proto: onnx.ModelProto) -> Split:
    """Cut ``proto`` (loaded and shape-inferred, see ``load_model``) at its logits.

    The tail is the largest set of trailing nodes that are a classifier's final steps (or
    plumbing after them), read nothing else the server computes than one tensor, and whose
    results only the model's outputs or other tail nodes read. Raises ``ModelError`` when the
    tail would need more than one tensor from the server.
    """
    proto = _split_linear_classifiers(proto)
    nodes = list(proto.graph.node)
    consts = _constant_names(proto)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)

    tail: set[int] = set()
    for i in reversed(range(len(nodes))):
        n = nodes[i]
        if all(o in consts for o in n.output if o) or not _tail_op(n):
            continue
        if all(c in tail for o in n.output for c in consumers.get(o, [])):
            tail.add(i)
    after_final: set[int] = set()
    for i in sorted(tail):
        n = nodes[i]
        if _key(n) in _FINAL or any(producer.get(x) in after_final for x in n.input if x):
            after_final.add(i)
    tail = after_final
    if not tail:
        return Split(head=proto, outputs=_outputs(proto, nodes, set(), ""))

    made = {o for i in tail for o in nodes[i].output}
    graph_outputs = [o.name for o in proto.graph.output]
    boundary = list(
        dict.fromkeys(
            [x for i in sorted(tail) for x in nodes[i].input if x and x not in made | consts]
            + [o for o in graph_outputs if o not in made]
        )
    )
    if len(boundary) != 1:
        raise ModelError(
            f"the model's last steps ({', '.join(nodes[i].op_type for i in sorted(tail))}) "
            f"read {len(boundary)} tensors computed from the input ({', '.join(boundary)}); "
            f"hec compiles models whose outputs follow from one tensor"
        )
    logits = boundary[0]
    return Split(
        head=_head(proto, nodes, tail, logits),
        tail=_tail(proto, nodes, tail, logits, consts),
        ops=[nodes[i].op_type for i in sorted(tail)],
        logits=logits,
        outputs=_outputs(proto, nodes, tail, logits),
    )


def _constant_names(proto: onnx.ModelProto) -> set[str]:
    """Initializers and what nodes compute from constants alone (``Constant`` included)."""
    consts = {t.name for t in proto.graph.initializer}
    for n in proto.graph.node:
        if all(x in consts for x in n.input if x):
            consts.update(o for o in n.output if o)
    return consts


def _split_linear_classifiers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Each ``LinearClassifier`` becomes ``MatMul + Add`` (its raw scores, for the server)
    followed by the same classifier on identity weights (the post-transform and label)."""
    if not any(_key(n) == (ML_DOMAIN, "LinearClassifier") for n in proto.graph.node):
        return proto
    out = onnx.ModelProto.FromString(proto.SerializeToString())
    del out.graph.node[:]
    for n in proto.graph.node:
        if _key(n) != (ML_DOMAIN, "LinearClassifier") or _is_identity(n):
            out.graph.node.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        coef, targets = len(attrs["coefficients"]), len(attrs.get("intercepts") or [])
        if not targets or coef % targets:
            out.graph.node.append(n)  # the converter explains what it cannot do
            continue
        w, b = linear_classifier_weights(attrs, coef // targets)
        base = f"{n.name or n.output[-1]}"
        weight, bias = f"{base}/scores_weight", f"{base}/scores_bias"
        matmul, scores = f"{base}/scores_matmul", f"{base}/scores"
        out.graph.initializer.extend(
            [
                numpy_helper.from_array(w.astype(np.float32), weight),
                numpy_helper.from_array(b.astype(np.float32), bias),
            ]
        )
        targets = w.shape[1]
        identity = {
            **attrs,
            "coefficients": np.eye(targets).ravel().tolist(),
            "intercepts": [0.0] * targets,
        }
        out.graph.node.extend(
            [
                helper.make_node("MatMul", [n.input[0], weight], [matmul], name=matmul),
                helper.make_node("Add", [matmul, bias], [scores], name=scores),
                helper.make_node(
                    "LinearClassifier",
                    [scores],
                    list(n.output),
                    name=n.name,
                    domain=ML_DOMAIN,
                    **identity,
                ),
            ]
        )
    return onnx.shape_inference.infer_shapes(out)


def _is_identity(node: onnx.NodeProto) -> bool:
    """A classifier on identity weights: the post-transform and label alone (no weights)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    b = np.asarray(attrs.get("intercepts") or [], np.float64)
    coef = np.asarray(attrs.get("coefficients") or [], np.float64)
    return (
        coef.size == b.size**2
        and b.size > 0
        and np.array_equal(coef, np.eye(b.size).ravel())
        and not b.any()
    )


def _value_info(proto: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    g = proto.graph
    for v in [*g.value_info, *g.output, *g.input]:
        if v.name == name:
            return onnx.ValueInfoProto.FromString(v.SerializeToString())
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _head(proto: onnx.ModelProto, nodes: list, tail: set[int], logits: str) -> onnx.ModelProto:
    head = onnx.ModelProto.FromString(proto.SerializeToString())
    kept = [n for i, n in enumerate(nodes) if i not in tail]
    used = {x for n in kept for x in n.input}
    del head.graph.node[:]
    head.graph.node.extend(kept)
    inits = [t for t in proto.graph.initializer if t.name in used]
    del head.graph.initializer[:]
    head.graph.initializer.extend(inits)
    del head.graph.output[:]
    head.graph.output.append(_value_info(proto, logits))
    return head


def _tail(
    proto: onnx.ModelProto, nodes: list, tail: set[int], logits: str, consts: set[str]
) -> onnx.ModelProto:
    """The tail as a model of its own: input ``logits`` (any batch), the model's outputs."""
    needed = {x for i in tail for x in nodes[i].input if x in consts}
    const_nodes: list[int] = []
    for i in reversed(range(len(nodes))):  # constant subgraphs feeding the tail
        if i not in tail and any(o in needed for o in nodes[i].output):
            const_nodes.append(i)
            needed.update(x for x in nodes[i].input if x)
    order = sorted(set(const_nodes) | tail)
    body = [onnx.NodeProto.FromString(nodes[i].SerializeToString()) for i in order]
    outputs = [
        _batchless(onnx.ValueInfoProto.FromString(o.SerializeToString()))
        for o in proto.graph.output
    ]
    if any(o.name == logits for o in outputs):  # the logits are an output too: pass them on
        renamed = f"{logits}/client_input"
        for n in body:
            n.input[:] = [renamed if x == logits else x for x in n.input]
        body.insert(0, helper.make_node("Identity", [renamed], [logits], name=f"{logits}/output"))
        source = renamed
    else:
        source = logits
    inp = _batchless(_value_info(proto, logits))
    inp.name = source
    graph = helper.make_graph(
        body,
        f"{proto.graph.name}_client_tail",
        [inp],
        outputs,
        [t for t in proto.graph.initializer if t.name in needed],
    )
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def _batchless(v: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """The batch axis of a tensor's type made symbolic: the client runs the tail on a batch."""
    if v.type.HasField("tensor_type") and v.type.tensor_type.shape.dim:
        d = v.type.tensor_type.shape.dim[0]
        d.ClearField("dim_value")
        d.dim_param = "N"
    return v


def _outputs(proto: onnx.ModelProto, nodes: list, tail: set[int], logits: str) -> list[dict]:
    """Each model output's name and kind: ``logits`` (what the network computes), ``probability``,
    ``log_probability`` or ``labels`` (see ``_kind``)."""
    return [
        {"name": o.name, "kind": _kind(proto, nodes, tail, logits, o)} for o in proto.graph.output
    ]


def _kind(
    proto: onnx.ModelProto, nodes: list, tail: set[int], logits: str, out: onnx.ValueInfoProto
) -> str:
    """What one output holds, found by walking back through the tail to its final step."""
    t = out.type
    if t.HasField("tensor_type") and t.tensor_type.elem_type not in (
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
        TensorProto.FLOAT16,
    ):
        return "labels"
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    name = out.name
    while name != logits and producer.get(name) in tail:
        n = nodes[producer[name]]
        op = n.op_type
        if op in ("Softmax", "Sigmoid"):
            return "probability"
        if op == "LogSoftmax":
            return "log_probability"
        if op in ("ArgMax", "ArrayFeatureExtractor"):
            return "labels"
        if op == "LinearClassifier":
            if name == n.output[0]:
                return "labels"
            post = next((a.s.decode() for a in n.attribute if a.name == "post_transform"), "")
            return "probability" if post in _PROBABILITY_POSTS else "logits"
        name = next((x for x in n.input if x and producer.get(x) in tail or x == logits), "")
    return "logits"


def with_batch_of(head: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """``head`` (batch pinned to 1) with the original input's batch axis, for onnxruntime on
    batches: symbolic again where the exporter left it symbolic."""
    inp = next(i for i in original.graph.input if i.name == head.graph.input[0].name)
    dims = inp.type.tensor_type.shape.dim
    if not dims or dims[0].HasField("dim_value"):
        return head
    out = onnx.ModelProto.FromString(head.SerializeToString())
    del out.graph.value_info[:]
    for v in [*out.graph.input[:1], *out.graph.output]:
        _batchless(v)
    return out


def head_reference(
    split: Split, model: str | os.PathLike | onnx.ModelProto
) -> str | os.PathLike | onnx.ModelProto:
    """The ONNX model whose output is what the compiled program computes (the logits), runnable
    on batches: ``model`` itself when nothing runs on the client, else its head."""
    if split.tail is None:
        return model
    if isinstance(model, onnx.ModelProto):
        original = model
    else:
        original = onnx.load(str(model), load_external_data=False)
    return with_batch_of(split.head, original)


def append_tail(head: onnx.ModelProto, split: Split) -> onnx.ModelProto:
    """``head`` (an exported HE-friendly head whose output is ``split.logits``) followed by the
    split's tail: a whole model again, returning what the original model returns."""
    if split.tail is None:
        return head
    out = onnx.ModelProto.FromString(head.SerializeToString())
    tail = split.tail.graph
    (logits,) = [o.name for o in out.graph.output]
    rename = {tail.input[0].name: logits}
    for node in tail.node:
        copy = out.graph.node.add()
        copy.CopyFrom(node)
        for i, name in enumerate(copy.input):
            copy.input[i] = rename.get(name, name)
    out.graph.initializer.extend(tail.initializer)
    del out.graph.output[:]
    out.graph.output.extend(tail.output)
    versions = {o.domain or "": o.version for o in out.opset_import}
    for o in split.tail.opset_import:
        versions[o.domain or ""] = max(versions.get(o.domain or "", 0), o.version)
    del out.opset_import[:]
    out.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    out.ir_version = max(out.ir_version, split.tail.ir_version)
    return out
