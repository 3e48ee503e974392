"""Resize/Upsample, ConvTranspose, Einsum, Sum/Mean, Cast, AveragePool (ceil_mode, dilations)
and batched MatMul: the tensor interpreter and the slot-packed simulated program vs onnxruntime,
and the refusals of what would mix samples or is not linear."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hec
from hec.errors import UnsupportedOpError
from hec.frontend import import_onnx
from hec.frontend.export import export_onnx
from hec.frontend.importer import build_graph
from hec.ir import Graph, interpret

from conftest import assert_matches_reference
from onnx_builders import IR_VERSION, run_onnxruntime

RNG = np.random.default_rng(7)
CASES: dict[str, tuple[onnx.ModelProto, np.ndarray]] = {}


def _model(nodes, consts: dict, shape: tuple[int, ...], opset: int) -> onnx.ModelProto:
    """A model of ``nodes`` from ``input`` [N, *shape] to ``y``; the output's dims are left
    symbolic, so where ONNX's shape inference and onnxruntime differ (ceil_mode windows)
    onnxruntime, which the tests compare with, decides."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "linear_ops", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION if opset > 9 else 4
    inferred = onnx.shape_inference.infer_shapes(model).graph.output[0].type.tensor_type
    dims = [f"d{i}" for i in range(len(inferred.shape.dim) or len(shape) + 1)]
    out = helper.make_tensor_value_info("y", inferred.elem_type or TensorProto.FLOAT, dims)
    model.graph.output[0].CopyFrom(out)
    onnx.checker.check_model(model)
    return model


def import_any_opset(model: onnx.ModelProto) -> Graph:
    """The converters on a model of any opset (the loader accepts opsets 13 and up)."""
    if model.opset_import[0].version >= 13:
        return import_onnx(model)
    return build_graph(onnx.shape_inference.infer_shapes(model))


def reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime one sample at a time: sizes given as constants fix the batch at 1."""
    return np.concatenate([run_onnxruntime(model, x[i : i + 1]) for i in range(len(x))])


def case(name: str, nodes, consts: dict, shape: tuple[int, ...], opset: int = 19) -> None:
    x = RNG.uniform(-1, 1, size=(3, *shape)).astype(np.float32)
    CASES[name] = (_model(nodes, consts, shape, opset), x)


def node(op: str, inputs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, ["y"], **attrs)


def f32(*values) -> np.ndarray:
    return np.array(values, np.float32)


def w(*shape: int) -> np.ndarray:
    return RNG.normal(0, 0.5, size=shape).astype(np.float32)


# -- Resize / Upsample --------------------------------------------------------------------
for coord in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
    for nm in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        case(
            f"resize_nearest_{coord}_{nm}",
            [
                node(
                    "Resize",
                    ["input", "", "s"],
                    coordinate_transformation_mode=coord,
                    nearest_mode=nm,
                )
            ],
            {"s": f32(1, 1, 2, 1.5)},
            (2, 3, 4),
        )
case(
    "resize_nearest_half_pixel_symmetric_down",
    [node("Resize", ["input", "", "s"], coordinate_transformation_mode="half_pixel_symmetric")],
    {"s": f32(1, 1, 0.6, 0.5)},
    (1, 5, 6),
)
case(
    "resize_nearest_tf_half_pixel_opset11",
    [node("Resize", ["input", "r", "s"], coordinate_transformation_mode="tf_half_pixel_for_nn")],
    {"r": f32(), "s": f32(1, 1, 2, 3)},
    (2, 3, 2),
    opset=11,
)
for coord in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
    case(
        f"resize_linear_{coord}_up",
        [node("Resize", ["input", "", "s"], mode="linear", coordinate_transformation_mode=coord)],
        {"s": f32(1, 1, 2, 2.5)},
        (2, 3, 4),
    )
    case(
        f"resize_linear_{coord}_sizes_down_opset13",
        [
            node(
                "Resize",
                ["input", "", "", "z"],
                mode="linear",
                coordinate_transformation_mode=coord,
            )
        ],
        {"z": np.array([1, 2, 4, 3], np.int64)},
        (2, 7, 5),
        opset=13,
    )
case(
    "resize_linear_axes_not_larger_opset18",
    [
        node(
            "Resize",
            ["input", "", "", "z"],
            mode="linear",
            axes=[2, 3],
            keep_aspect_ratio_policy="not_larger",
        )
    ],
    {"z": np.array([7, 9], np.int64)},
    (1, 4, 5),
    opset=18,
)
case(
    "resize_cubic_exclude_outside",
    [node("Resize", ["input", "", "s"], mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5)],
    {"s": f32(1, 1, 1.5, 2)},
    (1, 4, 4),
)
case(
    "resize_crop_linear_inside",
    [
        node(
            "Resize",
            ["input", "r", "s"],
            mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize",
        )
    ],
    {"r": f32(0, 0, 0.2, 0.1, 1, 1, 0.8, 0.7), "s": f32(1, 1, 1.5, 2)},
    (2, 4, 5),
)
case(
    "resize_crop_nearest_outside_axes_opset18",
    [
        node(
            "Resize",
            ["input", "r", "", "z"],
            coordinate_transformation_mode="tf_crop_and_resize",
            axes=[3, 2],
            nearest_mode="floor",
        )
    ],
    {"r": f32(-0.3, 0.4, 1.2, 0.6), "z": np.array([6, 3], np.int64)},
    (1, 4, 5),
    opset=18,
)
case(
    "resize_linear_antialias_down",
    [node("Resize", ["input", "", "s"], mode="linear", antialias=1)],
    {"s": f32(1, 1, 0.5, 0.4)},
    (2, 8, 10),
)
case(
    "resize_cubic_antialias_exclude_outside",
    [node("Resize", ["input", "", "", "z"], mode="cubic", antialias=1, exclude_outside=1)],
    {"z": np.array([1, 1, 3, 5], np.int64)},
    (1, 7, 6),
)
case(
    "resize_linear_antialias_up_align_corners",
    [
        node(
            "Resize",
            ["input", "", "s"],
            mode="linear",
            antialias=1,
            coordinate_transformation_mode="align_corners",
        )
    ],
    {"s": f32(1, 1, 2, 1.5)},
    (1, 3, 4),
)
case(
    "resize_opset10_nearest",
    [node("Resize", ["input", "s"])],
    {"s": f32(1, 1, 2, 0.5)},
    (1, 3, 6),
    10,
)
case(
    "resize_opset10_linear",
    [node("Resize", ["input", "s"], mode="linear")],
    {"s": f32(1, 1, 2, 3)},
    (1, 3, 3),
    opset=10,
)
case(
    "upsample_opset9_nearest",
    [node("Upsample", ["input", "s"])],
    {"s": f32(1, 1, 2, 3)},
    (2, 2, 3),
    9,
)
case(
    "upsample_opset9_linear",
    [node("Upsample", ["input", "s"], mode="linear")],
    {"s": f32(1, 1, 2, 2)},
    (1, 3, 3),
    opset=9,
)
case(
    "upsample_opset7_attr",
    [node("Upsample", ["input"], scales=[1.0, 1.0, 2.0, 2.0])],
    {},
    (1, 2, 3),
    7,
)

# -- ConvTranspose -------------------------------------------------------------------------
for opset in (13, 18):
    case(
        f"convt_basic_{opset}",
        [node("ConvTranspose", ["input", "w", "b"])],
        {"w": w(2, 3, 3, 3), "b": w(3)},
        (2, 4, 4),
        opset,
    )
case(
    "convt_strides_pads_output_padding",
    [
        node(
            "ConvTranspose",
            ["input", "w"],
            strides=[2, 3],
            pads=[1, 0, 0, 2],
            output_padding=[1, 2],
        )
    ],
    {"w": w(2, 2, 3, 4)},
    (2, 4, 3),
)
case(
    "convt_dilated",
    [node("ConvTranspose", ["input", "w"], dilations=[2, 1], strides=[1, 2])],
    {"w": w(1, 2, 2, 3)},
    (1, 3, 4),
)
case(
    "convt_group2",
    [node("ConvTranspose", ["input", "w", "b"], group=2, strides=[2, 2])],
    {"w": w(4, 3, 2, 2), "b": w(6)},
    (4, 3, 3),
)
case(
    "convt_depthwise",
    [node("ConvTranspose", ["input", "w"], group=3, pads=[1, 1, 1, 1])],
    {"w": w(3, 1, 3, 3)},
    (3, 4, 4),
)
case(
    "convt_output_shape",
    [node("ConvTranspose", ["input", "w"], strides=[2, 2], output_shape=[8, 7])],
    {"w": w(1, 2, 3, 3)},
    (1, 4, 3),
)
case(
    "convt_same_upper",
    [node("ConvTranspose", ["input", "w"], strides=[2, 2], auto_pad="SAME_UPPER")],
    {"w": w(1, 1, 4, 3)},
    (1, 3, 3),
)
case(
    "convt_1d",
    [node("ConvTranspose", ["input", "w"], strides=[3], output_padding=[2])],
    {"w": w(2, 2, 3)},
    (2, 5),
)

case(
    "convt_same_lower",
    [
        node(
            "ConvTranspose",
            ["input", "w"],
            strides=[3, 2],
            auto_pad="SAME_LOWER",
        )
    ],
    {"w": w(2, 1, 4, 3)},
    (2, 3, 3),
)
case(
    "convt_output_shape_same_upper",
    [
        node(
            "ConvTranspose",
            ["input", "w"],
            strides=[2, 2],
            output_shape=[6, 5],
            auto_pad="SAME_UPPER",
        )
    ],
    {"w": w(1, 2, 3, 3)},
    (1, 3, 3),
)

case(
    "convt_output_shape_one_longer",
    [node("ConvTranspose", ["input", "w", "b"], strides=[3, 2], output_shape=[10, 8])],
    {"w": w(1, 2, 3, 3), "b": w(2)},
    (1, 3, 3),
)

# -- Einsum -----------------------------------------------------------------------------------
for opset in (13, 18):
    case(
        f"einsum_contract_permute_{opset}",
        [node("Einsum", ["input", "k"], equation="bchw,wk->bkch")],
        {"k": w(4, 3)},
        (2, 3, 4),
        opset,
    )
case(
    "einsum_constant_first",
    [node("Einsum", ["k", "input"], equation="ij,bjk->bik")],
    {"k": w(4, 2)},
    (2, 3),
)
case(
    "einsum_ellipsis",
    [node("Einsum", ["input", "k"], equation="...ij,jk->...ik")],
    {"k": w(3, 5)},
    (2, 4, 3),
)
case(
    "einsum_implicit_output",
    [node("Einsum", ["input", "k"], equation="...ij,jk")],
    {"k": w(3, 5)},
    (4, 3),
)
case(
    "einsum_broadcast_ellipsis",
    [node("Einsum", ["input", "k"], equation="...ij,...jk->...ik")],
    {"k": w(1, 1, 3, 2)},
    (2, 4, 3),
)
case(
    "einsum_single_operand_transpose", [node("Einsum", ["input"], equation="bij->bji")], {}, (3, 4)
)
case(
    "einsum_elementwise_weight",
    [node("Einsum", ["input", "k"], equation="bij,ij->bij")],
    {"k": w(3, 4)},
    (3, 4),
)

case("einsum_diagonal", [node("Einsum", ["input", "k"], equation="bii,i->bi")], {"k": w(3)}, (3, 3))
case("einsum_sum_axis", [node("Einsum", ["input"], equation="bij->bi")], {}, (3, 4))

case(
    "einsum_three_operands",
    [node("Einsum", ["k", "input", "m"], equation="ij,bjk,kl->bil")],
    {"k": w(3, 2), "m": w(4, 5)},
    (2, 4),
)
case(
    "einsum_three_operands_implicit_shared_label",
    [node("Einsum", ["input", "k", "m"], equation="bij,jk,jm")],
    {"k": w(4, 3), "m": w(4, 2)},
    (3, 4),
)

# -- MatMul with a batched constant weight ----------------------------------------------------
case("matmul_weight_3d", [node("MatMul", ["input", "k"])], {"k": w(2, 4, 3)}, (2, 5, 4))
case("matmul_weight_3d_lead1", [node("MatMul", ["input", "k"])], {"k": w(1, 4, 3)}, (2, 5, 4))
case("matmul_weight_4d_on_2d", [node("MatMul", ["input", "k"])], {"k": w(1, 1, 4, 3)}, (1, 5, 4))
case(
    "matmul_weight_3d_on_2d", [node("MatMul", ["input", "k"])], {"k": w(1, 4, 3)}, (5, 4), opset=13
)
case("matmul_input_broadcasts", [node("MatMul", ["input", "k"])], {"k": w(3, 4, 2)}, (1, 5, 4))

case("matmul_weight_1d", [node("MatMul", ["input", "k"])], {"k": w(4)}, (2, 4))

# -- Sum / Mean ---------------------------------------------------------------------------
square = helper.make_node("Mul", ["input", "input"], ["sq"])
for opset in (13, 18):
    case(
        f"sum_encrypted_and_constants_{opset}",
        [square, node("Sum", ["input", "c", "sq", "d"])],
        {"c": w(3, 1), "d": w(4)},
        (2, 3, 4),
        opset,
    )
    case(
        f"mean_repeated_operand_{opset}",
        [square, node("Mean", ["input", "sq", "input"])],
        {},
        (2, 3),
        opset,
    )
case("mean_one_encrypted_constant", [node("Mean", ["input", "c"])], {"c": w(1, 3)}, (2, 3))
case("sum_single", [node("Sum", ["input"])], {}, (4,))

# -- Cast ---------------------------------------------------------------------------------
cast = helper.make_node("Cast", ["input"], ["d"], to=TensorProto.DOUBLE)
case("cast_double_and_back", [cast, node("Cast", ["d"], to=TensorProto.FLOAT)], {}, (2, 3))
case("castlike_float", [node("CastLike", ["input", "c"])], {"c": f32(0)}, (5,), opset=15)


# -- AveragePool with ceil_mode / dilations -----------------------------------------------
# count_include_pad=1 with windows reaching past the end padding is tested on 1-D pooling:
# onnxruntime's 2-D/3-D kernels bound such windows by another axis's pad (see docs/linear_ops.md).
def pool(name: str, shape: tuple[int, ...], opset: int = 19, **attrs) -> None:
    case(name, [node("AveragePool", ["input"], **attrs)], {}, shape, opset)


pool("avgpool_ceil_2d_opset13", (2, 6, 5), 13, kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1)
pool(
    "avgpool_ceil_2d_pads",
    (2, 7, 5),
    kernel_shape=[3, 2],
    strides=[2, 2],
    ceil_mode=1,
    pads=[1, 0, 0, 1],
)
pool(
    "avgpool_dilated_ceil_2d",
    (1, 7, 6),
    kernel_shape=[2, 2],
    strides=[2, 1],
    dilations=[2, 2],
    ceil_mode=1,
    pads=[1, 1, 0, 0],
)
pool(
    "avgpool_dilated_include_pad_1d",
    (2, 9),
    kernel_shape=[2],
    strides=[2],
    dilations=[2],
    count_include_pad=1,
    pads=[1, 0],
)
pool(
    "avgpool_dilated_include_pad_2d",
    (1, 6, 6),
    kernel_shape=[2, 3],
    dilations=[2, 2],
    count_include_pad=1,
    pads=[1, 1, 1, 1],
)
pool("avgpool_dilated", (2, 9), kernel_shape=[3], dilations=[2])


@pytest.mark.parametrize("name", sorted(CASES))
def test_interpreter_matches_onnxruntime(name: str) -> None:
    model, x = CASES[name]
    assert_matches_reference(interpret(import_any_opset(model), x)[0], reference(model, x))


@pytest.mark.parametrize(
    "name", sorted(n for n, (m, _) in CASES.items() if m.opset_import[0].version >= 13)
)
def test_simulated_program_matches_onnxruntime(name: str, tmp_path) -> None:
    model, x = CASES[name]
    artifact = hec.compile(model, tmp_path / "out", hec.CompileOptions(packing="slots"))
    assert_matches_reference(hec.simulate(artifact, x), reference(model, x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_exported_onnx_matches_onnxruntime(name: str) -> None:
    """The tensor graph written back to ONNX (what ``hec optimize`` saves) computes the same."""
    model, x = CASES[name]
    graph = import_any_opset(model)
    if not graph.ops:  # Cast, Sum of one: the input itself (onnxruntime may alias its buffer)
        assert graph.outputs[0] is graph.inputs[0]
        return
    assert_matches_reference(reference(export_onnx(graph), x), reference(model, x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_form_matches_interpreter(name: str) -> None:
    """Fine-tuning's torch module computes what the tensor graph does (float32 parameters)."""
    torch = pytest.importorskip("torch")
    from hec.train.torch_graph import TorchGraph

    model, x = CASES[name]
    graph = import_any_opset(model)
    with torch.no_grad():
        out = TorchGraph(graph)(torch.from_numpy(x)).numpy()
    assert_matches_reference(out, interpret(graph, x)[0], rel=1e-5)


