"""The adaptations and the classification the conformance tier relies on."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import harness
from conformance.adapt import NotAdaptable, adapt, reproduces
from conformance.cases import CNN_MLP_OPS, accepted_op_types, case_op_type, selected_cases
from conformance.harness import Result, run_case

CASES = selected_cases()


def _input_dims(model) -> list[int]:
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def test_selection_covers_every_converter_and_the_cnn_list() -> None:
    ops = {case_op_type(c) for c in CASES.values()}
    assert "Conv" in ops and "Relu" in ops
    assert ops <= CNN_MLP_OPS | accepted_op_types()
    assert "Attention" not in ops  # a transformer op no converter takes
    # an expanded case counts under its base op, even when its body is one other node
    assert case_op_type(CASES["test_clip_default_inbounds_expanded"]) == "Clip"


def test_weights_become_constants_and_opset_moves_into_range() -> None:
    a = adapt(CASES["test_conv_with_strides_padding"])
    names = {t.name for t in a.model.graph.initializer}
    assert [i.name for i in a.model.graph.input] == ["x"] and "W" in names
    assert "opset 22 -> 21" in a.adaptations
    assert a.model.opset_import[0].version == 21
    assert _input_dims(a.model)[0] == 1


def test_leading_batch_split_into_samples() -> None:
    case = CASES["test_relu"]
    x = case.data_sets[0][0][0]
    a = adapt(case)
    assert f"batch of {len(x)} split into {len(x)} samples" in a.adaptations
    assert _input_dims(a.model) == [1, *x.shape[1:]]
    assert a.x.shape == x.shape and a.expected.shape == case.data_sets[0][1][0].shape


def test_batch_axis_added_with_the_axes_shifted() -> None:
    a = adapt(CASES["test_transpose_all_permutations_2"])
    assert "batch axis of size 1 added" in a.adaptations
    assert any(n.startswith("attribute perm -> [0,") for n in a.adaptations)
    assert a.x.shape[0] == 1 and a.expected.shape[0] == 1


def test_adaptation_must_reproduce_onnx() -> None:
    a = adapt(CASES["test_relu"])
    assert reproduces(a.model, a.x, a.expected, a.rtol, a.atol) is None
    assert "differs" in reproduces(a.model, a.x, a.expected + 1.0, a.rtol, a.atol)
    with pytest.raises(NotAdaptable, match="reference output shape"):
        adapt(CASES["test_flatten_axis0"])  # flattening axis 0 merges the batch


def test_classification(monkeypatch) -> None:
    case = CASES["test_relu"]
    a = adapt(case)
    exact = Result("c", "Add", "arithmetic", "")
    harness._compare(exact, a, a.expected.copy(), set())
    assert exact.status == "pass"
    off = a.expected.copy()
    off.flat[3] += 1e-3
    harness._compare(exact, a, off, set())
    assert exact.status == "wrong" and "1 of" in exact.message
    harness._compare(exact, a, a.expected[:, :1], set())
    assert exact.status == "wrong" and "shape" in exact.message
    harness._compare(exact, a, a.expected * 1.05, {"activation"})
    assert exact.status == "approximated" and exact.error == pytest.approx(0.05)
    harness._compare(exact, a, a.expected * 1.5, {"activation"})
    assert exact.status == "wrong"

    from hec.errors import ShapeError

    def refuse(adapted, out_dir):
        raise ShapeError("node 'y': too big")

    def crash(adapted, out_dir):
        raise KeyError("x")

    monkeypatch.setattr(harness, "compile_case", refuse)
    assert run_case(case).status == "refused"
    monkeypatch.setattr(harness, "compile_case", crash)
    result = run_case(case)
    assert result.status == "crash" and "KeyError" in result.message and result.detail


def test_max_pooling_checked_against_its_substitute() -> None:
    a = adapt(CASES["test_maxpool_2d_precomputed_strides"])
    substitute = harness._max_from_average(a)
    assert substitute.shape == a.expected.shape
    result = Result("c", "MaxPool", "pooling", "")
    harness._compare(result, a, substitute, {"maxpool"})
    assert result.status == "approximated"
    harness._compare(result, a, substitute + 0.5, {"maxpool"})
    assert result.status == "wrong"
    assert np.isfinite(substitute).all()


def test_non_finite_samples_left_out_and_narrow_floats_compared_at_their_resolution() -> None:
    a = adapt(CASES["test_cast_FLOAT_to_FLOAT16"])
    assert any("NaN or infinity left out" in n for n in a.adaptations)
    assert np.isfinite(a.x).all() and len(a.x) == len(a.expected)
    assert harness._rtol(np.dtype(np.float16)) == 2.0**-10
    assert harness._rtol(np.dtype(np.float32)) == harness.EXACT_RTOL
