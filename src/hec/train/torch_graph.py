"""A tensor graph as a torch module whose parameters are the graph's constants.

Every constant (weights, biases, scales, polynomial coefficients) becomes a trainable
parameter, so fine-tuning adapts the network to its polynomial activations (MOFHEI's
learning-based replacement). ``write_back`` copies the trained values into the graph; the
graph's structure never changes. The forward pass mirrors ``hec.ir.tensor_ops`` op by op.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from hec.ir import Graph, Op
from hec.train import require_torch
from hec.train.torch_linear import TORCH_FORMS

__all__ = ["TorchGraph"]

if TYPE_CHECKING:  # the real module's types; at run time, torch or a clear error
    import torch
else:
    torch = require_torch()
F = torch.nn.functional


def _pad_spatial(x, pads, value: float = 0.0):
    nd = len(pads) // 2
    widths = []
    for i in reversed(range(nd)):  # F.pad takes the last axis first
        widths += [pads[i], pads[i + nd]]
    return F.pad(x, widths, value=value)


def _windows_sum(x, kernel, strides):
    """Sum over pooling windows of an already padded input (any number of spatial axes)."""
    nd = len(kernel)
    out_sp = [(x.shape[2 + i] - kernel[i]) // strides[i] + 1 for i in range(nd)]
    total = 0
    for kpos in itertools.product(*(range(k) for k in kernel)):
        sl = tuple(
            slice(kpos[i], kpos[i] + strides[i] * (out_sp[i] - 1) + 1, strides[i])
            for i in range(nd)
        )
        total = total + x[(slice(None), slice(None), *sl)]
    return total


class TorchGraph(torch.nn.Module):
    """``TorchGraph(graph)(x)`` computes what ``hec.ir.interpret(graph, x)`` does."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        if graph.dialect != "tensor":
            raise ValueError("only tensor graphs convert to torch")
        self.graph = graph
        self.params = torch.nn.ParameterDict()
        for i, op in enumerate(graph.ops):
            for name, arr in op.consts.items():
                self.params[f"op{i}_{name}"] = torch.nn.Parameter(
                    torch.tensor(np.asarray(arr, dtype=np.float32))
                )
            if op.kind == "poly":
                self.params[f"op{i}_coeffs"] = torch.nn.Parameter(
                    torch.tensor(np.asarray(op.attrs["coeffs"], dtype=np.float32))
                )

    def forward(self, x):
        # how far each polynomial's input left its interval [-1, 1] (mean squared excess),
        # for a range penalty while training: a polynomial grows fast outside its interval
        self.outside: list = []
        env = {id(self.graph.inputs[0]): x}
        for i, op in enumerate(self.graph.ops):
            env[id(op.result)] = self._op(i, op, [env[id(v)] for v in op.inputs])
        return env[id(self.graph.outputs[0])]

    def _p(self, i: int, name: str):
        return self.params[f"op{i}_{name}"]

    def _op(self, i: int, op: Op, args: list):
        a, x, k = op.attrs, args[0], op.kind
        if k == "conv":
            conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.dim() - 2]
            bias = self._p(i, "bias") if "bias" in op.consts else None
            return conv(
                _pad_spatial(x, a["pads"]),
                self._p(i, "weight"),
                bias,
                stride=a["strides"],
                dilation=a["dilations"],
            )
        if k == "matmul":
            y = x @ self._p(i, "weight")
            return y + self._p(i, "bias") if "bias" in op.consts else y
        if k == "avgpool":
            total = _windows_sum(_pad_spatial(x, a["pads"]), a["kernel"], a["strides"])
            if a["count_include_pad"]:
                return total / float(np.prod(a["kernel"]))
            ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
            return total / _windows_sum(_pad_spatial(ones, a["pads"]), a["kernel"], a["strides"])
        if k == "pad":
            n = x.dim() - 1
            widths = []
            for j in reversed(range(n)):
                widths += [a["pads"][j], a["pads"][j + n]]
            mode = {
                "constant": "constant",
                "reflect": "reflect",
                "edge": "replicate",
                "wrap": "circular",
            }[a["mode"]]
            return (
                F.pad(x, widths, mode=mode, value=a["value"])
                if mode == "constant"
                else F.pad(x, widths, mode=mode)
            )
        if k == "reshape":
            return x.reshape(x.shape[0], *a["shape"])
        if k == "transpose":
            return x.permute(0, *(p + 1 for p in a["perm"]))
        if k == "scale_shift":
            return x * self._p(i, "scale") + self._p(i, "shift")
        if k == "reduce":
            dims = tuple(d + 1 for d in a["axes"])
            fn = torch.mean if a["mode"] == "mean" else torch.sum
            return fn(x, dim=dims, keepdim=bool(a["keepdims"]))
        if k == "add":
            return x + args[1]
        if k == "mul":
            return x * args[1]
        if k == "poly":  # Clenshaw, as the exported ONNX computes it
            self.outside.append(F.relu(x.abs() - 1).pow(2).mean())
            c = self._p(i, "coeffs")
            b1 = torch.zeros_like(x)
            b2 = torch.zeros_like(x)
            for j in range(c.shape[0] - 1, 0, -1):
                b1, b2 = 2 * x * b1 - b2 + c[j], b1
            return x * b1 - b2 + c[0]
        if k == "select":  # data movement: fixed indices (the graph's, not a trained copy)
            flat = F.pad(x.reshape(x.shape[0], -1), (0, 1))  # index -1 reads the appended 0
            at = op.consts["index"].reshape(-1).astype(np.int64)
            index = torch.as_tensor(np.where(at < 0, flat.shape[1] - 1, at))
            return flat[:, index].reshape(x.shape[0], *a["shape"])
        if k in TORCH_FORMS:  # the kinds of ir/linear_ops.py
            return TORCH_FORMS[k](lambda name: self._p(i, name), op, x)
        raise ValueError(f"op {k!r} has no torch form; run replace-activations first")

    def write_back(self) -> None:
        """Copy the (trained) parameters into the graph's constants and coefficients."""
        for i, op in enumerate(self.graph.ops):
            for name, arr in op.consts.items():
                value = self._p(i, name).detach().numpy().astype(np.float64)
                op.consts[name] = value.reshape(np.shape(arr))
            if op.kind == "poly":
                op.attrs["coeffs"] = tuple(float(c) for c in self._p(i, "coeffs").detach())
