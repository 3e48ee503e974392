"""Small ONNX models built with onnx.helper (random weights, fixed seeds) for tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9  # onnxruntime 1.23 accepts up to 11; 9 matches opsets 13-21 everywhere


class ModelBuilder:
    """Build a single-input model node by node; weights become initializers."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0, opset: int = 17) -> None:
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.input = helper.make_tensor_value_info(
            "input", TensorProto.FLOAT, ["batch", *input_shape]
        )
        self._n = 0

    def const(self, array: np.ndarray, dtype=np.float32) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def weight(self, *shape: int, scale: float = 0.5) -> str:
        return self.const(self.rng.normal(0, scale, size=shape))

    def node(self, op_type: str, inputs: list[str], **attrs) -> str:
        self._n += 1
        out = f"t{self._n}"
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self._n}", **attrs)
        )
        return out

    def build(self, output: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", [self.input], [], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = IR_VERSION
        # The output's type comes from shape inference, with the batch axis left symbolic.
        inferred = onnx.shape_inference.infer_shapes(model)
        info = next(v for v in inferred.graph.value_info if v.name == output)
        model.graph.output.append(info)
        onnx.checker.check_model(model)
        return model


def conv_pool_conv(
    c1: int = 3, c2: int = 4, k: int = 3, pool: int = 2, size: int = 12, act: str = "Mul"
):
    """conv 1→c1 (k×k, same) · act · avgpool · conv c1→c2 (k×k) · act · dense → 5."""
    b = ModelBuilder((1, size, size), seed=size + c1)
    t = b.node("Conv", ["input", b.weight(c1, 1, k, k), b.weight(c1)], pads=[k // 2] * 4)
    t = b.node("Mul", [t, t]) if act == "Mul" else b.node(act, [t])
    t = b.node("AveragePool", [t], kernel_shape=[pool, pool], strides=[pool, pool])
    t = b.node("Conv", [t, b.weight(c2, c1, k, k, scale=0.3), b.weight(c2)])
    t = b.node("Mul", [t, t])
    t = b.node("Flatten", [t])
    side = size // pool - k + 1
    return b.build(b.node("Gemm", [t, b.weight(5, c2 * side * side, scale=0.1)], transB=1))


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def deep_square_mlp(layers: int = 11, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """A dense network on scikit-learn's 8×8 digits, ``layers`` × (Gemm · z + z²) then Gemm → 10:
    2 levels a layer, so 11 layers pass the 21 levels of a bootstrapping chain. Each layer's
    weights are scaled so its pre-activations on the digits stay within [-0.9, 0.9] (the
    activation neither vanishes nor explodes, its linear term carries the input through, and a
    bootstrap gets the range it refreshes best)."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    h = load_digits().data / 16.0
    b = ModelBuilder((64,), seed=seed)
    t, fan_in = "input", 64
    for _ in range(layers):
        W = rng.normal(0, 1, size=(width, fan_in))
        c = rng.normal(0, 0.2, size=width)
        z = h @ W.T + c
        s = 0.9 / np.abs(z).max()
        t = b.node("Gemm", [t, b.const(W * s), b.const(c * s)], transB=1)
        t = b.node("Add", [t, b.node("Mul", [t, t])])
        h, fan_in = z * s + (z * s) ** 2, width
    return b.build(b.node("Gemm", [t, b.weight(10, fan_in)], transB=1))