@pytest.mark.parametrize(
    "name",
    [
        "resize_linear_half_pixel_up",
        "convt_group2",
        "einsum_ellipsis",
        "matmul_weight_3d",
        "sum_encrypted_and_constants_18",
        "avgpool_dilated_ceil_2d",
    ],
)
def test_batch_packed_program_matches_onnxruntime(name: str, tmp_path) -> None:
    model, x = CASES[name]
    options = hec.CompileOptions(packing="batch", batch_size=len(x))
    artifact = hec.compile(model, tmp_path / "out", options)
    assert_matches_reference(hec.simulate(artifact, x), reference(model, x))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("resize_linear_half_pixel_up", "axis_maps"),
        ("avgpool_dilated", "axis_maps"),
        ("convt_group2", "conv_transpose"),
        ("matmul_weight_3d", "einsum"),
        ("sum_encrypted_and_constants_13", "add"),
    ],
)
def test_op_becomes_kind(name: str, kind: str) -> None:
    assert kind in [op.kind for op in import_onnx(CASES[name][0]).ops]


def test_cast_to_float16_is_identity_within_half_precision() -> None:
    """The encrypted values are not rounded to float16: they differ from onnxruntime's by at
    most float16's rounding (2^-11 relative)."""
    back = node("Cast", ["h"], to=TensorProto.FLOAT)
    model = _model(
        [helper.make_node("Cast", ["input"], ["h"], to=TensorProto.FLOAT16), back], {}, (8,), 19
    )
    x = RNG.uniform(-1, 1, size=(3, 8)).astype(np.float32)
    out, ref = interpret(import_onnx(model), x)[0], reference(model, x)
    np.testing.assert_array_equal(out, x)
    assert 0 < np.abs(out - ref).max() <= 2.0**-11


