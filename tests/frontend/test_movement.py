"""Data movement on encrypted tensors (Concat, Slice, Split, Gather, Expand, Tile, DepthToSpace,
SpaceToDepth, Where, batch-moving Transpose) and grouped convolutions: the tensor interpreter
and the simulated program agree with onnxruntime on the original model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import hec
from hec.errors import UnsupportedOpError
from hec.frontend import import_onnx
from hec.ir import interpret

from conftest import assert_matches_reference
from onnx_builders import IR_VERSION, ModelBuilder, run_onnxruntime


def _i64(b: ModelBuilder, *values) -> str:
    return b.const(np.array(values), np.int64)


def _x(shape: tuple[int, ...], batch: int = 2, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, *shape)).astype(np.float32)


def _head(b: ModelBuilder, h: str) -> str:
    """A Flatten + Gemm after the op under test, so it sits between linear maps."""
    return b.node("Gemm", [b.node("Flatten", [h]), _weight_for(b, h)], transB=1)


def _weight_for(b: ModelBuilder, h: str) -> str:
    graph = helper.make_graph(b.nodes, "probe", [b.input], [], initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    inferred = onnx.shape_inference.infer_shapes(model)
    info = next(v for v in inferred.graph.value_info if v.name == h)
    size = int(np.prod([d.dim_value for d in info.type.tensor_type.shape.dim[1:]]))
    return b.weight(3, size)


def _concat(opset: int):
    b = ModelBuilder((2, 3, 3), opset=opset)
    c = b.node("Conv", ["input", b.weight(2, 2, 1, 1)])
    h = b.node("Concat", ["input", c, b.weight(1, 1, 3, 3)], axis=-3)
    return b, h


def _slice(opset: int):
    b = ModelBuilder((3, 6, 5), opset=opset)
    h = b.node(
        "Slice",
        ["input", _i64(b, 5, -1, 0), _i64(b, 0, 0, 3), _i64(b, -1, 2, 1), _i64(b, -1, -2, 1)],
    )  # reversed rows, every second column from the right, channels 0..2 minus the last
    return b, h


def _slice_default_steps(opset: int):
    b = ModelBuilder((4, 6), opset=opset)
    return b, b.node("Slice", ["input", _i64(b, 1, 2), _i64(b, 3, 100), _i64(b, 1, 2)])


def _split(opset: int):
    b = ModelBuilder((4, 5), opset=opset)
    outs = ["s0", "s1"]
    if opset >= 18:
        node = helper.make_node("Split", ["input", _i64(b, 2, 3)], outs, axis=-1, name="split")
    else:
        node = helper.make_node("Split", ["input", _i64(b, 2, 3)], outs, axis=2, name="split")
    b.nodes.append(node)
    h = b.node("Mul", ["s0", b.node("Slice", ["s1", _i64(b, 0), _i64(b, 2), _i64(b, -1)])])
    return b, b.node("Add", [h, "s0"])


def _split_num_outputs(opset: int):
    b = ModelBuilder((6, 2), opset=opset)
    outs = ["a", "b", "c"]
    node = helper.make_node("Split", ["input"], outs, axis=1, name="split", num_outputs=3)
    b.nodes.append(node)
    return b, b.node("Concat", ["c", "a"], axis=2)


def _gather(opset: int):
    b = ModelBuilder((4, 5), opset=opset)
    h = b.node("Gather", ["input", _i64(b, 4, -1, 0, 2)], axis=-1)
    return b, b.node("Gather", [h, b.const(np.array([[3, 0], [1, 1]]), np.int64)], axis=1)


def _gather_elements(opset: int):
    b = ModelBuilder((3, 4), opset=opset)
    idx = np.random.default_rng(0).integers(-4, 4, (1, 3, 2))
    return b, b.node("GatherElements", ["input", b.const(idx, np.int64)], axis=2)


def _expand_tile(opset: int):
    b = ModelBuilder((2, 1, 3), opset=opset)
    h = b.node("Expand", ["input", _i64(b, 2, 4, 1)])
    return b, b.node("Tile", [h, _i64(b, 1, 1, 2, 2)])


def _depth_space(opset: int, mode: str = "DCR"):
    b = ModelBuilder((8, 2, 3), opset=opset)
    h = b.node("DepthToSpace", ["input"], blocksize=2, mode=mode)
    return b, b.node("SpaceToDepth", [b.node("Neg", [h])], blocksize=2)


def _where(opset: int):
    b = ModelBuilder((2, 3), opset=opset)
    cond = b.const(np.random.default_rng(1).random((1, 2, 3)) > 0.5, np.bool_)
    return b, b.node("Where", [cond, "input", b.weight(2, 3)])


def _transpose_batch(opset: int):
    """A fixed-batch model may move the batch axis: Transpose [1, 0, 2] of one sample."""
    b = ModelBuilder((3, 4), opset=opset)
    b.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4])
    h = b.node("Transpose", ["input"], perm=[1, 0, 2])
    h = b.node("Mul", [h, b.weight(3, 1, 4)])
    return b, b.node("Transpose", [h], perm=[1, 2, 0])


def _grouped_conv(opset: int, group: int = 2):
    b = ModelBuilder((4, 5, 5), opset=opset)
    h = b.node(
        "Conv", ["input", b.weight(8, 4 // group, 3, 3), b.weight(8)], group=group, pads=[1] * 4
    )
    return b, b.node("Mul", [h, h])


def _depthwise_conv(opset: int):
    b = ModelBuilder((3, 6, 6), opset=opset)
    h = b.node("Conv", ["input", b.weight(3, 1, 3, 3)], group=3, strides=[2, 2], pads=[1] * 4)
    return b, b.node("Conv", [h, b.weight(2, 3, 1, 1)])


CASES = {
    "concat": _concat,
    "slice_steps": _slice,
    "slice_default_steps": _slice_default_steps,
    "split": _split,
    "gather": _gather,
    "gather_elements": _gather_elements,
    "expand_tile": _expand_tile,
    "depth_space_dcr": _depth_space,
    "depth_space_crd": lambda opset: _depth_space(opset, "CRD"),
    "where": _where,
    "transpose_batch": _transpose_batch,
    "grouped_conv": _grouped_conv,
    "grouped_conv_4": lambda opset: _grouped_conv(opset, 4),
    "depthwise_conv": _depthwise_conv,
}
# models with a constant of batch 1 inside: valid for one sample only
BATCH_ONE = {"transpose_batch", "concat", "gather_elements"}


def _model(name: str, opset: int) -> tuple[onnx.ModelProto, np.ndarray]:
    b, h = CASES[name](opset)
    model = b.build(_head(b, h))
    shape = tuple(d.dim_value for d in b.input.type.tensor_type.shape.dim[1:])
    return model, _x(shape, batch=1 if name in BATCH_ONE else 2)


@pytest.mark.parametrize("opset", [13, 18, 21])
@pytest.mark.parametrize("name", sorted(CASES))
def test_interpreter_matches_onnxruntime(name: str, opset: int) -> None:
    model, x = _model(name, opset)
    assert_matches_reference(interpret(import_onnx(model), x)[0], run_onnxruntime(model, x))


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("name", sorted(CASES))
def test_simulated_program_matches_onnxruntime(name: str, opset: int, tmp_path) -> None:
    model, x = _model(name, opset)
    artifact = hec.compile(model, tmp_path / "out")
    assert_matches_reference(hec.simulate(artifact, x), run_onnxruntime(model, x))


def test_split_num_outputs_opset18() -> None:
    b, h = _split_num_outputs(18)
    model = b.build(_head(b, h))
    x = _x((6, 2))
    assert_matches_reference(interpret(import_onnx(model), x)[0], run_onnxruntime(model, x))


def test_concat_of_two_sources_is_two_selects_and_an_add() -> None:
    model, _ = _model("concat", 18)
    kinds = [op.kind for op in import_onnx(model).ops]
    assert kinds.count("select") == 2 and "add" in kinds and "scale_shift" in kinds


def test_grouped_conv_records_group_and_is_block_diagonal() -> None:
    model, _ = _model("grouped_conv", 17)
    conv = next(op for op in import_onnx(model).ops if op.kind == "conv")
    w = conv.consts["weight"]
    assert conv.attrs["group"] == 2 and w.shape == (8, 4, 3, 3)
    assert not w[:4, 2:].any() and not w[4:, :2].any() and w[:4, :2].all()


def test_gather_with_encrypted_indices_is_refused() -> None:
    b = ModelBuilder((4,))
    h = b.node("Gemm", ["input", b.weight(4, 4)])
    idx = b.node("Cast", [b.node("Gemm", ["input", b.weight(4, 2)])], to=TensorProto.INT64)
    with pytest.raises(UnsupportedOpError, match="Gather_4.*input 1 must be a constant"):
        import_onnx(b.build(b.node("Gather", [h, idx], axis=1)))


def test_movement_across_a_dynamic_batch_is_refused() -> None:
    b = ModelBuilder((4,))
    h = b.node("Gather", ["input", _i64(b, 0, 0)], axis=0)
    with pytest.raises(UnsupportedOpError, match="Gather_1.*batch axis.*fixed batch of 1"):
        import_onnx(b.build(h))


@pytest.mark.parametrize("name", ["concat", "slice_steps", "gather", "depth_space_crd", "where"])
def test_exported_select_runs_in_onnxruntime(name: str) -> None:
    """``hec optimize`` writes the IR back to ONNX: a select is Reshape, Pad and Gather."""
    from hec.frontend.export import export_onnx

    model, x = _model(name, 18)
    exported = export_onnx(import_onnx(model))
    exported.ir_version = IR_VERSION
    assert "Gather" in {n.op_type for n in exported.graph.node}
    assert_matches_reference(run_onnxruntime(exported, x), run_onnxruntime(model, x))


@pytest.mark.parametrize("packing", ["slots", "batch"])
def test_pruning_reads_a_grouped_conv_weight(packing: str) -> None:
    """Pruning and channel dropping see the block-diagonal weight: the zeros outside the
    groups stay zero, the pruned program still computes the pruned graph."""
    from hec.passes.drop_channels import DropDeadChannels
    from hec.passes.fuse_polynomials import FusePolynomials
    from hec.prune import PruneOptions, prune_graph

    model, _ = _model("depthwise_conv", 17)
    graph = import_onnx(model)
    FusePolynomials().run(graph)
    calib = _x((3, 6, 6), batch=32, seed=7)
    prune_graph(graph, calib, PruneOptions(sparsity=0.5, packing=packing), count=False)
    conv = next(op for op in graph.ops if op.kind == "conv")
    w = conv.consts["weight"]
    off_group = w[np.arange(3)[:, None] != np.arange(3)[None, :]]
    assert conv.attrs["group"] == 3 and not off_group.any()
    before = interpret(graph, calib)[0]
    DropDeadChannels().run(graph)
    graph.verify()
    np.testing.assert_allclose(interpret(graph, calib)[0], before, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["concat", "gather", "depth_space_dcr", "grouped_conv"])
def test_fine_tuning_graph_computes_select(name: str) -> None:
    """Fine-tuning runs the tensor graph in torch: a select computes what the interpreter does."""
    torch = pytest.importorskip("torch")
    from hec.train.torch_graph import TorchGraph

    model, x = _model(name, 18)
    graph = import_onnx(model)
    with torch.no_grad():
        got = TorchGraph(graph)(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, interpret(graph, x)[0], rtol=1e-4, atol=1e-5)


def test_select_matrix_matches_its_semantics() -> None:
    """affine_map builds a select's matrix directly (no probing): it computes the op."""
    from hec.ir.linear_maps import affine_map
    from hec.ir.tensor_ops import evaluate_op

    for name in ("gather", "concat", "expand_tile"):
        model, _ = _model(name, 18)
        for op in (op for op in import_onnx(model).ops if op.kind == "select"):
            a, b = affine_map(op)
            x = np.random.default_rng(0).normal(size=(1, *op.inputs[0].shape))
            want = evaluate_op(op, x).reshape(-1)
            np.testing.assert_array_equal(a @ x.reshape(-1) + b, want)
            assert a.nnz == int((op.consts["index"] >= 0).sum())
