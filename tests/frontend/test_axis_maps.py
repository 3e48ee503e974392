"""The 1-D resize and pooling matrices against onnxruntime on a grid of configurations.

Each case runs onnxruntime on the basis vectors of one axis (the batch axis carries them, so
the op sees an identity there), which reads off the matrix onnxruntime applies.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hec.frontend.axis_maps import pool_matrix, resize_matrix

from onnx_builders import IR_VERSION


def _ort_matrix(n: int, node: onnx.NodeProto, inits: list, opset: int) -> np.ndarray:
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 1, 1, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "axis", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ONNX's and onnxruntime's ceil_mode shapes differ: quiet
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    eye = np.eye(n, dtype=np.float32).reshape(n, 1, 1, n)
    return sess.run(None, {"x": eye})[0][:, 0, 0, :].T


RESIZE = [
    (n, scale, mode, coord, nearest, antialias)
    for n, scale in itertools.product((4, 7), (0.4, 0.75, 1.5, 2.5))
    for mode, coord, nearest, antialias in [
        *(
            ("nearest", c, m, 0)
            for c in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
            for m in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
        ),
        *(
            (mode, c, "", antialias)
            for mode in ("linear", "cubic")
            for antialias in (0, 1)
            for c in ("half_pixel", "half_pixel_symmetric", "align_corners", "asymmetric")
        ),
    ]
]


@pytest.mark.parametrize(("n", "scale", "mode", "coord", "nearest", "antialias"), RESIZE)
def test_resize_matrix_matches_onnxruntime(n, scale, mode, coord, nearest, antialias) -> None:
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "antialias": antialias}
    if nearest:
        attrs["nearest_mode"] = nearest
    scales = numpy_helper.from_array(np.array([1, 1, 1, scale], np.float32), "s")
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], **attrs)
    ref = _ort_matrix(n, node, [scales], 19)
    out = int(np.floor(np.float32(n) * np.float32(scale)))
    ours = resize_matrix(
        n, out, float(np.float32(scale)), mode, coord, nearest or "round_prefer_floor",
        antialias=bool(antialias),
    )  # fmt: skip
    np.testing.assert_allclose(ours, ref, atol=2e-6)


POOL = [
    c
    for c in itertools.product((5, 8), (2, 3), (1, 2, 3), (0, 1), (0, 2), (1, 2), (0, 1), (0, 1))
    if c[3] < c[1] and c[4] < c[1] and c[5] * (c[1] - 1) + 1 <= c[0] + c[3] + c[4]
]


@pytest.mark.parametrize(("n", "k", "s", "pb", "pe", "d", "ceil", "include"), POOL)
def test_pool_matrix_matches_onnxruntime(n, k, s, pb, pe, d, ceil, include) -> None:
    """Along the last axis of a 2-D pool with a 1-wide first axis (where onnxruntime's
    AveragePool-19 and ONNX agree on the divisor)."""
    attrs = {"kernel_shape": [1, k], "strides": [1, s], "pads": [0, pb, 0, pe]}
    attrs.update(ceil_mode=ceil, count_include_pad=include, dilations=[1, d])
    ref = _ort_matrix(n, helper.make_node("AveragePool", ["x"], ["y"], **attrs), [], 19)
    np.testing.assert_allclose(
        pool_matrix(n, k, s, (pb, pe), d, bool(ceil), bool(include)), ref, atol=1e-6
    )


CROP = list(
    itertools.product(
        (4, 7), ((0.2, 0.7), (-0.3, 1.2), (0.6, 0.3)), (0.5, 2.0), ("nearest", "linear", "cubic")
    )
)


@pytest.mark.parametrize(("n", "roi", "scale", "mode"), CROP)
def test_crop_and_resize_matrix_matches_onnxruntime(n, roi, scale, mode) -> None:
    """tf_crop_and_resize with extrapolation_value 0: samples outside the input are zero rows."""
    inits = [
        numpy_helper.from_array(np.array([0, 0, 0, roi[0], 1, 1, 1, roi[1]], np.float32), "r"),
        numpy_helper.from_array(np.array([1, 1, 1, scale], np.float32), "s"),
    ]
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize"}
    node = helper.make_node("Resize", ["x", "r", "s"], ["y"], extrapolation_value=0.0, **attrs)
    ref = _ort_matrix(n, node, inits, 19)
    out = int(np.floor(np.float32(n) * np.float32(scale)))
    ours = resize_matrix(n, out, scale, mode, "tf_crop_and_resize", roi=roi)
    np.testing.assert_allclose(ours, ref, atol=2e-6)
