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


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
