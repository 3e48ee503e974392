"""Which of ONNX's node test cases the conformance tier runs.

ONNX ships one test case per op behaviour (``onnx.backend.test.case.node``): a model, its inputs
and the expected outputs, computed by ONNX's own numpy reference. The tier runs every case whose op
type hec has a converter for (picked up as converters land) or a CNN/MLP user meets
(``CNN_MLP_OPS``, recorded here). A case named ``..._expanded`` is the same behaviour written as
a function body of primitive ops (what older exporters write); it counts under its op type.
"""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np
from onnx.backend.test.case.node import collect_testcases
from onnx.backend.test.case.test_case import TestCase

__all__ = [
    "CNN_MLP_OPS",
    "FAMILIES",
    "LARGE",
    "accepted_op_types",
    "case_op_type",
    "is_large",
    "selected_cases",
]

# Op types a user brings in CNN and MLP models (exported from PyTorch, Keras, scikit-learn
# networks), grouped by family; the encrypted tier runs one case per family.
FAMILIES: dict[str, tuple[str, ...]] = {
    "conv": ("Conv", "ConvTranspose"),
    "dense": ("Gemm", "MatMul", "Einsum"),
    "arithmetic": (
        *("Add", "Sub", "Mul", "Div", "Neg", "Pow", "Sum", "Mean", "Abs"),
        *("Sqrt", "Reciprocal", "Max", "Min"),
    ),
    "normalization": (
        *("BatchNormalization", "InstanceNormalization", "LayerNormalization"),
        *("GroupNormalization", "LRN", "LpNormalization", "MeanVarianceNormalization"),
    ),
    "pooling": ("AveragePool", "GlobalAveragePool", "MaxPool", "GlobalMaxPool", "LpPool"),
    "activation": (
        *("Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"),
        *("Softplus", "Softsign", "Elu", "Selu", "Celu", "Gelu", "Erf", "Mish", "Swish"),
        *("Clip", "ThresholdedRelu", "Exp"),
    ),
    "head": ("Softmax", "LogSoftmax", "ArgMax"),
    "reduction": ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceSumSquare", "ReduceL2"),
    "shape": (
        *("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout"),
        *("Cast", "Shape", "Size"),
    ),
    "movement": (
        *("Concat", "Slice", "Split", "Gather", "Expand", "Tile", "Pad"),
        *("DepthToSpace", "SpaceToDepth", "Resize", "Upsample"),
    ),
}
CNN_MLP_OPS: frozenset[str] = frozenset(op for ops in FAMILIES.values() for op in ops)
# Cases with a tensor of more elements than this take tens of seconds to compile (3-D pooling on
# 32³ grids, a 40k-element tile); the pytest tier runs them with the slow (encrypted) tier.
LARGE = 16384


def family(op_type: str) -> str:
    """The family an op type is grouped in (``other`` for converters outside the list)."""
    return next((f for f, ops in FAMILIES.items() if op_type in ops), "other")


def accepted_op_types() -> frozenset[str]:
    """Op types hec has a converter for, as registered now (new converters count at once)."""
    from hec.frontend import importer  # noqa: F401 (registers every converter module)
    from hec.frontend.registry import CONVERTERS

    return frozenset(CONVERTERS)


@functools.cache
def _all_cases() -> dict[str, TestCase]:
    with warnings.catch_warnings():  # the case generators cast out-of-range values on purpose
        warnings.simplefilter("ignore")
        return {c.name: c for c in collect_testcases()}


def case_op_type(case: TestCase) -> str:
    """The op type a case tests: its node's, or for an expanded case its base case's node's
    (an expanded body may be one other node: Clip without bounds expands to Identity)."""
    if "_expanded" not in case.name:
        return case.model.graph.node[0].op_type
    base = _all_cases()[re.sub(r"_expanded.*$", "", case.name)]
    return base.model.graph.node[0].op_type


@functools.cache
def selected_cases() -> dict[str, TestCase]:
    """The cases the tier runs, by name (ONNX's order): op type accepted or in the CNN/MLP list."""
    wanted = CNN_MLP_OPS | accepted_op_types()
    return {n: c for n, c in _all_cases().items() if case_op_type(c) in wanted}


def is_large(case: TestCase) -> bool:
    """Whether one of the case's tensors has more than ``LARGE`` elements."""
    inputs, outputs = case.data_sets[0]
    sizes = [int(np.prod(getattr(t, "dims", np.shape(t)))) for t in (*inputs, *outputs)]
    return max(sizes, default=0) > LARGE