def test_ceil_mode_pooling_keeps_its_last_window() -> None:
    """ceil_mode adds a last, partial window here (size 3, not 2)."""
    model, _ = CASES["avgpool_ceil_2d_opset13"]
    assert import_onnx(model).outputs[0].shape == (2, 3, 3)


REFUSED = {
    "cast_to_int": ([node("Cast", ["input"], to=TensorProto.INT64)], {}, (3,), "INT64"),
    "cast_to_bool": ([node("Cast", ["input"], to=TensorProto.BOOL)], {}, (3,), "BOOL"),
    "cast_to_float8": (
        [node("Cast", ["input"], to=TensorProto.FLOAT8E5M2)],
        {},
        (3,),
        "FLOAT8E5M2",
    ),
    "castlike_float8": (
        [node("CastLike", ["input", "c"])],
        {"c": np.zeros(1, dtype=ml_dtypes.float8_e5m2)},
        (3,),
        "float8",
    ),
    "einsum_contracts_batch": (
        [node("Einsum", ["input", "k"], equation="bi,ij->j")],
        {"k": w(3, 2)},
        (3,),
        "batch",
    ),
    "einsum_moves_batch": ([node("Einsum", ["input"], equation="bij->jib")], {}, (2, 3), "batch"),
    "einsum_two_encrypted": (
        [node("Einsum", ["input", "input"], equation="bi,bi->bi")],
        {},
        (3,),
        "encrypted",
    ),
    "matmul_weight_mixes_batch": (
        [node("MatMul", ["input", "k"])],
        {"k": w(2, 4, 3)},
        (5, 4),
        "batch axis",
    ),
    "resize_align_corners_fractional_scales": (
        [
            node(
                "Resize",
                ["input", "", "s"],
                mode="linear",
                coordinate_transformation_mode="align_corners",
            )
        ],
        {"s": f32(1, 1, 0.6, 0.6)},
        (1, 2, 4),
        "sizes instead of scales",
    ),
    "convt_output_shape_two_longer": (
        [node("ConvTranspose", ["input", "k"], strides=[3, 2], output_shape=[11, 9])],
        {"k": w(1, 1, 3, 3)},
        (1, 3, 3),
        "larger than the full output",
    ),
    "resize_batch_axis": (
        [node("Resize", ["input", "", "s"])],
        {"s": f32(2, 1, 1, 1)},
        (1, 2, 2),
        "batch",
    ),
    "resize_crop_outside_nonzero_extrapolation": (
        [
            node(
                "Resize",
                ["input", "r", "s"],
                coordinate_transformation_mode="tf_crop_and_resize",
                extrapolation_value=1.0,
            )
        ],
        {"r": f32(0, 0, -0.2, 0, 1, 1, 1, 1), "s": f32(1, 1, 2, 2)},
        (1, 2, 2),
        "extrapolation_value",
    ),
    "avgpool_ceil_include_pad_past_end": (
        [
            node(
                "AveragePool",
                ["input"],
                kernel_shape=[3],
                strides=[2],
                ceil_mode=1,
                count_include_pad=1,
                pads=[1, 1],
            )
        ],
        {},
        (2, 8),
        "count_include_pad=1",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_with_one_line_reason(name: str) -> None:
    nodes, consts, shape, words = REFUSED[name]
    model = _model(nodes, consts, shape, 19)
    with pytest.raises(UnsupportedOpError) as err:
        build_graph(onnx.shape_inference.infer_shapes(model))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_sum_of_encrypted_operands_of_different_shapes_is_refused() -> None:
    model = _model(
        [helper.make_node("ReduceSum", ["input", "a"], ["r"]), node("Sum", ["input", "r"])],
        {"a": np.array([1], np.int64)},
        (2, 3),
        19,
    )
    with pytest.raises(UnsupportedOpError, match="different shapes"):
        import_onnx(model)


@pytest.mark.slow
def test_encrypted_resize_and_transposed_conv(tmp_path) -> None:
    """Upsample, then a strided transposed convolution, under real encryption."""
    model = _model(
        [
            helper.make_node("Resize", ["input", "", "s"], ["r"], mode="linear"),
            node("ConvTranspose", ["r", "k"], strides=[2, 2], pads=[1, 1, 1, 1]),
        ],
        {"s": f32(1, 1, 2, 2), "k": w(1, 2, 3, 3)},
        (1, 3, 3),
        19,
    )
    x = RNG.uniform(-1, 1, size=(1, 1, 3, 3)).astype(np.float32)
    artifact = hec.compile(model, tmp_path / "out")
    result = hec.run(artifact, x)
    np.testing.assert_allclose(result.logits, run_onnxruntime(model, x), atol=1e-2)
