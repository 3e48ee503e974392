"""Tensor graph → ONNX, so an HE-friendly model runs in onnxruntime and any other tool.

Polynomials are written with ordinary ops in Clenshaw's form (``b_k = c_k + 2t·b_{k+1} -
b_{k+2}``, stable in float32); on re-import ``fuse-polynomials`` recovers the same ``poly`` op.
The batch axis comes back as a dynamic first axis named ``batch``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from hec.frontend.export_linear import LINEAR_EXPORTS
from hec.frontend.onnx_writer import HELPER, OnnxWriter
from hec.ir import Graph, Op

__all__ = ["export_onnx"]

IR_VERSION = 9  # accepted by onnxruntime 1.20+; matches opset 17

_ACTIVATION_ONNX = {
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "softplus": "Softplus",
    "erf": "Erf",
    "elu": "Elu",
}


def _poly(w: OnnxWriter, t: str, coeffs: tuple[float, ...], out: str, name: str) -> str:
    c = [float(v) for v in coeffs]

    def node(op_type: str, inputs: list[str], step: str) -> str:
        return w.node(op_type, inputs, name=f"{name}{HELPER}{step}")

    if len(c) == 1:
        return w.node("Add", [node("Mul", [t, w.const(0.0)], "zero"), w.const(c[0])], out, name)
    two_t = node("Mul", [t, w.const(2.0)], "2t")
    b1: str | None = None  # b_{k+1}
    b2: str | None = None  # b_{k+2}
    for k in range(len(c) - 1, 0, -1):
        if b1 is None:
            b = node("Add", [node("Mul", [t, w.const(0.0)], "zero"), w.const(c[k])], f"b{k}")
        else:
            b = node("Add", [node("Mul", [two_t, b1], f"2tb{k + 1}"), w.const(c[k])], f"b{k}")
            if b2 is not None:
                b = node("Sub", [b, b2], f"b{k}")
        b1, b2 = b, b1
    assert b1 is not None  # two or more coefficients: the loop ran
    result = node("Add", [node("Mul", [t, b1], "tb1"), w.const(c[0])], "sum")
    if b2 is not None:
        result = node("Sub", [result, b2], "sum")
    return w.node("Identity", [result], out, name)


def _op(w: OnnxWriter, op: Op, x: list[str], out: str, opset: int) -> None:
    a, c, name = op.attrs, op.consts, op.origin or out
    k = op.kind
    if k == "conv":
        ins = [x[0], w.const(c["weight"])] + ([w.const(c["bias"])] if "bias" in c else [])
        w.node(
            "Conv",
            ins,
            out,
            name,
            strides=list(a["strides"]),
            pads=list(a["pads"]),
            dilations=list(a["dilations"]),
        )
    elif k == "matmul":
        if "bias" in c and len(op.inputs[0].shape) == 1:  # [batch, K]: Gemm, as exporters do
            w.node("Gemm", [x[0], w.const(c["weight"]), w.const(c["bias"])], out, name)
        elif "bias" in c:
            h = w.node("MatMul", [x[0], w.const(c["weight"])], name=f"{name}{HELPER}matmul")
            w.node("Add", [h, w.const(c["bias"])], out, name)
        else:
            w.node("MatMul", [x[0], w.const(c["weight"])], out, name)
    elif k in ("avgpool", "maxpool"):
        extra = {"count_include_pad": int(a["count_include_pad"])} if k == "avgpool" else {}
        w.node(
            "AveragePool" if k == "avgpool" else "MaxPool",
            [x[0]],
            out,
            name,
            kernel_shape=list(a["kernel"]),
            strides=list(a["strides"]),
            pads=list(a["pads"]),
            **extra,
        )
    elif k == "pad":
        n = len(a["pads"]) // 2
        pads = [0, *a["pads"][:n], 0, *a["pads"][n:]]
        w.node(
            "Pad", [x[0], w.const(pads, np.int64), w.const(a["value"])], out, name, mode=a["mode"]
        )
    elif k == "reshape":
        w.node("Reshape", [x[0], w.const([-1, *a["shape"]], np.int64)], out, name)
    elif k == "transpose":
        w.node("Transpose", [x[0]], out, name, perm=[0, *(p + 1 for p in a["perm"])])
    elif k == "scale_shift":
        h = w.node("Mul", [x[0], w.const(c["scale"])], name=f"{name}{HELPER}scale")
        w.node("Add", [h, w.const(c["shift"])], out, name)
    elif k == "reduce":
        op_type = "ReduceMean" if a["mode"] == "mean" else "ReduceSum"
        axes = [ax + 1 for ax in a["axes"]]
        if opset >= 18 or op_type == "ReduceSum":
            w.node(op_type, [x[0], w.const(axes, np.int64)], out, name, keepdims=a["keepdims"])
        else:
            w.node(op_type, [x[0]], out, name, axes=axes, keepdims=a["keepdims"])
    elif k in ("add", "mul"):
        w.node(k.capitalize(), x, out, name)
    elif k == "poly":
        _poly(w, x[0], a["coeffs"], out, name)
    elif k == "activation":
        fn = a["fn"]
        if fn in _ACTIVATION_ONNX:
            extra = {"alpha": a["alpha"]} if "alpha" in a else {}
            w.node(_ACTIVATION_ONNX[fn], [x[0]], out, name, **extra)
        else:  # gelu, gelu_tanh: opset 20's Gelu
            w.node("Gelu", [x[0]], out, name, approximate="tanh" if fn == "gelu_tanh" else "none")
    elif k == "select":  # Gather from the flat sample with a zero appended (index -1)
        n = int(np.prod(op.inputs[0].shape))
        flat = w.node("Reshape", [x[0], w.const([-1, n], np.int64)], name=f"{name}{HELPER}flat")
        padded = w.node("Pad", [flat, w.const([0, 0, 0, 1], np.int64)], name=f"{name}{HELPER}pad")
        index = np.where(c["index"] < 0, n, c["index"]).astype(np.int64)
        w.node("Gather", [padded, w.const(index, np.int64)], out, name, axis=1)
    elif k in LINEAR_EXPORTS:  # the kinds of ir/linear_ops.py
        LINEAR_EXPORTS[k](w, op, x, out, name)
    else:
        raise ValueError(f"cannot export tensor op {k!r} to ONNX")


def export_onnx(graph: Graph, opset: int = 17, producer: str = "hec") -> onnx.ModelProto:
    """Write a tensor graph as an ONNX model with a dynamic batch axis."""
    if any(op.kind == "activation" and op.attrs["fn"].startswith("gelu") for op in graph.ops):
        opset = max(opset, 20)
    w = OnnxWriter()
    w.taken = {v.name for v in graph.values() if v.name}
    names: dict[int, str] = {}
    for v in graph.inputs:
        names[id(v)] = v.name
    used: set[str] = set(names.values())
    for op in graph.ops:
        out = op.result.name if op.result.name and op.result.name not in used else w.fresh(op.kind)
        used.add(out)
        names[id(op.result)] = out
        _op(w, op, [names[id(v)] for v in op.inputs], out, opset)
    inputs = [
        helper.make_tensor_value_info(v.name, TensorProto.FLOAT, ["batch", *v.shape])
        for v in graph.inputs
    ]
    outs = [
        helper.make_tensor_value_info(names[id(v)], TensorProto.FLOAT, ["batch", *v.shape])
        for v in graph.outputs
    ]
    g = helper.make_graph(w.nodes, graph.name, inputs, outs, initializer=w.inits)
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
